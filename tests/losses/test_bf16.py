"""bf16 training numerics: every objective, materialised and chunked, under
``torch.autocast("cpu", dtype=torch.bfloat16)`` with fp32 weights (what ``train.precision=bf16``
runs on CPU), against the float64 reference of the same inputs.

Stated tolerances (relative to the tensor's largest entry, hidden-state / head / bias gradients):
loss value within ``LOSS_RTOL`` = 1e-3, gradients within ``GRAD_RTOL`` = 2e-2 (measured on this
shape: loss 1e-5..7e-5, gradients 4e-3..8e-3 for every objective, both implementations). bf16
keeps 8 mantissa bits (rounding 2^-9 = 0.2 %) and the matmuls accumulate in fp32, so logits and
gradient matmuls are off by ~0.2-0.8 % of their scale; softmax, EMO transport sums and the loss
are fp32, which the dispatch check below pins down."""
from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from emo_ray.losses import LOSSES, get_loss
from emo_ray.losses.chunked import chunked_loss
from emo_ray.losses.common import matmul_dtype

NAMES = sorted(LOSSES)
HPARAMS = {"tailr": {"gamma": 0.3, "min_weight": 0.05}, "tvd": {"gamma": 0.6}, "mixce": {"gamma": 0.4}}
SHAPE = (2, 41, 2003, 64)  # (B, T, V, d)
LOSS_RTOL, GRAD_RTOL = 1e-3, 2e-2


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make(seed=0):
    B, T, V, d = SHAPE
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, T, d, generator=g)
    weight = torch.randn(V, d, generator=g) * 0.25
    bias = torch.randn(V, generator=g) * 0.3
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[torch.rand(B, T, generator=g) < 0.15] = -100
    fixed = torch.randn(V, d, generator=g)
    return hidden, weight, bias, labels, fixed


def leaves(*ts, dtype=torch.float32):
    return [t.detach().to(dtype).clone().requires_grad_(True) for t in ts]


def rel_err(a, b) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30))


def float64_reference(name, hidden, weight, bias, labels, fixed, adaptive):
    h, w, b = leaves(hidden, weight, bias, dtype=torch.float64)
    cost = (w if adaptive else fixed.double()) if LOSSES[name].needs_cost_embedding else None
    out = get_loss(name, cost_embedding=cost, **HPARAMS.get(name, {}))(h @ w.T + b, labels)
    out.loss.backward()
    return out.loss.detach(), (h.grad, w.grad, b.grad)


def run_bf16(name, impl, hidden, weight, bias, labels, fixed, adaptive):
    h, w, b = leaves(hidden, weight, bias)
    cost = (w if adaptive else fixed) if LOSSES[name].needs_cost_embedding else None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        if impl == "chunked":
            out = chunked_loss(name, h, w, labels, head_bias=b, cost_embedding=cost, chunk_size=29,
                               **HPARAMS.get(name, {}))
        else:
            logits = torch.nn.functional.linear(h, w, b)
            assert logits.dtype == torch.bfloat16  # the matmul really ran in bf16
            out = get_loss(name, cost_embedding=cost, **HPARAMS.get(name, {}))(logits, labels)
    assert out.loss.dtype == torch.float32  # the loss itself is fp32
    out.loss.backward()
    assert h.grad.dtype == w.grad.dtype == b.grad.dtype == torch.float32  # fp32 master gradients
    return out.loss.detach(), (h.grad, w.grad, b.grad)


@pytest.mark.parametrize("impl", ["materialised", "chunked"])
@pytest.mark.parametrize("name", NAMES)
def test_bf16_value_and_gradients_within_tolerance_of_float64(name, impl):
    data = make()
    adaptive = False
    ref_loss, ref_grads = float64_reference(name, *data, adaptive)
    loss, grads = run_bf16(name, impl, *data, adaptive)
    assert rel_err(loss, ref_loss) < LOSS_RTOL, (name, impl, rel_err(loss, ref_loss))
    for which, g, r in zip(("hidden", "head", "bias"), grads, ref_grads):
        assert rel_err(g, r) < GRAD_RTOL, (name, impl, which, rel_err(g, r))


@pytest.mark.parametrize("impl", ["materialised", "chunked"])
def test_bf16_adaptive_cost_embedding(impl):
    data = make(seed=1)
    ref_loss, ref_grads = float64_reference("emo", *data, True)
    loss, grads = run_bf16("emo", impl, *data, True)
    assert rel_err(loss, ref_loss) < LOSS_RTOL
    for g, r in zip(grads, ref_grads):
        assert rel_err(g, r) < GRAD_RTOL


class _Recorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: list[tuple[str, tuple]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        dtypes = tuple(a.dtype for a in args if isinstance(a, torch.Tensor))
        self.ops.append((func.__name__, dtypes))
        return func(*args, **(kwargs or {}))


def test_chunked_under_autocast_runs_matmuls_in_bf16_and_softmax_in_fp32():
    hidden, weight, bias, labels, fixed = make()
    h, w, b = leaves(hidden, weight, bias)
    with torch.autocast("cpu", dtype=torch.bfloat16), _Recorder() as rec:
        chunked_loss("emo", h, w, labels, head_bias=b, cost_embedding=fixed, chunk_size=29)
    mms = [d for op, d in rec.ops if op.split(".")[0] in ("mm", "addmm")]
    softmax = [d for op, d in rec.ops if "log_softmax" in op]
    assert mms and all(set(d) == {torch.bfloat16} for d in mms), mms
    assert softmax and all(set(d) == {torch.float32} for d in softmax), softmax


def test_chunked_fp32_outside_autocast_unchanged():
    hidden, weight, bias, labels, fixed = make()
    h, w, b = leaves(hidden, weight, bias)
    assert matmul_dtype(h) == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert matmul_dtype(h) == torch.bfloat16
        assert matmul_dtype(h.double()) == torch.float64  # as autocast: fp64 is not cast
        assert matmul_dtype(h.bfloat16()) == torch.bfloat16
    with _Recorder() as rec:
        chunked_loss("emo", h, w, labels, head_bias=b, cost_embedding=fixed, chunk_size=29)
    mms = [d for op, d in rec.ops if op.split(".")[0] in ("mm", "addmm")]
    assert mms and all(set(d) == {torch.float32} for d in mms)
