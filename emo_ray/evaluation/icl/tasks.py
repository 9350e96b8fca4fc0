"""ICL task definitions are data: one YAML file per task in ``emo_ray/evaluation/tasks/``.

A task is a template (DRSY/EMO icl.py's wording), label words, a train split (the demonstration
pool) and a test split. Add a task by writing a YAML file, and pass its path (or drop it in the
folder and pass its name):

    name: my_task
    template: 'Review: "{text}" It is {label}.'   # {label} and at least one input field
    label_words: [negative, positive]             # or labels_file: path/to/labels.json
    train: ${EMO_RAY_DATA}/my_task/train.jsonl    # or hf:NAME[:CONFIG]:SPLIT
    test: ${EMO_RAY_DATA}/my_task/test.jsonl

A task may also give ``paper_template``: the same prompt as printed in the paper's Table 5 (and,
where Table 5's label words differ from the official ones, ``paper_label_words``; where the paper's
instruction differs, ``paper_instruction``). ``icl.wording: paper`` selects them (``load_task(name,
wording="paper")``); the default ``official`` keeps ``template``, the DRSY/EMO icl.py wording that
produced the paper's numbers.

Placeholders are ``{field}``, ``{field[i]}`` (an element of a list field, e.g. MMLU choices) or
``{field:spaced}`` (underscores as spaces: Hendrycks et al.'s subject names, ``abstract_algebra`` ->
``abstract algebra``); they are filled in one pass, so braces inside the data are never re-interpreted.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Literal

import yaml

from emo_ray import typed_config
from emo_ray.bounds import Bounds
from emo_ray.data.sources import DataError, parse_hf
from emo_ray.typed_config import ConfigError, expand_path

TASK_DIR = Path(__file__).resolve().parent.parent / "tasks"
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?:\[(\d+)\])?(?::([A-Za-z_]+))?\}")
FORMATS = {"spaced": lambda v: v.replace("_", " ")}
"""``{field:<format>}``: how a field's value is written into the prompt."""


class TaskError(ValueError):
    pass


@dataclass(frozen=True)
class Task:
    name: str
    template: str
    """Filled once per demonstration (with its gold label word) and once per candidate label for
    the test item. Must hold ``{label}`` and at least one of ``input_fields``."""
    train: str
    """Demonstration pool: JSON Lines path or ``hf:NAME[:CONFIG]:SPLIT``."""
    test: str
    label_words: tuple = ()
    """Word(s) for label index 0, 1, ...; or leave empty and give ``labels_file``."""
    labels_file: str = ""
    """JSON list of label words (the ``labels.json`` beside the shared data)."""
    input_fields: tuple = ("text",)
    """Row fields the template reads from the test item; also what the retriever embeds."""
    label_field: str = "label"
    demonstrations: Annotated[int, Bounds(ge=0)] = 8
    """Paper A.4: 8 retrieved demonstrations (MMLU: a fixed 5-shot)."""
    selection: Literal["topk", "fixed"] = "topk"
    """``topk``: the most similar training rows by sentence-embedding cosine similarity;
    ``fixed``: the first ``demonstrations`` training rows (of the item's ``group_field`` value)."""
    group_field: str = ""
    """For ``fixed``: draw demonstrations from training rows sharing this field (MMLU subject)."""
    instruction: str = ""
    """Text put once before the demonstrations; may use the test item's fields."""
    separator: str = "\n"
    """Between demonstrations (OpenICL's ice_separator)."""
    demo_end: str = "\n"
    """After the last demonstration (OpenICL's ice_eos_token)."""
    paper_name: str = ""
    reference: str = ""
    """Where the template comes from."""
    paper_template: str = ""
    """The template as printed in the paper's Table 5 (``icl.wording: paper``); same placeholders
    as ``template``. Empty: none transcribed, and ``wording="paper"`` fails for this task."""
    paper_label_words: tuple = ()
    """Label words as Table 5 prints them (``icl.wording: paper``), one per label index like
    ``label_words``; empty: the same words as ``label_words``."""
    paper_instruction: str = ""
    """The instruction under ``icl.wording: paper``; empty: the same as ``instruction``."""


def task_names() -> list[str]:
    return sorted(p.stem for p in TASK_DIR.glob("*.yaml"))


WORDINGS = ("official", "paper")


def load_task(name_or_path: str, wording: str = "official") -> Task:
    """A task by name (a YAML file in ``TASK_DIR``) or by path to a YAML file. ``wording="paper"``
    returns it with ``template`` replaced by its ``paper_template`` (paper Table 5)."""
    if wording not in WORDINGS:
        raise TaskError(f"ICL wording {wording!r} is not one of {list(WORDINGS)}")
    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") and path.exists()):
        path = TASK_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            raise TaskError(f"{name_or_path!r} is not an ICL task; valid: {task_names()} (or a path to a task YAML)")
    data = yaml.safe_load(path.read_text()) or {}
    try:
        task = typed_config.build(Task, data, "")  # keys, types and ranges, as every typed config
    except ConfigError as e:
        raise TaskError(f"{path}: {e}") from None
    if not task.label_words:
        task = replace(task, label_words=tuple(read_label_words(task)))
    validate_task(task)
    paper = paper_wording(task)
    if paper is not None:
        validate_task(paper)
    if wording == "paper":
        if paper is None:
            raise TaskError(
                f"task {task.name!r} ({path}) has no paper_template (Table 5 wording); "
                f"use icl.wording=official or add one to the task YAML"
            )
        return paper
    return task


