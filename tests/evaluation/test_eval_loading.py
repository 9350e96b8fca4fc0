"""Every evaluation stage loads its model through the one helper, ``load_for_eval``."""
from __future__ import annotations

import pytest

import emo_ray.models.loading as loading


@pytest.fixture
def spy(monkeypatch):
    calls = []
    real = loading.load_for_eval

    def load_for_eval(*args, **kwargs):
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(loading, "load_for_eval", load_for_eval)
    return calls


def test_every_stage_loads_through_load_for_eval(spy, tiny_path):
    from emo_ray.evaluation.featurize import Featurizer
    from emo_ray.inference.sampler import Sampler
    from emo_ray.evaluation.icl.evaluate_task import ICLScorer
    from emo_ray.evaluation.oracle_ppl import ContinuationNLL

    stages = [
        Sampler(tiny_path, gen_tokens=4),
        Featurizer(tiny_path, "mean", 16),
        ContinuationNLL(tiny_path),
        ICLScorer(tiny_path, "shared_prefix", 2),
    ]
    assert len(spy) == len(stages)
    for stage in stages:
        assert not stage.model.training and stage.tokenizer.pad_token is not None
