"""``icl.wording: paper`` on the shipped tasks: the paper's Table 5 (A.4) wording loads for every task
and fills full prompts; the official icl.py wording stays the default."""
from __future__ import annotations

import pytest

from emo_ray.evaluation.icl.prompts import candidate_prompts
from emo_ray.evaluation.icl.tasks import fill, load_task, load_task_data, task_names
from tests.evaluation.conftest import needs_data, needs_minilm

# Tasks whose data is only on the hub (SetFit/CR, SetFit/subj): prompts are built from these rows.
HUB_ROWS = {
    "cr": [{"text": f"the battery lasts {i} hours", "label": i % 2} for i in range(10)],
    "subj": [{"text": f"the film was shot in {1990 + i}", "label": i % 2} for i in range(10)],
}

# Table 5 cells exactly as the paper prints them (the extraction's `$\langle X \rangle$` read as
# <X>), with the label index each prompt fills in.
TABLE5_CELLS = {
    "trec": (5, 'Question: "<X>" It is about numerical value.'),
    "tweet_emotion": (1, 'Tweet: "<X>" It is joy.'),
    "rotten_tomatoes": (0, 'Review: "<X>" It is negative.'),
}


def rows_of(name: str, task) -> tuple[list[dict], dict]:
    """(demonstrations, test item): the real local data where it exists, else a few rows."""
    if name in HUB_ROWS:
        rows = HUB_ROWS[name]
        return rows[: task.demonstrations], rows[-1]
    data = load_task_data(task)
    item = data.test[0]
    pool = [r for r in data.train if not task.group_field or r[task.group_field] == item[task.group_field]]
    return pool[: task.demonstrations], item


@needs_data
@pytest.mark.parametrize("name", task_names())
def test_paper_wording_builds_a_full_prompt_for_every_label(name):
    task = load_task(name, wording="paper")
    demos, item = rows_of(name, task)
    assert len(demos) == task.demonstrations > 0
    prompts = candidate_prompts(task, item, demos)
    assert len(prompts) == len(task.label_words)
    for word, prompt in zip(task.label_words, prompts):
        assert prompt.endswith(fill(task.template, item, word))
        for d in demos:  # every demonstration, with its own gold label word in the paper's wording
            assert fill(task.template, d, task.label_words[d[task.label_field]]) in prompt
    # the candidates differ only in the label word
    head = prompts[0][: -len(fill(task.template, item, task.label_words[0]))]
    assert all(p.startswith(head) for p in prompts)


@needs_data
@pytest.mark.parametrize("name", sorted(TABLE5_CELLS))
def test_transcription_equals_the_papers_table5_cell(name):
    label, cell = TABLE5_CELLS[name]
    task = load_task(name, wording="paper")
    assert fill(task.template, {"text": "<X>"}, task.label_words[label]) == cell


@needs_data
def test_trec_paper_label_is_numerical_value_and_official_numeric_value():
    paper, official = load_task("trec", wording="paper"), load_task("trec")
    assert (paper.label_words[5], official.label_words[5]) == ("numerical value", "numeric value")
    assert paper.label_words[:5] == official.label_words[:5]
    item = {"text": "How far is it from Denver to Aspen ?", "label": 5}
    assert candidate_prompts(paper, item, [])[5] == 'Question: "How far is it from Denver to Aspen ?" It is about numerical value.'


@needs_data
def test_mmlu_paper_wording_is_opencompass_with_the_subject_spelled_out():
    task = load_task("mmlu", wording="paper")
    demos, item = rows_of("mmlu", task)
    prompt = candidate_prompts(task, item, demos)[0]
    subject = item["subject"].replace("_", " ")
    assert "_" in item["subject"] and prompt.startswith(
        f"The following are multiple choice questions (with answers) about  {subject}.\n\n")
    assert prompt.count("\nAnswer: ") == 6 and prompt.endswith("\nAnswer: A")
    # the official instruction keeps the subject's identifier
    assert load_task("mmlu").instruction == "The following are multiple choice questions (with answers) about {subject}.\n\n"


SAME_AS_ICL_PY = {"sst2", "ag_news"}
"""Tasks whose Table 5 wording is icl.py's own (every other one differs in quotes, prefix or label)."""


@needs_data
@pytest.mark.parametrize("name", task_names())
def test_official_wording_stays_the_default(name):
    official, paper = load_task(name), load_task(name, wording="paper")
    assert load_task(name, wording="official") == official
    worded = lambda t: (t.template, t.label_words, t.instruction)  # noqa: E731
    assert (worded(official) != worded(paper)) == (name not in SAME_AS_ICL_PY)


PAPER_PROMPT = {  # how a full prompt of the paper's wording starts and ends (with the gold word)
    "trec": ('Question: "', '" It is about {}.'),
    "mmlu": ("The following are multiple choice questions (with answers) about  ", "\nAnswer: {}"),
}


@needs_data
@needs_minilm
@pytest.mark.parametrize("name", sorted(PAPER_PROMPT))
def test_paper_wording_evaluates_end_to_end(name, tiny_path):
    # A retrieved task with a paper label word and the fixed-shot task with a paper instruction:
    # the evaluation scores the paper's label words and stamps the wording in its parameters.
    from emo_ray.evaluation.config import EvalConfig, ICLConfig
    from emo_ray.evaluation.icl.evaluate_task import evaluate_task
    from tests.evaluation.conftest import LOCAL

    cfg = EvalConfig(icl=ICLConfig(num_items=6, retriever="all-minilm-l6-v2", wording="paper"), execution=LOCAL)
    res = evaluate_task(tiny_path, name, cfg)
    assert res.metrics[f"icl/{name}/n_items"] == 6
    words = set(load_task(name, wording="paper").label_words)
    table = res.tables[f"icl/{name}.json"]
    assert set(table["prediction"]) <= words and set(table["gold"]) <= words
    assert "wording=paper" in res.params[f"icl/{name}"]
    start, end = PAPER_PROMPT[name]
    for gold, prompt in zip(table["gold"], table["prompt_for_gold"]):
        assert prompt.startswith(start) and prompt.endswith(end.format(gold))
