"""Read documents from local JSON Lines / text files, folders of them, or Hugging Face datasets.

Every malformed input fails here, before any process starts, naming the file and line.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from emo_ray.typed_config import expand_path


class DataError(ValueError):
    pass


TEXT_SUFFIXES = (".txt", ".raw", ".tokens")


def iter_jsonl(path: Path):
    """``(line number, object)`` for every non-blank line; a line that is not a JSON object
    fails naming the file and line (shared by training data and evaluation rows)."""
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{lineno}: malformed JSON line ({e.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
        yield lineno, row


def read_jsonl(path: Path, text_field: str) -> list[str]:
    docs = []
    for lineno, row in iter_jsonl(path):
        if text_field not in row:
            raise DataError(f"{path}:{lineno}: no text field {text_field!r} (found {sorted(row)})")
        text = row[text_field]
        if not isinstance(text, str):
            raise DataError(f"{path}:{lineno}: field {text_field!r} is {type(text).__name__}, not a string")
        if text.strip():
            docs.append(text)
    return docs


def read_text(path: Path) -> list[str]:
    """One document per non-blank line (the layout of wiki.*.raw / *.txt dumps)."""
    return [line.rstrip("\r\n") for _, line in iter_lines(path) if line.strip()]


MAX_LINE_BYTES = 16 << 20
"""Longest line (one JSON Lines row or text document) read, in bytes: a longer one is an error
naming ``file:line``, found while reading at most this much of it. Tokenisation is bounded per
piece (``emo_ray.data.bounded``), but the document itself, its JSON decoding and its digest are
held whole; a single 60 MB line used to cost 12.7 GB (issue 25.6). Split longer documents."""


def iter_lines(path: Path, max_bytes: int = MAX_LINE_BYTES):
    """``(line number, text)`` of a UTF-8 file; bytes that are not UTF-8, or a line longer than
    ``max_bytes``, fail naming file:line."""
    with path.open("rb") as fh:
        for lineno, raw in enumerate(iter(lambda: fh.readline(max_bytes + 1), b""), 1):
            if len(raw) > max_bytes and not raw.endswith(b"\n"):  # cut off by readline: longer still
                raise DataError(f"{path}:{lineno}: line longer than {max_bytes / 2**20:g} MB (MAX_LINE_BYTES in "
                                f"emo_ray/data/sources.py); split the document into several lines")
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column "
                                f"{e.start + 1}); re-encode the file as UTF-8") from None


HF_PREFIX = "hf:"


@dataclass(frozen=True)
class HFSource:
    """A Hugging Face dataset split, written ``hf:NAME[:CONFIG]:SPLIT`` in every config (training
    data, generation corpora, ICL tasks), e.g. ``hf:wikitext:wikitext-103-raw-v1:train``."""

    name: str
    config: str | None
    split: str

    def __str__(self) -> str:
        return HF_PREFIX + ":".join(p for p in (self.name, self.config, self.split) if p is not None)

    @property
    def url(self) -> str:
        """The dataset's page on the hub (an MLflow dataset source)."""
        return f"https://huggingface.co/datasets/{self.name}"

    def load(self):
        """The split as a ``datasets.Dataset`` (from the hub or the local ``datasets`` cache)."""
        import datasets

        return datasets.load_dataset(self.name, self.config, split=self.split)


def parse_hf(spec: str) -> HFSource | None:
    """The one parser of ``hf:NAME[:CONFIG]:SPLIT``: an :class:`HFSource`, or ``None`` when ``spec``
    names no hub dataset (a local path). A malformed ``hf:`` spec raises :class:`DataError`."""
    if not spec.startswith(HF_PREFIX):
        return None
    parts = spec[len(HF_PREFIX) :].split(":")
    if len(parts) not in (2, 3) or not all(p.strip() for p in parts):
        raise DataError(f"{spec!r}: expected hf:NAME[:CONFIG]:SPLIT")
    return HFSource(parts[0], None, parts[1]) if len(parts) == 2 else HFSource(*parts)


def read_hf(source: HFSource, text_field: str) -> list[str]:
    """The non-blank string values of ``text_field`` in a hub dataset split."""
    spec = str(source)
    ds = source.load()
    if text_field not in ds.column_names:
        raise DataError(f"{spec}: no text field {text_field!r} (columns {ds.column_names})")
    return [t for t in ds[text_field] if isinstance(t, str) and t.strip()]


def check_sources(spec: str) -> None:
    """Fail fast on local sources that do not exist, without reading them: a sweep checks this
    in its driver before it schedules a single trial."""
    if not spec.strip():
        raise DataError("no data source given")
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        if parse_hf(part) is None and not Path(expand_path(part)).exists():
            raise DataError(f"data file {expand_path(part)} does not exist (from {part!r}; set EMO_RAY_DATA?)")


