"""The sweep pre-flight fetches (or refuses) a hub cost head once per distinct
``train.cost_embedding_model``, before any trial or MLflow run: a gated LLaMA-2-13B head without a
token is one config error for the whole sweep, not a failure in every trial (issue 27.6)."""
from __future__ import annotations

import pytest

from emo_ray.config import ConfigError
from emo_ray.sweep import load_sweep_config, trial_config, trials
from emo_ray.sweep import runner


def _no_other_checks(monkeypatch):
    monkeypatch.setattr("emo_ray.data.sources.check_sources", lambda *a, **k: None)
    monkeypatch.setattr("emo_ray.models.check_available", lambda *a, **k: None)
    monkeypatch.setattr(runner, "trial_placements", lambda *a, **k: None)


def test_a_gated_cost_head_fails_the_preflight_once(monkeypatch):
    sweep = load_sweep_config("table3")
    configs = [trial_config(sweep, t) for t in trials(sweep)]
    wanted = {c.train.cost_embedding_model for c in configs if c.train.loss != "mle"}
    assert wanted == {"llama2-13b"} and len(configs) > 10
    calls = []

    def refuse(cfg):
        calls.append(cfg.train.cost_embedding_model)
        raise ConfigError("train.cost_embedding_model: meta-llama/Llama-2-13b-hf is gated")

    _no_other_checks(monkeypatch)
    monkeypatch.setattr("emo_ray.train.prepare.check_cost_model", refuse)
    with pytest.raises(ConfigError, match="gated"):
        runner._preflight(sweep, configs)
    assert calls == ["llama2-13b"]


def test_mle_only_sweeps_fetch_no_cost_head(monkeypatch):
    sweep = load_sweep_config("table3", ["grid.objectives={mle: [{}]}"])
    configs = [trial_config(sweep, t) for t in trials(sweep)]
    _no_other_checks(monkeypatch)
    monkeypatch.setattr("emo_ray.train.prepare.check_cost_model", lambda cfg: pytest.fail("fetched for MLE"))
    runner._preflight(sweep, configs)
