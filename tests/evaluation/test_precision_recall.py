"""Precision / recall cross-entropies (EMO section 4, Figure 2) on tiny models, against direct
float64 scoring; their config; the precision-vs-recall plot on real MLflow runs."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from emo_ray.evaluation.config import (
    EvalConfig, EvalConfigError, GenerationConfig, MauveConfig, OracleConfig, load_eval_config,
)
from emo_ray.evaluation.open_ended import evaluate_corpus
from emo_ray.evaluation.precision_recall import surrogate_name
from tests.evaluation.conftest import LOCAL, write_jsonl

WORDS = "the a cat dog sat ran on under mat log red big small house tree river".split()


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory) -> str:
    """A corpus YAML of ASCII documents (no shared data needed): 16 windows of 8 + 12 bytes."""
    import random

    folder = tmp_path_factory.mktemp("corpus")
    rng = random.Random(0)
    docs = [{"text": " ".join(rng.choice(WORDS) for _ in range(12))} for _ in range(16)]
    write_jsonl(folder / "docs.jsonl", docs)
    path = folder / "toy_corpus.yaml"
    path.write_text(f"source: {folder / 'docs.jsonl'}\nprefix_tokens: 8\ngen_tokens: 12\n")
    return str(path)


@pytest.fixture(scope="module")
def other_path(tmp_path_factory) -> str:
    """A second tiny model (another seed, same byte tokenizer): a surrogate that is not the oracle."""
    from emo_ray.models.tiny import build_tiny

    return str(build_tiny(tmp_path_factory.mktemp("other") / "m", seed=1))


def pr_cfg(corpus: str, oracle: str, surrogate: str = "") -> EvalConfig:
    return EvalConfig(
        model="tiny-llama",
        generation=GenerationConfig(corpora=(corpus,), num_prompts=16, seeds=(0, 1), batch_size=8,
                                    precision_recall=True, surrogate=surrogate),
        mauve=MauveConfig(featurizer="tiny-llama", pooling="mean", cache=False),
        oracle=OracleConfig(model=oracle),
        execution=replace(LOCAL, dtype="fp32"),  # auto is bf16 on this CPU: compare fp32 with the float64 reference
        icl_enabled=False,
    )


def direct_mean_nll(path: str, pairs) -> float:
    """sum NLL / sum tokens of (prefix, continuation) texts, one unbatched float64 forward each."""
    from emo_ray.models import load_model

    model, tok = load_model(path)
    model = model.eval().double()
    total, n = 0.0, 0
    for prefix, cont in pairs:
        p, c = tok(prefix)["input_ids"], tok(cont, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([p + c])).logits[0], -1)
        total -= sum(float(logp[len(p) - 1 + k, t]) for k, t in enumerate(c))
        n += len(c)
    return total / n


def label(path: str) -> str:
    from emo_ray.evaluation.corpora import corpus_label

    return f"gen/{corpus_label(path)}"


def test_recall_and_precision_match_direct_scoring(corpus_file, tiny_path, other_path):
    """A surrogate that is not the oracle: its own scoring pass over the non-empty generations."""
    res = evaluate_corpus(tiny_path, corpus_file, pr_cfg(corpus_file, oracle="tiny-llama", surrogate=other_path))
    m, key = res.metrics, label(corpus_file)
    table = res.tables[f"generations/{key.split('/')[1]}.json"]
    humans = table[(table["seed"] == 0)].sort_values("prompt_id")
    # recall_ce: the human continuations of the same prompts under the evaluated model
    assert m[f"{key}/recall_ce"] == pytest.approx(direct_mean_nll(tiny_path, zip(humans["prefix"], humans["reference"])), rel=1e-5)
    per_seed = []
    for s in (0, 1):
        good = table[(table["seed"] == s) & ~table["empty"]]
        direct = direct_mean_nll(other_path, zip(good["prefix"], good["generation"]))
        assert m[f"{key}/ancestral/seed{s}/precision_ce"] == pytest.approx(direct, rel=1e-5)
        per_seed.append(direct)
    assert m[f"{key}/ancestral/precision_ce_mean"] == pytest.approx(np.mean(per_seed), rel=1e-5)
    assert m[f"{key}/ancestral/precision_ce_std"] == pytest.approx(np.std(per_seed, ddof=1), rel=1e-4, abs=1e-9)
    assert {"surrogate_nll_sum", "surrogate_tokens"} <= set(table.columns)
    assert f"surrogate={other_path} reused_oracle_nll=false" in res.params[f"{key}/precision_recall"]
    assert f"time/{key}/precision_recall_s" in m


def test_surrogate_is_the_oracle_by_default_and_its_nll_is_reused(corpus_file, tiny_path, monkeypatch):
    """precision_ce with surrogate == oracle is exactly log(oracle_ppl) per seed, from the oracle's
    NLLs: only two scoring passes run (oracle, recall), not three."""
    from emo_ray.evaluation import precision_recall

    cfg = pr_cfg(corpus_file, oracle="tiny-llama")
    assert surrogate_name(cfg) == "tiny-llama"
    calls = []
    real = precision_recall.score_continuations
    monkeypatch.setattr(precision_recall, "score_continuations", lambda rows, path, **kw: calls.append(path) or real(rows, path, **kw))
    res = evaluate_corpus(tiny_path, corpus_file, cfg)
    m, key = res.metrics, label(corpus_file)
    assert calls == [tiny_path]  # the recall pass only
    for s in (0, 1):
        assert m[f"{key}/ancestral/seed{s}/precision_ce"] == pytest.approx(math.log(m[f"{key}/ancestral/seed{s}/oracle_ppl"]), rel=1e-12)
    assert "surrogate_nll_sum" not in res.tables[f"generations/{key.split('/')[1]}.json"].columns
    assert "reused_oracle_nll=true" in res.params[f"{key}/precision_recall"]


def test_a_model_that_is_its_own_surrogate(corpus_file, tiny_path, uniform_path, other_path):
    """Sanity: surrogate = evaluated model -> precision_ce is the model's own NLL on its samples
    (scored independently here); for the uniform model that is exactly log |V| on both sides."""
    res = evaluate_corpus(tiny_path, corpus_file, pr_cfg(corpus_file, oracle=other_path, surrogate=tiny_path))
    m, key = res.metrics, label(corpus_file)
    table = res.tables[f"generations/{key.split('/')[1]}.json"]
    good = table[(table["seed"] == 1) & ~table["empty"]]
    assert m[f"{key}/ancestral/seed1/precision_ce"] == pytest.approx(direct_mean_nll(tiny_path, zip(good["prefix"], good["generation"])), rel=1e-5)

    res = evaluate_corpus(uniform_path, corpus_file, pr_cfg(corpus_file, oracle=uniform_path))
    for k in ("recall_ce", "ancestral/seed0/precision_ce", "ancestral/seed1/precision_ce", "ancestral/precision_ce_mean"):
        assert res.metrics[f"{key}/{k}"] == pytest.approx(math.log(257), rel=1e-6)


def test_config_fields_and_a_bad_surrogate_fails_in_one_line(tmp_path):
    cfg = load_eval_config(None, ["generation.precision_recall=true", "oracle.model=tiny-llama"])
    assert cfg.generation.precision_recall and cfg.generation.surrogate == "" and surrogate_name(cfg) == "tiny-llama"
    assert not load_eval_config().generation.precision_recall  # off by default
    cfg = load_eval_config(None, ["generation.precision_recall=true", "generation.surrogate=tiny-llama"])
    assert surrogate_name(cfg) == "tiny-llama"
    (tmp_path / "empty").mkdir()
    for bad, msg in [("./no/such/model", "neither a registry name"), (str(tmp_path / "empty"), "has no config.json")]:
        with pytest.raises(EvalConfigError, match=msg) as err:
            load_eval_config(None, ["generation.precision_recall=true", f"generation.surrogate={bad}"])
        assert str(err.value).startswith("generation.surrogate: ") and "\n" not in str(err.value)
    # Not checked when the stage is off (the name is then unused).
    load_eval_config(None, ["generation.surrogate=./no/such/model"])


def test_off_by_default_adds_nothing(corpus_file, tiny_path):
    cfg = pr_cfg(corpus_file, oracle="tiny-llama")
    res = evaluate_corpus(tiny_path, corpus_file, replace(cfg, generation=replace(cfg.generation, precision_recall=False)))
    assert not [k for k in res.metrics if "precision" in k or "recall" in k]
    assert not [k for k in res.params if "precision_recall" in k]
    assert f"{label(corpus_file)}/ancestral/oracle_ppl_mean" in res.metrics
