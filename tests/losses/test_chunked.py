"""The chunked objectives against the materialised ones (`get_loss` on `hidden @ W.T + b`):
values, gradients (hidden, head weight, bias), metrics, edge cases, and that no tensor of
size (tokens x V) is ever created."""
from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from emo_ray.losses import LOSSES, get_loss
from emo_ray.losses.chunked import CHUNKED_SUPPORTED, chunked_loss
from tests.losses.reference import REFERENCES
from tests.losses.test_losses import case_id, cases

NAMES = sorted(LOSSES)
HPARAMS = {"tailr": {"gamma": 0.3, "min_weight": 0.05}, "tvd": {"gamma": 0.6}, "mixce": {"gamma": 0.4}}
CASES = cases(HPARAMS)  # every registry name, then the emo_custom combinations (incl. level='batch')
CASE_IDS = [case_id(c) for c in CASES]
ODD = (3, 37, 1271, 41)  # (B, T, V, d): nothing divides anything


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These shapes are tiny: on a shared 2-core box, intra-op thread barriers cost more than the
    maths (4x slower under load). Restored afterwards for the other test modules."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make(B, T, V, d, *, dtype=torch.float32, seed=0, masked_frac=0.2, bias=True):
    g = torch.Generator().manual_seed(seed)
    hidden = (torch.randn(B, T, d, generator=g) * 1.5).to(dtype)
    weight = (torch.randn(V, d, generator=g) * 0.4).to(dtype)
    b = (torch.randn(V, generator=g) * 0.5).to(dtype) if bias else None
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[torch.rand(B, T, generator=g) < masked_frac] = -100
    fixed = torch.randn(V, d + 3, generator=g).to(dtype)  # its own width: only V must match
    return hidden, weight, b, labels, fixed


def leaves(*tensors):
    return [None if t is None else t.detach().clone().requires_grad_(True) for t in tensors]


def reference(name, hidden, weight, bias, labels, cost, **h):
    logits = hidden @ weight.T + (bias if bias is not None else 0)
    return get_loss(name, cost_embedding=cost if LOSSES[name].needs_cost_embedding else None, **h)(logits, labels)


def assert_rel_close(actual, expected, rtol=1e-5):
    """Relative to the tensor's scale, so near-zero entries of a gradient do not dominate."""
    atol = rtol * max(float(expected.abs().max()), 1e-30)
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)


def compare(name, shape=ODD, *, chunk_size, adaptive=False, dtype=torch.float32, bias=True, seed=0, grad_out=1.0, **h):
    hidden, weight, b, labels, fixed = make(*shape, dtype=dtype, seed=seed, bias=bias)
    r_h, r_w, r_b = leaves(hidden, weight, b)
    c_h, c_w, c_b = leaves(hidden, weight, b)
    # adaptive: the live head weight is the cost embedding (detached inside both implementations)
    ref = reference(name, r_h, r_w, r_b, labels, r_w if adaptive else fixed, **h)
    out = chunked_loss(name, c_h, c_w, labels, head_bias=c_b, cost_embedding=c_w if adaptive else fixed,
                       chunk_size=chunk_size, **h)
    assert out.n_tokens == ref.n_tokens
    assert out.loss.dtype == ref.loss.dtype
    assert_rel_close(out.loss.detach(), ref.loss.detach())
    assert set(out.metrics) == set(ref.metrics)
    for k in ref.metrics:
        assert out.metrics[k] == pytest.approx(ref.metrics[k], rel=1e-5, abs=1e-7)
    (ref.loss * grad_out).backward()
    (out.loss * grad_out).backward()
    for mine, theirs in ((c_h, r_h), (c_w, r_w), (c_b, r_b)):
        if theirs is not None:
            assert mine.grad.dtype == theirs.grad.dtype
            assert_rel_close(mine.grad, theirs.grad)
    return out


def test_supports_every_registered_objective():
    assert CHUNKED_SUPPORTED == frozenset(LOSSES)


