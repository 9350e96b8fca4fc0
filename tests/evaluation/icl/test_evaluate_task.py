"""ICL end to end on real SST-2 items with tiny models (fast) and SmolLM2 (realmodel)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from emo_ray.evaluation.config import EvalConfig, ICLConfig
from emo_ray.evaluation.icl.evaluate_task import evaluate_task
from tests.evaluation.conftest import LOCAL, needs_data, needs_minilm, needs_smollm2, write_task


def sst2_fixed_task(tmp_path, demonstrations=4) -> str:
    """SST-2 with fixed demonstrations (no retriever needed): the label prior is the full
    training split's."""
    return write_task(
        tmp_path, name="sst2_fixed", template='Review: "{text}" It is {label}.', label_words=None,
        labels_file="${EMO_RAY_DATA}/sst2/labels.json", train="${EMO_RAY_DATA}/sst2/train.jsonl",
        test="${EMO_RAY_DATA}/sst2/test.jsonl", demonstrations=demonstrations,
    )


def icl_cfg(**kw) -> EvalConfig:
    return EvalConfig(icl=ICLConfig(**{"num_items": 40, "retriever": "all-minilm-l6-v2", **kw}), execution=LOCAL)


@needs_data
def test_uniform_logits_score_the_label_prior_baseline(tmp_path, uniform_path):
    import numpy as np

    from emo_ray.evaluation.icl.predict import predict
    from emo_ray.evaluation.icl.scorer import CandidateNLL

    task = sst2_fixed_task(tmp_path, demonstrations=2)
    res = evaluate_task(uniform_path, task, icl_cfg(num_items=45))
    m, table = res.metrics, res.tables["icl/sst2_fixed.json"]
    assert m["icl/sst2_fixed/accuracy"] == m["icl/sst2_fixed/prior_baseline"]
    assert m["icl/sst2_fixed/n_items"] == 45  # odd: a coin could not score exactly the baseline by luck
    # Same with OpenICL's normalization: 'negative' and 'positive' are both 8 bytes, so under the
    # byte tokenizer every candidate ties exactly there too.
    prior = (0.0, 1.0) if m["icl/sst2_fixed/prior_baseline"] == np.mean(table["gold"] == "positive") else (1.0, 0.0)
    preds = {predict(CandidateNLL(np.array(s), np.array(n)), prior, "openicl") for s, n in zip(table["nll_sum"], table["n_tokens"])}
    assert preds == {prior.index(1.0)}


@needs_data
def test_prefix_sharing_predicts_like_plain_on_six_labels(tmp_path, tiny_path):
    task = write_task(
        tmp_path, name="trec_fixed", template='"{text}" It is about {label}.', label_words=None,
        labels_file="${EMO_RAY_DATA}/trec/labels.json", train="${EMO_RAY_DATA}/trec/train.jsonl",
        test="${EMO_RAY_DATA}/trec/test.jsonl", demonstrations=3,
    )
    scorers = ("plain", "shared_prefix", "rank_only")
    tables = [evaluate_task(tiny_path, task, icl_cfg(num_items=12, scorer=s)).tables["icl/trec_fixed.json"] for s in scorers]
    assert list(tables[0]["prediction"]) == list(tables[1]["prediction"]) == list(tables[2]["prediction"])


@pytest.mark.realmodel
@needs_smollm2
@needs_data
@needs_minilm
def test_real_model_beats_chance_on_sst2_with_retrieved_demos():
    cfg = icl_cfg(num_items=60)
    result = evaluate_task("smollm2-135m", "sst2", cfg)
    m = result.metrics
    assert m["icl/sst2/n_items"] == 60
    # 60 items: chance 0.5 has sd 0.065; the model reaches ~0.9.
    assert m["icl/sst2/accuracy"] >= 0.7 > m["icl/sst2/prior_baseline"] + 0.05
    demos = result.tables["icl/sst2.json"]["demos"]
    assert all(len(d) == 8 for d in demos)


@pytest.mark.realmodel
@needs_smollm2
@needs_data
@needs_minilm
def test_real_model_prefix_sharing_predicts_like_plain():
    from emo_ray.evaluation.icl.evaluate_task import build_rows, demonstration_indices, select_items
    from emo_ray.evaluation.icl.predict import predict
    from emo_ray.evaluation.icl.scorer import score_plain, score_shared_prefix
    from emo_ray.evaluation.icl.tasks import load_task, load_task_data
    from emo_ray.models import load_model

    cfg = icl_cfg(num_items=6)
    data = load_task_data(replace(load_task("trec"), demonstrations=8))
    items = select_items(data, 6, 0)
    rows = build_rows(data, items, demonstration_indices(data, items, cfg))
    model, tok = load_model("smollm2-135m")
    ids = [[tok(p)["input_ids"] for p in r["prompts"]] for r in rows]
    a, b = score_plain(model.eval(), ids, batch_items=2), score_shared_prefix(model, ids, batch_items=4)
    assert [predict(x, data.label_prior) for x in a] == [predict(x, data.label_prior) for x in b]
    for x, y in zip(a, b):
        assert abs(x.nll_sum - y.nll_sum).max() < 1e-2


@needs_data
def test_longest_item_selection_takes_the_longest_prompts():
    """``icl.item_selection: longest`` (the cluster smoke sweep) picks the MMLU items whose 5-shot
    prompts are longest: every chosen prompt is at least as long as every item left out, and the
    built prompts of the chosen items are longer than a random sample's."""
    from emo_ray.evaluation.icl.evaluate_task import build_rows, prompt_lengths, select_items
    from emo_ray.evaluation.icl.retriever import fixed_shots
    from emo_ray.evaluation.icl.tasks import load_task, load_task_data

    data = load_task_data(load_task("mmlu"))
    lengths = prompt_lengths(data)
    longest = select_items(data, 20, 0, "longest")
    rest = set(range(len(data.test))) - set(longest)
    assert len(longest) == 20 and min(lengths[i] for i in longest) >= max(lengths[i] for i in rest)
    sample = select_items(data, 20, 0)

    def prompt_chars(items):
        shots = fixed_shots([data.test[i] for i in items], data.train, data.task.demonstrations, data.task.group_field)
        return np.mean([len(r["prompts"][0]) for r in build_rows(data, items, shots)])

    assert prompt_chars(longest) > 1.5 * prompt_chars(sample)
