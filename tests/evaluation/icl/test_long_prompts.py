"""Prompts longer than the model's positions (issue 27.3): demonstrations are dropped, farthest
retrieved first, until every candidate fits; batches are bounded in tokens; the prefix cache is
never repeated per candidate. A tiny random OPT with 64 learned positions indexes out of its
position table (IndexError on CPU, a device assert on GPU) on any longer prompt."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from emo_ray.evaluation.config import EvalConfig, ICLConfig
from emo_ray.evaluation.icl.evaluate_task import evaluate_task, fit_demonstrations
from emo_ray.evaluation.icl.scorer import score_plain, score_shared_prefix, token_batches
from emo_ray.evaluation.icl.tasks import load_task
from tests.evaluation.conftest import LOCAL, write_jsonl, write_task

POSITIONS = 64


@pytest.fixture(scope="module")
def tiny_opt(tmp_path_factory, tiny_path) -> str:
    """A random OPT of 64 positions with the tiny model's byte tokenizer (one token per byte)."""
    from transformers import OPTConfig, OPTForCausalLM

    from emo_ray.models import load_tokenizer

    tok = load_tokenizer(tiny_path)
    torch.manual_seed(0)
    config = OPTConfig(vocab_size=len(tok), hidden_size=32, word_embed_proj_dim=32, ffn_dim=64, num_hidden_layers=2,
                       num_attention_heads=2, max_position_embeddings=POSITIONS, pad_token_id=tok.pad_token_id,
                       bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    out = tmp_path_factory.mktemp("opt64")
    OPTForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def long_task(folder) -> str:
    """Demonstrations of ~27 bytes: four of them and the test input are far past 64 positions;
    the last test input alone (70 bytes) fits no prompt."""
    train = [{"text": f"demonstration number {i:02d}", "label": i % 2} for i in range(8)]
    test = [{"text": "short", "label": 1}, {"text": "a bit longer input", "label": 0}, {"text": "x" * 70, "label": 1}]
    return write_task(folder, template="{text}={label}", label_words=["no", "yes"],
                      train=write_jsonl(folder / "long_train.jsonl", train),
                      test=write_jsonl(folder / "long_test.jsonl", test))


def test_demonstrations_are_dropped_farthest_first_until_every_candidate_fits(tmp_path):
    task = load_task(long_task(tmp_path))
    demos = [{"text": f"demonstration number {i:02d}", "label": i % 2} for i in range(4)]
    item = {"text": "short", "label": 1}
    prompts, dropped = fit_demonstrations(task, item, demos, len, POSITIONS)  # bytes = tokens here
    assert 0 < dropped < len(demos)
    kept = len(demos) - dropped
    assert all(len(p) <= POSITIONS for p in prompts)
    assert all(d["text"] in prompts[0] for d in demos[:kept])  # the nearest are kept ...
    assert not any(d["text"] in prompts[0] for d in demos[kept:])  # ... the farthest dropped
    one_more, _ = fit_demonstrations(task, item, demos[: kept + 1], len, None)
    assert max(map(len, one_more)) > POSITIONS  # as many as fit, not fewer
    assert fit_demonstrations(task, {"text": "x" * 70, "label": 1}, demos, len, POSITIONS) == (None, 4)
    assert fit_demonstrations(task, item, demos, len, None)[1] == 0  # no limit: nothing dropped


@pytest.mark.parametrize("scorer", ["plain", "shared_prefix"])
def test_long_prompts_run_within_a_64_position_opt(tmp_path, tiny_opt, scorer):
    cfg = EvalConfig(icl=ICLConfig(num_items=0, scorer=scorer), execution=LOCAL)
    res = evaluate_task(tiny_opt, long_task(tmp_path), cfg)
    m, table = res.metrics, res.tables["icl/toy.json"]
    assert m["icl/toy/n_items"] == 2 and m["icl/toy/n_skipped"] == 1  # the 70-byte input fits no prompt
    assert m["icl/toy/n_items_shortened"] == 2 and m["icl/toy/n_demonstrations_dropped"] > 2
    assert all(len(p.encode()) <= POSITIONS for p in table["prompt_for_gold"])
    assert all(max(n) <= POSITIONS for n in table["n_tokens"])
    assert all(np.isfinite(s).all() for s in table["nll_sum"])


def _recorded_passes(model):
    """(input rows x length, cache rows or 0) of every forward pass of ``model``."""
    passes = []

    def hook(_module, _args, kwargs):
        cache = kwargs.get("past_key_values")
        rows = cache.layers[0].keys.shape[0] if cache is not None and cache.layers[0].keys is not None else 0
        passes.append((kwargs["input_ids"].numel(), rows))

    return passes, model.register_forward_pre_hook(hook, with_kwargs=True)


def _items(n_items: int, n_cands: int, seed: int = 0):
    g = np.random.default_rng(seed)
    out = []
    for _ in range(n_items):
        prefix = g.integers(0, 250, g.integers(20, 50)).tolist()
        out.append([prefix + g.integers(0, 250, g.integers(2, 5)).tolist() for _ in range(n_cands)])
    return out


def test_batches_are_bounded_in_tokens_and_score_the_same(tiny):
    model, _ = tiny
    items = _items(6, 3)
    free = score_plain(model, items, batch_items=6, batch_tokens=10**6)
    for scorer, per_pass in ((score_plain, 3 * 55), (score_shared_prefix, 55)):
        passes, handle = _recorded_passes(model)
        try:
            bounded = scorer(model, items, batch_items=6, batch_tokens=2 * per_pass)
        finally:
            handle.remove()
        assert max(n for n, _ in passes) <= 2 * per_pass  # 6 items would need 3x that
        for a, b in zip(free, bounded):
            np.testing.assert_allclose(a.nll_sum, b.nll_sum, rtol=1e-5, atol=1e-4)
    assert token_batches(items, 6, 1, lambda b: 10**6) == [[i] for i in range(6)]  # one item over budget: alone
    with pytest.raises(ValueError, match="batch_tokens"):
        token_batches(items, 4, 0, len)


def test_continuations_read_the_prefix_cache_without_copying_it(tiny):
    """Before: the cache was repeated to B x C rows (B items x C candidates) for the continuation
    pass, and the pass kept what it appended. Now each item's C candidates read a stride-0 view
    of the one prefix cache (no copy), and nothing appended stays in it after the pass."""
    model, _ = tiny
    items = _items(4, 5, seed=1)
    seen = []

    def before(_module, _args, kwargs):
        cache = kwargs.get("past_key_values")
        if cache is not None:
            keys = cache.layers[0].keys
            seen.append((keys.shape[0], keys.stride(0), keys.untyped_storage().data_ptr()))

    def after(_module, _args, kwargs, _out):
        cache = kwargs.get("past_key_values")
        if cache is not None:
            keys = cache.layers[0].keys
            seen.append(("after", keys.stride(0), keys.untyped_storage().data_ptr()))

    handles = [model.register_forward_pre_hook(before, with_kwargs=True),
               model.register_forward_hook(after, with_kwargs=True)]
    try:
        shared = score_shared_prefix(model, items, batch_items=4)
    finally:
        for h in handles:
            h.remove()
    assert len(seen) == 2 * 4  # one continuation pass per item, each seen before and after
    assert {rows for rows, _, _ in seen[::2]} == {5} and {stride for _, stride, _ in seen} == {0}
    assert len({ptr for _, _, ptr in seen}) == 1  # all read the storage of the one prefix cache
    for a, b in zip(score_plain(model, items), shared):
        np.testing.assert_allclose(a.nll_sum, b.nll_sum, rtol=1e-5, atol=1e-4)