def paper_wording(task: Task) -> Task | None:
    """The task worded as the paper prints it (Table 5, A.4): ``paper_template`` and, where given,
    ``paper_label_words`` / ``paper_instruction`` in place of the official ones. None without a
    ``paper_template``; label or instruction overrides without one are a config error."""
    if not task.paper_template:
        if task.paper_label_words or task.paper_instruction:
            raise TaskError(f"task {task.name!r}: paper_label_words / paper_instruction need a paper_template")
        return None
    words = task.paper_label_words or task.label_words
    if len(words) != len(task.label_words):
        raise TaskError(
            f"task {task.name!r}: paper_label_words {list(words)} must name the same {len(task.label_words)} "
            f"labels as label_words {list(task.label_words)}, in the same order"
        )
    return replace(task, template=task.paper_template, label_words=tuple(words),
                   instruction=task.paper_instruction or task.instruction)


def read_label_words(task: Task) -> list[str]:
    if not task.labels_file:
        raise TaskError(f"task {task.name!r}: no label words (give label_words or labels_file)")
    path = Path(expand_path(task.labels_file))
    if not path.exists():
        raise TaskError(f"task {task.name!r}: labels file {path} does not exist")
    words = json.loads(path.read_text())
    if not isinstance(words, list):
        raise TaskError(f"task {task.name!r}: {path} must hold a JSON list of label words")
    return words


def validate_task(task: Task) -> None:
    """What the field types cannot say (placeholders, label words, data specs), checked before any
    data or model is loaded; keys, types and ranges were checked when the YAML was built."""
    used = {m.group(1) for m in PLACEHOLDER.finditer(task.template)}
    for text in (task.template, task.instruction):
        bad = sorted({m.group(3) for m in PLACEHOLDER.finditer(text) if m.group(3)} - set(FORMATS))
        if bad:
            raise TaskError(f"task {task.name!r}: unknown placeholder format(s) {bad} in {text!r}; valid: {sorted(FORMATS)}")
    if "label" not in used:
        raise TaskError(f"task {task.name!r}: template {task.template!r} has no {{label}} placeholder")
    if not used & set(task.input_fields):
        raise TaskError(
            f"task {task.name!r}: template {task.template!r} has no input placeholder "
            f"(one of {['{' + f + '}' for f in task.input_fields]})"
        )
    words = task.label_words
    if len(words) < 2:
        raise TaskError(f"task {task.name!r}: needs at least 2 label words, got {list(words)}")
    if any(not isinstance(w, str) or not w.strip() for w in words):
        raise TaskError(f"task {task.name!r}: label words must be non-empty strings, got {list(words)}")
    if len(set(words)) != len(words):
        raise TaskError(f"task {task.name!r}: label words must be distinct, got {list(words)}")
    for key in ("train", "test"):
        try:
            parse_hf(getattr(task, key))  # a malformed hf: spec fails here, not when data is read
        except DataError as e:
            raise TaskError(f"task {task.name!r}: {key}: {e}") from None


def fill(template: str, row: dict, label_word: str, *, where: str = "") -> str:
    """Substitute ``{label}`` and ``{field}`` / ``{field[i]}`` in one pass."""

    def sub(m: re.Match) -> str:
        key, idx, fmt = m.groups()
        if key == "label":
            return label_word
        if key not in row:
            raise TaskError(f"{where}template placeholder {{{key}}} but the row has fields {sorted(row)}")
        value = row[key]
        if idx is not None:
            value = value[int(idx)]
        if fmt and fmt not in FORMATS:
            raise TaskError(f"{where}placeholder {m.group(0)}: unknown format {fmt!r}; valid: {sorted(FORMATS)}")
        return FORMATS[fmt](str(value)) if fmt else str(value)

    return PLACEHOLDER.sub(sub, template)


def fill_instruction(template: str, row: dict, *, where: str = "") -> str:
    return fill(template, row, "", where=where) if template else ""


@dataclass(frozen=True)
class TaskData:
    """Loaded and checked rows of a task."""

    task: Task
    train: list[dict]
    test: list[dict]
    label_prior: tuple = field(default=())
    """Label frequencies in the training split (the tie-break and the label-prior baseline)."""


def load_task_data(task: Task) -> TaskData:
    from emo_ray.evaluation.rows import read_rows

    train, test = read_rows(task.train), read_rows(task.test)
    n_labels = len(task.label_words)
    for split, rows in (("train", train), ("test", test)):
        if not rows:
            raise TaskError(f"task {task.name!r}: the {split} split is empty")
        for i, r in enumerate(rows):
            missing = [f for f in (*task.input_fields, task.label_field) if f not in r]
            if missing:
                raise TaskError(f"task {task.name!r}: {split} row {i} lacks field(s) {missing} (has {sorted(r)})")
            lab = r[task.label_field]
            if isinstance(lab, bool) or not isinstance(lab, int) or not 0 <= lab < n_labels:
                raise TaskError(
                    f"task {task.name!r}: {split} row {i} has label {lab!r} but there are {n_labels} label words "
                    f"{list(task.label_words)}"
                )
    if task.demonstrations > len(train):
        raise TaskError(
            f"task {task.name!r}: {task.demonstrations} demonstrations asked for but the training split has only {len(train)} rows"
        )
    counts = [0] * n_labels
    for r in train:
        counts[r[task.label_field]] += 1
    prior = tuple(c / len(train) for c in counts)
    return TaskData(task, train, test, prior)
