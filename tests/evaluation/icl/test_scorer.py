"""The prefix-sharing scorer against the plain one and against a naive float64 reference."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from emo_ray.evaluation.icl.predict import NORMALIZATIONS, predict
from emo_ray.evaluation.icl.scorer import (common_prefix_length, get_scorer, score_plain, score_rank_only,
                                           score_shared_prefix)


def reference_nll(model, ids: list[int]) -> float:
    """Sum of -log p(x_t | x_<t), t >= 1, one unpadded sequence at a time, in float64."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    logp = torch.log_softmax(logits[:-1], -1)
    return float(-logp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].sum())


def make_items(seed: int, n_items: int, n_cands: int, vocab: int = 257):
    """Items of a shared random prefix (lengths differ per item) plus continuations of 1-7
    tokens; one candidate is a strict prefix of another to exercise the edge of the split."""
    g = np.random.default_rng(seed)
    items = []
    for _ in range(n_items):
        prefix = g.integers(0, vocab - 1, g.integers(3, 41)).tolist()
        cands = [prefix + g.integers(0, vocab - 1, g.integers(1, 8)).tolist() for _ in range(n_cands)]
        cands[-1] = cands[0] + [5]
        items.append(cands)
    return items


@pytest.mark.parametrize("n_items,n_cands,batch_items", [(5, 2, 2), (7, 6, 4), (3, 4, 1)])
def test_shared_prefix_matches_plain_and_reference(tiny, n_items, n_cands, batch_items):
    model, _ = tiny
    items = make_items(n_items * 10 + n_cands, n_items, n_cands)
    plain = score_plain(model, items, batch_items=batch_items)
    shared = score_shared_prefix(model, items, batch_items=batch_items)
    for cands, a, b in zip(items, plain, shared):
        ref = np.array([reference_nll(model, c) for c in cands])
        np.testing.assert_allclose(a.nll_sum, ref, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(b.nll_sum, ref, rtol=1e-5, atol=1e-4)
        np.testing.assert_array_equal(a.n_tokens, [len(c) for c in cands])
        np.testing.assert_array_equal(b.n_tokens, a.n_tokens)


def test_identical_candidates_and_no_common_prefix(tiny):
    model, _ = tiny
    items = [[[1, 2, 3], [1, 2, 3]], [[4, 5, 6], [7, 8, 9, 10]]]
    plain, shared = score_plain(model, items), score_shared_prefix(model, items)
    for a, b in zip(plain, shared):
        np.testing.assert_allclose(a.nll_sum, b.nll_sum, rtol=1e-5)


def test_common_prefix_leaves_a_token_to_score():
    assert common_prefix_length([[1, 2, 3], [1, 2, 3, 4]]) == 2
    assert common_prefix_length([[1, 2, 9], [1, 2, 8]]) == 2
    assert common_prefix_length([[7, 2], [8, 2]]) == 0


def test_bad_items_are_rejected(tiny):
    model, _ = tiny
    with pytest.raises(ValueError, match="no token to predict"):
        score_plain(model, [[[1], [1, 2]]])
    with pytest.raises(ValueError, match="same number of candidates"):
        score_shared_prefix(model, [[[1, 2], [1, 3]], [[1, 2], [1, 3], [1, 4]]], batch_items=2)
    with pytest.raises(ValueError, match="valid: \\['plain', 'rank_only', 'shared_prefix'\\]"):
        get_scorer("fast")


def equal_length_items(seed: int, n_items: int, n_cands: int, vocab: int = 257):
    """Like an SST-2 or tweet_emotion item: one shared prefix, label continuations of one length."""
    g = np.random.default_rng(seed)
    items = []
    for _ in range(n_items):
        prefix = g.integers(0, vocab - 1, g.integers(3, 41)).tolist()
        width = int(g.integers(1, 4))
        items.append([prefix + g.integers(0, vocab - 1, width).tolist() for _ in range(n_cands)])
    return items


@pytest.mark.parametrize("batch_items", [1, 3])
def test_rank_only_predicts_as_shared_prefix_and_skips_only_equal_length_prefixes(tiny, batch_items):
    model, _ = tiny
    same = equal_length_items(3, 6, 4)
    mixed = make_items(4, 5, 4)  # candidates of different lengths: scored whole
    items = same + mixed
    full = score_shared_prefix(model, items, batch_items=batch_items)
    fast = score_rank_only(model, items, batch_items=batch_items)
    prior = [0.25] * 4
    for norm in NORMALIZATIONS:
        assert [predict(a, prior, norm) for a in fast] == [predict(b, prior, norm) for b in full], norm
    for cands, a, b in zip(same, fast[: len(same)], full[: len(same)]):
        prefix = np.array([reference_nll(model, cands[0][: common_prefix_length(cands)])] * len(cands))
        np.testing.assert_allclose(a.nll_sum, b.nll_sum - prefix, rtol=1e-4, atol=1e-3)
        np.testing.assert_array_equal(a.n_tokens, b.n_tokens)
    for a, b in zip(fast[len(same):], full[len(same):]):
        np.testing.assert_allclose(a.nll_sum, b.nll_sum, rtol=1e-5, atol=1e-4)


def test_rank_only_runs_the_head_on_one_prefix_position(tiny):
    """What makes it faster: for equal-length items the prefix pass keeps the last position's
    logits only (the continuation pass is the candidates' own tokens)."""
    model, _ = tiny
    widths = []
    handle = model.lm_head.register_forward_hook(lambda m, args, out: widths.append(args[0].shape[1]))
    try:
        items = equal_length_items(5, 2, 3)
        score_rank_only(model, items, batch_items=2)
        rank_only_widths, widths[:] = list(widths), []
        score_shared_prefix(model, items, batch_items=2)
    finally:
        handle.remove()
    assert rank_only_widths[0] == 1 and widths[0] == max(common_prefix_length(c) for c in items)
