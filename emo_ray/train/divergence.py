"""When a run must stop as diverged: a non-finite loss or gradient norm, too many fp16 overflow
skips in a row, or a dead model."""
from __future__ import annotations

import math


class TrainingDiverged(RuntimeError):
    """A non-finite loss or gradient norm, or a dead model (gradient norm 0 step after step): the
    run stops, its weights are never exported."""


def divergence(step: int, loss: float, grad_norm: float | None, consecutive_skips: int = 0,
               zero_grad_steps: int = 0, *, overflow_patience: int = 10, dead_patience: int = 3) -> str | None:
    """Why the run must stop at this step (``TrainingDiverged: ...``), or None.

    * a non-finite loss, always;
    * a non-finite gradient norm, unless the step was one that fp16 dynamic loss scaling skipped
      on purpose (``consecutive_skips`` > 0, up to ``overflow_patience`` in a row; fp32 and bf16
      never skip steps);
    * a dead model: a gradient norm of exactly 0 for ``dead_patience`` steps in a row
      (``zero_grad_steps``). Seen with ``train.lr=1e6``: one step saturates the network, the loss
      sits at ln V and nothing can move it again, yet every number stays finite."""
    if not math.isfinite(float(loss)):
        return f"TrainingDiverged: non-finite loss ({loss}) at step {step}"
    if consecutive_skips > overflow_patience:
        return f"TrainingDiverged: {consecutive_skips} consecutive overflow-skipped steps at step {step}"
    if grad_norm is not None and not math.isfinite(float(grad_norm)) and not consecutive_skips:
        return f"TrainingDiverged: non-finite gradient norm ({grad_norm}) at step {step}"
    if zero_grad_steps >= dead_patience:
        return (f"TrainingDiverged: dead model, gradient norm 0 for {zero_grad_steps} steps in a row at step "
                f"{step} (loss {float(loss):.4g}); no further step can change it (learning rate too high?)")
    return None


class DivergenceGuard:
    """The counts :func:`divergence` needs, kept step after step. Its inputs (the loss averaged over
    the ranks, the global gradient norm, the engine's skip count) are the same on every rank, so
    every rank decides alike."""

    def __init__(self, *, overflow_patience: int, dead_patience: int, skipped_steps: int = 0):
        self.overflow_patience, self.dead_patience = overflow_patience, dead_patience
        self.skipped_before = skipped_steps  # DeepSpeed's count of fp16 overflow-skipped steps so far
        self.skips = 0  # overflow skips in a row
        self.zero_grads = 0  # steps in a row with a gradient norm of exactly 0 (a dead model)

    def check(self, step: int, loss: float, grad_norm: float | None, *, tokens: float, skipped_steps: int) -> str | None:
        """After each step: why the run must stop (``TrainingDiverged: ...``), or None.
        ``tokens``: the step's trained tokens over the ranks; ``skipped_steps``: the engine's count."""
        self.skips = self.skips + 1 if skipped_steps > self.skipped_before else 0
        self.skipped_before = skipped_steps
        # a step that trained no token (all targets masked, e.g. prompt-only instruction blocks)
        # has a zero gradient by construction: it neither counts as dead nor resets the count
        if tokens > 0:
            self.zero_grads = self.zero_grads + 1 if grad_norm is not None and float(grad_norm) == 0.0 and not self.skips else 0
        return divergence(step, loss, grad_norm, self.skips, self.zero_grads,
                          overflow_patience=self.overflow_patience, dead_patience=self.dead_patience)
