"""Pooling against a naive per-text computation; the human-side cache."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from emo_ray.evaluation.featurize import Featurizer, featurize, get_pooling
from tests.evaluation.conftest import LOCAL


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_pooling_matches_unpadded_reference(tiny_path, tiny, pooling):
    model, tok = tiny
    texts = ["short", "a much longer text than the first one"]
    out = Featurizer(tiny_path, pooling, 64, threads=1)(pd.DataFrame({"text": texts}))
    for text, f in zip(texts, out["features"]):
        with torch.no_grad():
            h = model(input_ids=torch.tensor([tok(text)["input_ids"]]), output_hidden_states=True).hidden_states[-1][0]
        ref = h[-1] if pooling == "last" else h.mean(0)
        np.testing.assert_allclose(f, ref.numpy(), rtol=1e-4, atol=1e-5)


def test_cache_hit(tiny_path, tmp_path, monkeypatch):
    monkeypatch.setenv("EMO_RAY_CACHE", str(tmp_path))
    a = featurize(["one", "two"], tiny_path, pooling="mean", max_tokens=32, batch_size=2, execution=LOCAL, cache=True)
    assert len(list((tmp_path / "features").glob("*.npy"))) == 1
    b = featurize(["one", "two"], tiny_path, pooling="mean", max_tokens=32, batch_size=2, execution=LOCAL, cache=True)
    np.testing.assert_array_equal(a, b)


def test_unknown_pooling():
    with pytest.raises(ValueError, match="valid: \\['last', 'mean'\\]"):
        get_pooling("cls")