@pytest.mark.parametrize("name,h", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("chunk_size", [17, 64, 4096])  # not dividing N=108 ... larger than N
def test_matches_materialised_fp32(name, h, chunk_size):
    compare(name, chunk_size=chunk_size, **h)


@pytest.mark.parametrize("name,h", [c for c in CASES if LOSSES[c[0]].needs_cost_embedding],
                         ids=[case_id(c) for c in CASES if LOSSES[c[0]].needs_cost_embedding])
def test_adaptive_cost_embedding_is_detached(name, h):
    compare(name, chunk_size=29, adaptive=True, **h)


@pytest.mark.parametrize("name,h", CASES, ids=CASE_IDS)
def test_fp64_no_bias_and_grad_output_scaling(name, h):
    compare(name, (2, 23, 301, 13), chunk_size=7, dtype=torch.float64, bias=False, grad_out=-0.37, **h)


@pytest.mark.parametrize("name,h", CASES, ids=CASE_IDS)
def test_fp64_against_naive_loop_reference(name, h):
    """Independent of get_loss: the per-token float64 loops of tests/losses/reference.py."""
    hidden, weight, b, labels, fixed = make(2, 9, 31, 5, dtype=torch.float64, seed=5)
    c_h, c_w = leaves(hidden, weight)
    out = chunked_loss(name, c_h, c_w, labels, head_bias=b, cost_embedding=fixed, chunk_size=4, **h)
    r_h, r_w = leaves(hidden, weight)
    ref = REFERENCES[name](r_h @ r_w.T + b, labels, fixed, **h)
    torch.testing.assert_close(out.loss, ref, rtol=1e-9, atol=1e-12)
    out.loss.backward()
    ref.backward()
    torch.testing.assert_close(c_h.grad, r_h.grad, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(c_w.grad, r_w.grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("name", ["tailr", "tvd", "mixce"])
def test_hyperparameters(name, gamma):
    compare(name, chunk_size=50, gamma=gamma, seed=3)


def test_tailr_min_weight():
    out = compare("tailr", chunk_size=50, gamma=0.9, min_weight=0.3)
    assert out.metrics["tailr_weight"] >= 0.3 - 1e-6


@pytest.mark.parametrize("name,hp", CASES, ids=CASE_IDS)
def test_all_masked_is_zero_and_backward_runs(name, hp):
    hidden, weight, b, labels, fixed = make(2, 6, 13, 4)
    labels[:] = -100
    h, w, bb = leaves(hidden, weight, b)
    out = chunked_loss(name, h, w, labels, head_bias=bb, cost_embedding=fixed, **hp)
    assert out.loss.item() == 0.0 and out.n_tokens == 0
    assert out.loss.requires_grad
    out.loss.backward()
    for t in (h, w, bb):
        assert t.grad is not None and not t.grad.any()


def test_only_last_position_labelled_and_single_token_sequences():
    hidden, weight, b, labels, fixed = make(2, 1, 13, 4, masked_frac=0.0)  # T=1: nothing to predict
    assert chunked_loss("emo", hidden, weight, labels, cost_embedding=fixed).n_tokens == 0
    compare("emo", (2, 5, 13, 4), chunk_size=3)


def test_cost_embedding_never_gets_a_gradient():
    hidden, weight, b, labels, fixed = make(2, 7, 19, 4)
    cost = fixed.clone().requires_grad_(True)
    h, w = leaves(hidden, weight)
    chunked_loss("emo", h, w, labels, cost_embedding=cost, chunk_size=5).loss.backward()
    assert cost.grad is None and h.grad is not None and w.grad is not None


def test_frozen_head_and_no_grad():
    hidden, weight, b, labels, fixed = make(2, 11, 57, 6)
    (h,) = leaves(hidden)
    out = chunked_loss("emo_batch", h, weight, labels, cost_embedding=fixed, chunk_size=4)
    out.loss.backward()
    r_h = hidden.clone().requires_grad_(True)
    reference("emo_batch", r_h, weight, None, labels, fixed).loss.backward()
    assert_rel_close(h.grad, r_h.grad)
    with torch.no_grad():
        plain = chunked_loss("emo", hidden, weight, labels, cost_embedding=fixed, chunk_size=4)
    assert not plain.loss.requires_grad
    assert_rel_close(plain.loss, reference("emo", hidden, weight, None, labels, fixed).loss)


def test_bf16_grads_in_input_dtype_and_close():
    hidden, weight, b, labels, fixed = make(2, 33, 257, 16, dtype=torch.bfloat16)
    h, w, bb = leaves(hidden, weight, b)
    out = chunked_loss("emo", h, w, labels, head_bias=bb, cost_embedding=w, chunk_size=10)
    out.loss.backward()
    assert out.loss.dtype == torch.float32
    assert h.grad.dtype == w.grad.dtype == bb.grad.dtype == torch.bfloat16
    r_h, r_w, r_b = leaves(hidden, weight, b)
    ref = reference("emo", r_h, r_w, r_b, labels, r_w)
    ref.loss.backward()
    assert_rel_close(out.loss.detach(), ref.loss.detach(), rtol=1e-3)
    for mine, theirs in ((h, r_h), (w, r_w), (bb, r_b)):
        assert_rel_close(mine.grad.float(), theirs.grad.float(), rtol=3e-2)


def test_validation_errors():
    hidden, weight, b, labels, fixed = make(1, 4, 7, 3)
    with pytest.raises(ValueError, match="no hyperparameter"):
        chunked_loss("mle", hidden, weight, labels, gamma=0.5)
    with pytest.raises(ValueError, match="pinned"):
        chunked_loss("emo", hidden, weight, labels, cost_embedding=fixed, mode=2)
    with pytest.raises(ValueError, match="cost_embedding"):
        chunked_loss("emo", hidden, weight, labels)
    with pytest.raises(ValueError, match="cost_embedding"):
        chunked_loss("emo", hidden, weight, labels, cost_embedding=fixed[:-1])
    with pytest.raises(ValueError, match="gamma"):
        chunked_loss("tailr", hidden, weight, labels, gamma=1.5)
    with pytest.raises(ValueError, match="chunk_size"):
        chunked_loss("mle", hidden, weight, labels, chunk_size=0)
    with pytest.raises(ValueError, match="not a supported loss"):
        chunked_loss("nope", hidden, weight, labels)


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor any aten op returns (allocations, views and out= included)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("name", ["emo", "emo_batch", "mle"])
def test_memory_scales_with_chunk_not_tokens(name):
    V, d, chunk = 2000, 16, 32
    sizes = {}
    for T in (64, 256):  # tokens x4
        hidden, weight, b, labels, fixed = make(4, T, V, d, masked_frac=0.0)
        h, w = leaves(hidden, weight)
        saved = []
        with _LargestTensor() as mode, torch.autograd.graph.saved_tensors_hooks(
            lambda t: saved.append(t.numel()) or t, lambda t: t
        ):
            out = chunked_loss(name, h, w, labels, cost_embedding=fixed, chunk_size=chunk)
            out.loss.backward()
        n_tokens = out.n_tokens
        assert n_tokens * V >= 7 * chunk * V  # the check below is meaningful
        assert mode.largest <= chunk * V, (mode.largest, chunk * V)  # never (tokens x V)
        assert max(saved) <= max(4 * T * d, V * d)  # autograd keeps only (N, d) / (V, d) grads
        sizes[T] = mode.largest
        with _LargestTensor() as ref_mode:  # sanity: the materialised loss does hold (tokens x V)
            reference(name, hidden, weight, None, labels, fixed)
        assert ref_mode.largest >= n_tokens * V
    assert sizes[64] == sizes[256]


def test_second_backward_is_refused_not_doubled():
    """backward scales the saved gradients in place; autograd's version check must catch reuse."""
    hidden, weight, b, labels, fixed = make(2, 5, 11, 4)
    h, w = leaves(hidden, weight)
    out = chunked_loss("emo", h, w, labels, cost_embedding=fixed)
    out.loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="inplace"):
        out.loss.backward()
