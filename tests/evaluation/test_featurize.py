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


@pytest.mark.parametrize("layer", [-3, -2, 1, -1, 0])
def test_early_exit_is_the_recorded_hidden_state(tiny_path, tiny, layer):
    """``hidden_state`` stops after the block that produces ``hidden_states[layer]`` and returns
    that very tensor: equal bit for bit to the full forward's record, padding included."""
    from emo_ray.evaluation.featurize import decoder_layers, hidden_state
    from emo_ray.models.loading import pad_batch

    model, tok = tiny
    ids, mask = pad_batch([tok("a longer text for the test")["input_ids"], tok("short")["input_ids"]])
    with torch.no_grad():
        full = model.base_model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        got = hidden_state(model.base_model, ids, mask, layer)
    ref = full.last_hidden_state if layer == -1 else full.hidden_states[layer]
    assert torch.equal(got, ref)
    assert len(decoder_layers(model.base_model)) + 1 == len(full.hidden_states)


def test_early_exit_runs_no_later_block(tiny_path, tiny):
    from emo_ray.evaluation.featurize import decoder_layers, hidden_state
    from emo_ray.models.loading import pad_batch

    model, tok = tiny
    blocks = decoder_layers(model.base_model)
    ran = []
    before = [len(b._forward_hooks) for b in blocks]  # transformers may keep its own recording hooks
    hooks = [b.register_forward_hook(lambda m, a, o, i=i: ran.append(i)) for i, b in enumerate(blocks)]
    try:
        ids, mask = pad_batch([tok("text")["input_ids"]])
        with torch.no_grad():
            hidden_state(model.base_model, ids, mask, 1)  # the first block's output
    finally:
        for h in hooks:
            h.remove()
    assert ran == [0] and len(blocks) > 1
    assert [len(b._forward_hooks) for b in blocks] == before  # the stopping hook is gone too


def test_one_featurizer_load_across_calls(tiny_path, monkeypatch):
    """MAUVE's three featurize calls (human, generations, ceiling) load the featurizer once; the
    next stage of another class drops it."""
    from emo_ray.inference import executor
    from emo_ray.models import loading

    calls = []
    real = loading.load_for_eval
    monkeypatch.setattr(loading, "load_for_eval", lambda *a, **k: calls.append(a) or real(*a, **k))
    executor.release_local_actors()
    kw = {"pooling": "mean", "max_tokens": 32, "batch_size": 2, "execution": LOCAL}
    a = featurize(["one", "two", "three"], tiny_path, **kw)
    featurize(["four"], tiny_path, **kw)
    b = featurize(["one", "two", "three"], tiny_path, **kw)
    assert len(calls) == 1
    np.testing.assert_array_equal(a, b)
    featurize(["one"], tiny_path, **{**kw, "pooling": "last"})  # other constructor arguments: a new actor
    assert len(calls) == 2
    from emo_ray.evaluation.oracle_ppl import score_continuations

    score_continuations([{"prefix": "a", "continuation": " b"}], tiny_path, execution=LOCAL, batch_size=1)
    assert not executor._IDLE  # another stage dropped the idle featurizer
