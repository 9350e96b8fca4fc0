"""The CPU optimizer of issue 26: ``train.optimizer_impl`` selects torch AdamW's kernel, and the
fused kernel (the default) trains to the same parameters as the single-tensor loop that CPU runs
used before (torch's CPU default), within float32 rounding.

The optimizer is built the way DeepSpeed builds it from the config we write
(``DeepSpeedEngine.get_optimizer_configuration`` on the ``torch_adam`` path), so a config field
that never reached the optimizer would fail here."""
from __future__ import annotations

import pytest
import torch

from emo_ray.config import load_config
from emo_ray.train.deepspeed_setup import deepspeed_config

STEPS = 6
# Fused and single-tensor AdamW do the same float32 arithmetic in another order (the fused kernel
# folds the bias corrections into one step size); after 6 steps of lr 1e-2 (weights move by up to
# ~6e-2) they differ by at most one float32 ulp of weights of order 1 (1.2e-7 measured; foreach:
# bit-identical). 1e-6 absolute is ~10x that and ~2e-5 of the distance travelled.
ATOL = 1e-6


def deepspeeds_adamw(overrides: list[str], params):
    """The optimizer DeepSpeed builds for ``deepspeed_config`` of a CPU config with these overrides."""
    from deepspeed.runtime.engine import DeepSpeedEngine

    rest = dict(deepspeed_config(load_config(None, overrides))["optimizer"]["params"])
    assert rest.get("torch_adam"), "without torch_adam DeepSpeed builds a JIT-compiled op"
    cls, extra = DeepSpeedEngine.get_optimizer_configuration(None, rest, True)
    return cls(params, **rest, **extra)


def tiny_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Embedding(50, 16), torch.nn.Linear(16, 32), torch.nn.GELU(),
                               torch.nn.Linear(32, 50))


def train(overrides: list[str], steps: int = STEPS) -> tuple[list[torch.Tensor], list[float]]:
    """Parameters and losses after ``steps`` AdamW steps on a fixed next-token batch."""
    model = tiny_model()
    opt = deepspeeds_adamw(overrides, model.parameters())
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 50, (8, 12), generator=gen)
    losses = []
    for _ in range(steps):
        logits = model(ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 50), ids[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return [p.detach().clone() for p in model.parameters()], losses


HPARAMS = ["train.lr=1e-2", "train.weight_decay=0.1", "train.betas=[0.8,0.95]"]


def test_the_config_selects_the_kernel():
    p = [torch.nn.Parameter(torch.ones(3))]
    default = deepspeeds_adamw([], p)
    assert type(default) is torch.optim.AdamW
    assert default.defaults["fused"] is True and not default.defaults["foreach"]  # the CPU default since issue 26
    loop = deepspeeds_adamw(["train.optimizer_impl=for-loop"], p)
    assert not loop.defaults["fused"] and loop.defaults["foreach"] is False
    foreach = deepspeeds_adamw(["train.optimizer_impl=foreach"], p)
    assert foreach.defaults["foreach"] is True and not foreach.defaults["fused"]


def test_a_bad_optimizer_impl_is_refused_naming_the_field():
    with pytest.raises(Exception, match="optimizer_impl"):
        load_config(None, ["train.optimizer_impl=apex"])


@pytest.mark.parametrize("impl", ["fused", "foreach"])
def test_same_parameters_as_the_single_tensor_adamw(impl):
    ref, ref_losses = train(HPARAMS + ["train.optimizer_impl=for-loop"])
    got, losses = train(HPARAMS + [f"train.optimizer_impl={impl}"])
    start = [p.detach() for p in tiny_model().parameters()]
    moved = max((r - s).abs().max().item() for r, s in zip(ref, start))
    assert moved > 1e-2  # the steps did move the weights: equality below is not trivially true
    diff = max((g - r).abs().max().item() for g, r in zip(got, ref))
    assert diff <= ATOL, f"{impl}: max |delta param| {diff:.3g} after {STEPS} steps"
    assert losses == pytest.approx(ref_losses, rel=1e-5)
    assert losses[-1] < losses[0]


def test_hyperparameters_reach_the_fused_kernel():
    """A different beta2 or weight decay must change the fused result: the kwargs are not dropped."""
    base, _ = train(HPARAMS)
    other, _ = train(["train.lr=1e-2", "train.weight_decay=0.0", "train.betas=[0.8,0.95]"])
    assert max((a - b).abs().max().item() for a, b in zip(base, other)) > 10 * ATOL
