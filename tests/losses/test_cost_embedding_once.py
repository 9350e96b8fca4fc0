"""The fixed cost embedding is moved to the device and prepared once, not at every micro-step
(issue 27.8). At ZeRO 0-2 the worker builds the objective on the host model, before DeepSpeed
moves the model to the GPU, so the fixed table is a host tensor; the losses used to copy it to
the device and re-normalise it (and, under autocast, re-cast the normalised table) every call.

Counted under ``FakeCuda`` (tests/fake_accelerator.py, the model on a fake ``cuda:0``): the
V x d work done on non-parameter tensors (host-to-device copies, row norms, dtype casts) must not
grow with the number of steps."""
from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from emo_ray.config import load_config
from tests.fake_accelerator import FakeCuda, on_device

T = torch.Tensor


class TableWork(TorchFunctionMode):
    """Counts torch calls on a (V, d) tensor that is not a parameter: copies to the device,
    row norms and dtype casts of the cost table."""

    def __init__(self, shape):
        super().__init__()
        self.shape, self.counts = tuple(shape), {"to_device": 0, "norm": 0, "cast": 0}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        src = args[0] if args else None
        table = isinstance(src, T) and not isinstance(src, torch.nn.Parameter) and tuple(src.shape) == self.shape
        if table and func is T.to and isinstance(out, T):
            if on_device(out) and not on_device(src):
                self.counts["to_device"] += 1
            elif out.dtype != src.dtype:
                self.counts["cast"] += 1
        if table and func is torch.linalg.vector_norm:
            self.counts["norm"] += 1
        return out


def _work_after(steps: int, impl: str, autocast: bool) -> dict:
    from transformers import AutoModelForCausalLM

    from emo_ray.models import materialize
    from emo_ray.train.objective import build_objective

    cfg = load_config(None, ["model.name=tiny-llama", "train.loss=emo", f"train.loss_impl={impl}",
                             "train.cost_embedding=fixed"])
    model = AutoModelForCausalLM.from_pretrained(materialize("tiny-llama"), dtype=torch.float32)
    model.config.use_cache = False
    objective = build_objective(cfg, model)  # on the host, as the worker does at ZeRO 0-2
    assert objective.chunked == (impl == "chunked")
    ids = torch.randint(0, 257, (2, 12), generator=torch.Generator().manual_seed(0))
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    with FakeCuda() as dev:
        dev.place(model)  # deepspeed.initialize: the module goes to the GPU, the fixed table does not
        with TableWork(objective.cost_embedding_shape) as work:
            for _ in range(steps):
                with amp:
                    out = objective.compute(model, ids.to("cuda"))
                out.loss.backward()
                assert np.isfinite(out.loss.item())
    return work.counts


@pytest.mark.parametrize("impl", ["chunked", "reference"])
def test_the_fixed_table_is_moved_once_not_per_step(impl):
    one, four = _work_after(1, impl, autocast=False), _work_after(4, impl, autocast=False)
    assert one["to_device"] == 1 and four["to_device"] == 1  # it does reach the device, once
    # Moved, row-normalised (and for the chunked path cast) once, whatever the number of steps.
    assert four == one and one["norm"] == 1, f"1 step {one}, 4 steps {four}"


def test_under_autocast_the_normalised_low_precision_table_is_made_once():
    """bf16 autocast (CPU here, CUDA's is the same code path): the chunk loop's Ê in bf16 is cast
    once, not per call."""
    from emo_ray.losses.chunked import CostEmbedding, chunked_loss

    g = torch.Generator().manual_seed(1)
    V, d = 40, 8
    h = torch.randn(2, 6, d, generator=g, requires_grad=True)
    w = torch.nn.Parameter(torch.randn(V, d, generator=g))  # the head: cast per call, as autocast's linear
    labels = torch.randint(0, V, (2, 6), generator=g)
    table = CostEmbedding(torch.randn(V, d, generator=g))

    def work(calls: int) -> dict:
        with TableWork((V, d)) as counter, torch.autocast("cpu", dtype=torch.bfloat16):
            for _ in range(calls):
                chunked_loss("emo", h, w, labels, cost_embedding=table, chunk_size=5).loss.backward()
        return counter.counts

    first, later = work(1), work(3)
    assert first["cast"] == 1 and first["norm"] == 1  # the bf16 Ê, its norms: made at first use ...
    assert later == {"to_device": 0, "norm": 0, "cast": 0}  # ... and never again
    (prepared,) = table._prepared.values()
    assert prepared[2].dtype == torch.bfloat16


def test_a_prepared_table_gives_the_same_loss_and_gradients():
    """The chunked loss with a CostEmbedding equals the chunked loss with the raw tensor."""
    from emo_ray.losses.chunked import CostEmbedding, chunked_loss

    g = torch.Generator().manual_seed(0)
    V, d = 40, 8
    h = torch.randn(2, 6, d, generator=g, requires_grad=True)
    w = torch.randn(V, d, generator=g, requires_grad=True)
    labels = torch.randint(0, V, (2, 6), generator=g)
    e = torch.randn(V, d, generator=g)
    table = CostEmbedding(e)
    results = []
    for cost in (e, table, table):  # the second use of the table reads the prepared copy
        out = chunked_loss("emo", h, w, labels, cost_embedding=cost, chunk_size=5)
        gh, gw = torch.autograd.grad(out.loss, (h, w))
        results.append((out.loss.detach(), gh, gw))
    for loss, gh, gw in results[1:]:
        torch.testing.assert_close(loss, results[0][0], rtol=0, atol=0)
        torch.testing.assert_close(gh, results[0][1], rtol=0, atol=0)
        torch.testing.assert_close(gw, results[0][2], rtol=0, atol=0)
    assert len(table._prepared) == 1
