"""icl.wording: the official icl.py template or the paper's Table 5 one (``paper_template``)."""
from __future__ import annotations

import pytest

from emo_ray.evaluation import load_eval_config
from emo_ray.evaluation.config import EvalConfigError
from emo_ray.evaluation.icl.prompts import candidate_prompts
from emo_ray.evaluation.icl.tasks import TaskError, load_task, load_task_data, task_names
from tests.evaluation.conftest import write_task

PAPER = "Review: {text} Sentiment: {label}"


def test_default_wording_is_the_official_template(tmp_path):
    task = load_task(write_task(tmp_path, paper_template=PAPER))
    assert task.template == 'Review: "{text}" It is {label}.'
    assert load_task(write_task(tmp_path, paper_template=PAPER), wording="official") == task


def test_paper_wording_fills_prompts_with_the_paper_template(tmp_path):
    task = load_task(write_task(tmp_path, paper_template=PAPER), wording="paper")
    data = load_task_data(task)
    prompts = candidate_prompts(task, data.test[0], data.train[:2])
    # Demonstrations and candidates alike use the Table 5 wording; no trace of the official one.
    assert prompts == [
        "Review: awful movie number 0 Sentiment: negative\nReview: great movie number 1 Sentiment: positive\n"
        f"Review: a great film Sentiment: {w}" for w in ("negative", "positive")
    ]


def test_paper_wording_without_paper_template_fails_naming_the_task(tmp_path):
    with pytest.raises(TaskError, match="'toy'.*no paper_template"):
        load_task(write_task(tmp_path), wording="paper")


def test_unknown_wording_fails(tmp_path):
    with pytest.raises(TaskError, match="wording 'printed'"):
        load_task(write_task(tmp_path), wording="printed")


def test_a_bad_paper_template_fails_even_under_the_official_wording(tmp_path):
    with pytest.raises(TaskError, match="no \\{label\\} placeholder"):
        load_task(write_task(tmp_path, paper_template="Review: {text}"))


def test_eval_config_checks_the_wording_of_every_task(tmp_path):
    path = write_task(tmp_path)
    assert load_eval_config(tree={"icl": {"tasks": [path]}}).icl.wording == "official"
    with pytest.raises(EvalConfigError, match="no paper_template"):
        load_eval_config(tree={"icl": {"tasks": [path], "wording": "paper"}})
    with pytest.raises(EvalConfigError, match="wording"):
        load_eval_config(tree={"icl": {"tasks": [path], "wording": "table5"}})


def test_paper_label_words_replace_the_official_ones_only_under_the_paper_wording(tmp_path):
    path = write_task(tmp_path, paper_template=PAPER, paper_label_words=["bad", "good"])
    assert load_task(path).label_words == ("negative", "positive")
    task = load_task(path, wording="paper")
    assert task.label_words == ("bad", "good")
    assert candidate_prompts(task, {"text": "ok"}, [])[1] == "Review: ok Sentiment: good"


def test_paper_label_words_must_match_the_label_count(tmp_path):
    with pytest.raises(TaskError, match="same 2 labels"):
        load_task(write_task(tmp_path, paper_template=PAPER, paper_label_words=["bad", "ok", "good"]))
    with pytest.raises(TaskError, match="distinct"):
        load_task(write_task(tmp_path, paper_template=PAPER, paper_label_words=["bad", "bad"]))


def test_paper_overrides_without_a_paper_template_fail(tmp_path):
    for key, value in (("paper_label_words", ["bad", "good"]), ("paper_instruction", "Rate it.\n")):
        with pytest.raises(TaskError, match="need a paper_template"):
            load_task(write_task(tmp_path, **{key: value}))


def test_paper_instruction_and_the_spaced_format(tmp_path):
    path = write_task(tmp_path, instruction="About {topic}:\n", paper_template=PAPER,
                      paper_instruction="About  {topic:spaced}:\n")
    item = {"text": "ok", "topic": "high_school_physics"}
    official, paper = load_task(path), load_task(path, wording="paper")
    assert candidate_prompts(official, item, [])[0] == 'About high_school_physics:\nReview: "ok" It is negative.'
    assert candidate_prompts(paper, item, [])[0] == "About  high school physics:\nReview: ok Sentiment: negative"


def test_unknown_placeholder_format_fails_at_load(tmp_path):
    with pytest.raises(TaskError, match="unknown placeholder format.*'upper'"):
        load_task(write_task(tmp_path, paper_template="Review: {text:upper} It is {label}."))


@pytest.mark.parametrize("name", task_names())
def test_every_shipped_task_has_a_valid_paper_wording(name):
    # The official template always loads; the transcribed Table 5 wording is a valid template of
    # the same task (same input fields, a {label}, as many label words).
    official, paper = load_task(name), load_task(name, wording="paper")
    assert official.paper_template and paper.template == official.paper_template
    assert len(paper.label_words) == len(official.label_words)
