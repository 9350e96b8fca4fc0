"""Every shipped config validates; unknown keys and wrong types fail naming the valid keys."""
from __future__ import annotations

from pathlib import Path

import pytest

from emo_ray.evaluation.config import EvalConfigError, from_flat, load_eval_config, to_flat

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs" / "eval").glob("*.yaml"))


def test_configs_are_shipped():
    assert {p.stem for p in CONFIGS} >= {"quick", "acceptance"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_config_validates_and_round_trips(path):
    from emo_ray.evaluation.icl.tasks import load_task

    cfg = load_eval_config(path)
    assert from_flat(to_flat(cfg)) == cfg
    for t in cfg.icl.tasks:
        load_task(t)


def test_acceptance_meets_the_minimums():
    cfg = load_eval_config(Path(CONFIGS[0]).parent / "acceptance.yaml")
    assert cfg.model == "smollm2-135m"
    assert set(cfg.generation.corpora) >= {"wikitext-2", "webtext"}
    assert cfg.generation.num_prompts >= 200 and len(cfg.generation.seeds) >= 2
    assert "ancestral" in cfg.generation.decoders
    assert set(cfg.icl.tasks) >= {"sst2", "trec", "rotten_tomatoes", "tweet_emotion", "ag_news"}
    assert cfg.icl.num_items >= 200 and cfg.icl.demonstrations in (-1, 8)


def test_paper_defaults():
    cfg = load_eval_config()
    assert (cfg.mauve.featurizer, cfg.mauve.pooling, cfg.oracle.model) == ("gpt2-large", "last", "gpt2-large")
    assert cfg.icl.retriever == "all-mpnet-base-v2" and len(cfg.icl.tasks) == 8


def test_overrides_and_errors():
    cfg = load_eval_config(None, ["icl.num_items=7", "generation.seeds=[3, 4, 5]"])
    assert cfg.icl.num_items == 7 and cfg.generation.seeds == (3, 4, 5)
    with pytest.raises(EvalConfigError, match="unknown key\\(s\\) \\['shots'\\]; valid: \\["):
        load_eval_config(None, ["icl.shots=3"])
    with pytest.raises(EvalConfigError, match="expected an integer"):
        load_eval_config(None, ["icl.num_items=many"])
    with pytest.raises(EvalConfigError, match="not one of \\['shared_prefix', 'plain', 'rank_only'\\]"):
        load_eval_config(None, ["icl.scorer=fast"])
    with pytest.raises(ValueError, match="not a generation corpus"):
        load_eval_config(None, ["generation.corpora=[nope]"])
    with pytest.raises(EvalConfigError, match="duplicates"):
        load_eval_config(None, ["generation.seeds=[1, 1]"])


def _eval_bounded_fields():
    from emo_ray.evaluation.config import EvalConfig
    from tests.test_config import _bounded_fields

    return list(_bounded_fields(EvalConfig))


EVAL_BOUNDED = _eval_bounded_fields()


def test_eval_ranges_are_carried_by_the_types():
    """The eval config's hand-written range checks became field bounds (issue 24.6)."""
    keys = {key for key, _, _ in EVAL_BOUNDED}
    assert {"generation.num_prompts", "generation.batch_size", "mauve.kmeans_explained_var", "icl.demonstrations",
            "oracle.batch_size", "execution.num_actors", "execution.cpus_per_actor", "execution.gpus_per_actor"} <= keys


@pytest.mark.parametrize("key, base, bounds", EVAL_BOUNDED, ids=[key for key, _, _ in EVAL_BOUNDED])
def test_an_eval_value_out_of_range_names_the_field_and_the_bound(key, base, bounds):
    from emo_ray.evaluation.config import EvalConfigError, load_eval_config
    from tests.test_config import assert_bounds_enforced

    assert_bounds_enforced(key, base, bounds, load_eval_config(None),
                           lambda override: load_eval_config(None, [override]), EvalConfigError)
