"""Task configs are data: every shipped task loads, and bad configs fail with a clear message."""
from __future__ import annotations

import json
import re

import pytest

from emo_ray.evaluation.icl.prompts import candidate_prompts
from emo_ray.evaluation.icl.tasks import TaskError, fill, load_task, load_task_data, task_names
from tests.evaluation.conftest import needs_data, write_task

LOCAL_TASKS = ["sst2", "trec", "rotten_tomatoes", "tweet_emotion", "ag_news", "mmlu"]

# The official wording: DRSY/EMO continual_finetuning/icl.py, with <X> -> {text} and the label word
# (the paper's Table 5 wording: test_paper_wording.py).
ICL_PY = {
    "sst2": ('Review: "{text}" It is {label}.', ["negative", "positive"]),
    "cr": ("Review: {text} It is {label}.", ["negative", "positive"]),
    "tweet_emotion": ("{text} It is {label}.", ["anger", "joy", "optimism", "sadness"]),
    "subj": ("{text} It is {label}.", ["objective", "subjective"]),
    "rotten_tomatoes": ("Review: {text} It is {label}", ["negative", "positive"]),
    "ag_news": ('"{text}" It is about {label}.', ["world", "sports", "business", "science and technology"]),
    "trec": (
        '"{text}" It is about {label}.',
        ["abbreviation", "entity", "description and abstract concept", "human being", "location", "numeric value"],
    ),
}


def test_all_eight_paper_tasks_are_shipped():
    assert set(task_names()) == set(ICL_PY) | {"mmlu"}


@needs_data
@pytest.mark.parametrize("name", sorted(ICL_PY))
def test_templates_and_label_words_are_icl_py(name):
    task = load_task(name)
    assert (task.template, list(task.label_words)) == ICL_PY[name]
    assert task.demonstrations == 8 and task.selection == "topk"


@needs_data
@pytest.mark.parametrize("name", LOCAL_TASKS)
def test_local_task_data_loads(name):
    data = load_task_data(load_task(name))
    assert len(data.train) >= data.task.demonstrations and len(data.test) >= 200
    assert abs(sum(data.label_prior) - 1) < 1e-9


@needs_data
def test_mmlu_is_fixed_five_shot_of_the_same_subject():
    task = load_task("mmlu")
    assert (task.demonstrations, task.selection, task.group_field) == (5, "fixed", "subject")
    data = load_task_data(task)
    item = data.test[0]
    demos = [r for r in data.train if r["subject"] == item["subject"]][:5]
    prompts = candidate_prompts(task, item, demos)
    assert [p[-1] for p in prompts] == ["A", "B", "C", "D"]
    assert prompts[0].startswith("The following are multiple choice questions (with answers) about abstract_algebra.\n\n")
    assert prompts[0].count("Answer:") == 6


def test_prompt_layout_is_openicl(tmp_path):
    task = load_task(write_task(tmp_path))
    demos = [{"text": "good", "label": 1}, {"text": "bad", "label": 0}]
    prompts = candidate_prompts(task, {"text": "fine {label} {x}", "label": 1}, demos)
    head = 'Review: "good" It is positive.\nReview: "bad" It is negative.\n'
    # Braces in the data are data: filled in one pass, never re-interpreted.
    assert prompts == [head + 'Review: "fine {label} {x}" It is negative.', head + 'Review: "fine {label} {x}" It is positive.']


def test_fill_list_fields():
    assert fill("{q}: {c[1]} -> {label}", {"q": "Q", "c": ["a", "b"]}, "B") == "Q: b -> B"


def test_unknown_task_lists_valid_names():
    with pytest.raises(TaskError, match=r"'nope' is not an ICL task; valid: \['ag_news', 'cr'"):
        load_task("nope")


def test_template_without_input_placeholder(tmp_path):
    with pytest.raises(TaskError, match="has no input placeholder"):
        load_task(write_task(tmp_path, template="It is {label}."))


def test_template_without_label_placeholder(tmp_path):
    with pytest.raises(TaskError, match="no \\{label\\} placeholder"):
        load_task(write_task(tmp_path, template="Review: {text}"))


def test_label_words_missing(tmp_path):
    with pytest.raises(TaskError, match="no label words"):
        load_task(write_task(tmp_path, label_words=None))
    with pytest.raises(TaskError, match="labels file .* does not exist"):
        load_task(write_task(tmp_path, label_words=None, labels_file=str(tmp_path / "none.json")))
    with pytest.raises(TaskError, match="distinct"):
        load_task(write_task(tmp_path, label_words=["yes", "yes"]))


def test_labels_beyond_the_label_words(tmp_path):
    (tmp_path / "labels.json").write_text(json.dumps(["negative"]))
    with pytest.raises(TaskError, match="at least 2 label words"):
        load_task(write_task(tmp_path, label_words=None, labels_file=str(tmp_path / "labels.json")))
    rows = tmp_path / "bad.jsonl"
    rows.write_text(json.dumps({"text": "x", "label": 2}) + "\n")
    with pytest.raises(TaskError, match="has label 2 but there are 2 label words"):
        load_task_data(load_task(write_task(tmp_path, test=str(rows))))


def test_fewer_training_rows_than_demonstrations(tmp_path):
    with pytest.raises(TaskError, match="30 demonstrations asked for but the training split has only 20 rows"):
        load_task_data(load_task(write_task(tmp_path, demonstrations=30)))


def test_unknown_key_in_task_yaml(tmp_path):
    with pytest.raises(TaskError, match="unknown key\\(s\\) \\['shots'\\]"):
        load_task(write_task(tmp_path, shots=3))


@pytest.mark.parametrize(
    "overrides, message",
    [  # the task YAML is checked as every typed config: the field, the problem and the bound named
        ({"demonstrations": -1}, r"demonstrations must be >= 0, got -1"),
        ({"demonstrations": "many"}, r"demonstrations: expected an integer, got 'many'"),
        ({"selection": "random"}, r"selection: 'random' is not one of \['topk', 'fixed'\]"),
        ({"label_words": "positive"}, r"label_words: expected a list, got 'positive'"),
        ({"test": 5}, r"test: expected a string, got 5"),
    ],
)
def test_a_bad_task_field_names_the_file_and_the_field(tmp_path, overrides, message):
    path = write_task(tmp_path, **overrides)
    with pytest.raises(TaskError, match=f"^{re.escape(path)}: {message}$"):
        load_task(path)


def test_a_task_without_its_required_keys(tmp_path):
    import yaml

    path = tmp_path / "bare.yaml"
    path.write_text(yaml.safe_dump({"name": "bare", "template": "{text} {label}"}))
    with pytest.raises(TaskError, match=r"bare.yaml: missing key\(s\) \['train', 'test'\]"):
        load_task(str(path))
