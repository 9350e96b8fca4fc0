"""Per-token gradient weights of an objective's mix, for the chunked path (``emo_ray.losses.chunked``).

The chunked kernel computes the per-token terms ``mle_t = -log p_t(y_t)`` and, for EMO, the raw
DEMD bound ``demd_t`` (Eq. 14); the objective's own formula, ``LossSpec.mix`` (the very function
the materialised loss calls), turns them into the scalar loss. That mix is differentiated with
autograd on the ``(N,)`` vectors only: ``g_mle_t = dL/d mle_t`` and ``g_emo_t = dL/d demd_t`` are
the per-token weights of the two closed-form logit gradients, so stop-gradients, caps, the
``exclude_target`` shift and epsilons are exactly the materialised loss's, by construction.
"""
from __future__ import annotations

from typing import Any

import torch

from emo_ray.losses.common import Mix


def token_weights(
    mix: Mix, kwargs: dict[str, Any], mle: torch.Tensor, emo: torch.Tensor | None, scale: float
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(dL/d mle_t, dL/d demd_t)`` for one chunk of a per-token objective.

    The chunk's masked mean times ``scale = n_chunk / n_total`` is its share of the batch mean, so
    these are the exact per-token weights of the full loss. ``None`` for a term the loss ignores.
    """
    with torch.enable_grad():
        m = mle.detach().requires_grad_(True)
        e = None if emo is None else emo.detach().requires_grad_(True)
        ones = torch.ones_like(m, dtype=torch.bool)
        loss, _ = mix(m, e, ones, **kwargs)
        inputs = (m,) if e is None else (m, e)
        grads = torch.autograd.grad(loss * scale, inputs, allow_unused=True)
    g_mle = grads[0] if grads[0] is not None else torch.zeros_like(m)
    g_emo = grads[1] if len(grads) > 1 else None
    return g_mle, g_emo