def _sources(spec: str, suffixes: tuple[str, ...], what: str, any_named_file: bool = False):
    """Walk ``spec`` (comma-separated ``hf:`` splits, files, folders), in a stable order:
    yields an ``HFSource`` or a file ``Path``: a folder's ``.jsonl`` files, else its files with
    ``suffixes``; a named file if its suffix is in ``suffixes`` (any file with
    ``any_named_file``). ``what`` names the accepted files in errors."""
    if not spec.strip():
        raise DataError("no data source given")
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        source = parse_hf(part)
        if source is not None:
            yield source
            continue
        path = Path(expand_path(part))
        if path.is_dir():
            files = sorted(path.glob("*.jsonl")) or sorted(p for p in path.iterdir() if p.suffix in suffixes)
            if not files:
                raise DataError(f"{path}: folder holds no {what}")
            yield from files
        elif not path.exists():
            raise DataError(f"data file {path} does not exist")
        elif path.suffix not in suffixes and not any_named_file:
            raise DataError(f"{path}: expected {what}, not {path.suffix or 'plain'} text")
        else:
            yield path


def read_documents(spec: str, text_field: str = "text") -> list[str]:
    """All documents named by ``spec`` (comma-separated sources), in a stable order."""
    docs: list[str] = []
    for src in _sources(spec, (".jsonl", *TEXT_SUFFIXES), ".jsonl or text files", any_named_file=True):
        if isinstance(src, HFSource):
            docs.extend(read_hf(src, text_field))
        else:
            docs.extend(read_jsonl(src, text_field) if src.suffix == ".jsonl" else read_text(src))
    if not docs:
        raise DataError(f"{spec}: the corpus is empty (no non-blank documents)")
    return docs


# --- prompt/response (instruction) data ------------------------------------------------------

# Stanford Alpaca's prompt templates, verbatim: PROMPT_DICT in train.py of
# https://github.com/tatsu-lab/stanford_alpaca (with an input when the row's input is non-empty,
# without one otherwise). The response follows "### Response:" directly, as there.
ALPACA_PROMPT_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
)
ALPACA_PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:"
)
PROMPT_TEMPLATES = {"alpaca": (ALPACA_PROMPT_INPUT, ALPACA_PROMPT_NO_INPUT)}
"""``name -> (template with input, template without)``, filled with ``instruction`` / ``input``."""


@dataclass(frozen=True)
class Example:
    """One prompt/response pair: ``prompt`` (the filled template) is context only, ``response``
    (then EOS) is what the model is trained on."""

    prompt: str
    response: str


@dataclass(frozen=True)
class InstructionFields:
    """Where a row keeps its parts and how they become a prompt (from ``DataConfig``)."""

    instruction: str = "instruction"
    input: str = "input"
    output: str = "output"
    template: str = "alpaca"

    @classmethod
    def of(cls, cfg) -> "InstructionFields":
        return cls(cfg.instruction_field, cfg.input_field, cfg.output_field, cfg.prompt_template)


def make_example(row: dict, fields: InstructionFields, where: str) -> Example:
    """A row as an :class:`Example`; a missing or non-string field fails naming ``where``
    (``file:line`` or ``hf:...:row``)."""
    for key, required in ((fields.instruction, True), (fields.output, True), (fields.input, False)):
        if not key:
            continue
        if key not in row or (row[key] is None and not required):
            if required:
                raise DataError(f"{where}: no {'instruction' if key == fields.instruction else 'output'} "
                                f"field {key!r} (found {sorted(row)})")
            continue
        if not isinstance(row[key], str):
            raise DataError(f"{where}: field {key!r} is {type(row[key]).__name__}, not a string")
    instruction, output = row[fields.instruction], row[fields.output]  # an empty output trains EOS alone
    if not instruction.strip():
        raise DataError(f"{where}: field {fields.instruction!r} is empty")
    context = row.get(fields.input) if fields.input else None
    with_input, no_input = PROMPT_TEMPLATES[fields.template]
    if context and context.strip():
        prompt = with_input.format(instruction=instruction, input=context)
    else:
        prompt = no_input.format(instruction=instruction)
    return Example(prompt, output)


def read_instruction_jsonl(path: Path, fields: InstructionFields) -> list[Example]:
    return [make_example(row, fields, f"{path}:{lineno}") for lineno, row in iter_jsonl(path)]


def read_hf_instructions(source: HFSource, fields: InstructionFields) -> list[Example]:
    spec = str(source)
    ds = source.load()
    for key in (fields.instruction, fields.output):
        if key not in ds.column_names:
            raise DataError(f"{spec}: no field {key!r} (columns {ds.column_names})")
    return [make_example(row, fields, f"{spec}:row {i}") for i, row in enumerate(ds)]


def read_examples(spec: str, fields: InstructionFields = InstructionFields()) -> list[Example]:
    """All prompt/response examples named by ``spec`` (comma-separated JSON Lines files, folders
    of them, or ``hf:`` splits), in a stable order."""
    what = (f".jsonl files (data.format=instruction reads JSON Lines rows with {fields.instruction!r} "
            f"and {fields.output!r} fields)")
    examples: list[Example] = []
    for src in _sources(spec, (".jsonl",), what):
        examples.extend(read_hf_instructions(src, fields) if isinstance(src, HFSource)
                        else read_instruction_jsonl(src, fields))
    if not examples:
        raise DataError(f"{spec}: the instruction data is empty (no rows)")
    return examples
