"""How each objective mixes its per-token terms, for the chunked path (``emo_ray.losses.chunked``).

The chunked kernel reduces every objective to two per-token terms, ``mle_t = -log p_t(y_t)`` and
``emo_t`` (Eq. 14 DEMD bound, with the ``exclude_target`` shift already applied), plus a function
that turns them into the scalar loss. That function is differentiated with autograd on the
``(N,)`` vectors only: ``g_mle_t = dL/d mle_t`` and ``g_emo_t = dL/d emo_t`` are the per-token weights
of the two logit gradients, so stop-gradients, caps and epsilons are exactly the reference's.

Every entry has the signature ``(mle, emo, mask, **kwargs) -> (loss, extra_metrics)`` where
``kwargs`` are the registry's pinned settings plus the hyperparameters (defaults read from the
reference function's signature, never restated here).
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from emo_ray.losses.common import masked_mean
from emo_ray.losses.emo import dynamic_weighting
from emo_ray.losses.tailr import _check_gamma

Combine = Callable[..., "tuple[torch.Tensor, dict[str, torch.Tensor]]"]


def _mle(mle: torch.Tensor, emo: torch.Tensor | None, mask: torch.Tensor) -> tuple[torch.Tensor, dict]:
    return masked_mean(mle, mask), {}


def _tailr(mle, emo, mask, *, gamma: float, min_weight: float | None):
    """Eq. 16: ``sg(p / (gamma + (1 - gamma) p)) * mle`` (``p = exp(-mle)`` is the target prob)."""
    _check_gamma(gamma)
    with torch.no_grad():
        p = (-mle).exp()
        weight = p / (gamma + (1.0 - gamma) * p)
        if min_weight is not None:
            weight = weight.clamp_min(min_weight)
    return masked_mean(weight * mle, mask), {"tailr_weight": masked_mean(weight, mask)}


def _tvd(mle, emo, mask, *, gamma: float):
    """The DRSY/EMO ``tvd`` baseline (see :func:`emo_ray.losses.tailr.tvd_loss`)."""
    _check_gamma(gamma)
    with torch.no_grad():
        p = (-mle).exp()
        weight = gamma + (1.0 - gamma) * (p / ((1.0 - gamma) + gamma * p)).clamp(0.2, 1.0)
    return masked_mean(weight * mle, mask), {}


def _mixce(mle, emo, mask, *, gamma: float):
    """Eq. 17: ``(gamma + (1 - gamma) sg(p)) * mle``."""
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must lie in [0, 1], got {gamma}")
    weight = gamma + (1.0 - gamma) * (-mle.detach()).exp()
    return masked_mean(weight * mle, mask), {}


def _emo(mle, emo, mask, *, mode: int, level: str, ratio_cap: float | None, exclude_target: bool):
    """Eq. 18, the reference's own :func:`dynamic_weighting` (``exclude_target`` is already in
    ``emo``: the kernel adds ``sg(p_y)`` to it)."""
    del exclude_target
    return dynamic_weighting(mle, emo, mask, mode=mode, level=level, ratio_cap=ratio_cap), {}


# Registry name -> mixing function. Which variant is which comes from LOSSES[name].pinned.
COMBINE: dict[str, Combine] = {
    "mle": _mle,
    "tailr": _tailr,
    "tvd": _tvd,
    "mixce": _mixce,
    "emo": _emo,
    "emo_capped": _emo,
    "emo_mode2": _emo,
    "emo_exclude_target": _emo,
    "emo_batch": _emo,
}


def token_weights(
    combine: Combine, kwargs: dict[str, Any], mle: torch.Tensor, emo: torch.Tensor | None, scale: float
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(dL/d mle_t, dL/d emo_t)`` for one chunk of a per-token objective.

    The chunk's masked mean times ``scale = n_chunk / n_total`` is its share of the batch mean, so
    these are the exact per-token weights of the full loss. ``None`` for a term the loss ignores.
    """
    with torch.enable_grad():
        m = mle.detach().requires_grad_(True)
        e = None if emo is None else emo.detach().requires_grad_(True)
        ones = torch.ones_like(m, dtype=torch.bool)
        loss, _ = combine(m, e, ones, **kwargs)
        inputs = (m,) if e is None else (m, e)
        grads = torch.autograd.grad(loss * scale, inputs, allow_unused=True)
    g_mle = grads[0] if grads[0] is not None else torch.zeros_like(m)
    g_emo = grads[1] if len(grads) > 1 else None
    return g_mle, g_emo
