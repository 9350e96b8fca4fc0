"""Maximum likelihood: forward cross-entropy."""
from __future__ import annotations

import torch

from emo_ray.losses.common import IGNORE_INDEX, LossOutput, masked_mean, mixed_output, target_nll


def mle_mix(mle: torch.Tensor, demd: torch.Tensor | None, mask: torch.Tensor) -> tuple[torch.Tensor, dict]:
    r""".. math:: \mathcal{L}_{MLE} = \frac{1}{N}\sum_t \mathrm{mle}_t, \quad \mathrm{mle}_t = -\log p_t

    Shape: mle, mask ``(N,)`` (see :data:`emo_ray.losses.common.Mix`)."""
    loss = masked_mean(mle, mask)
    return loss, {"mle": loss.detach()}


def mle_loss(logits: torch.Tensor, labels: torch.Tensor, *, ignore_index: int = IGNORE_INDEX) -> LossOutput:
    r"""Forward cross-entropy, mean over target tokens.

    .. math:: \mathcal{L}_{MLE} = -\frac{1}{N}\sum_t \log p_\theta(y_t \mid y_{<t})

    Shape:
        logits ``(B, T, V)``, labels ``(B, T)`` (shifted inside).
    """
    mle, mask = target_nll(logits, labels, ignore_index)
    return mixed_output(mle_mix(mle, None, mask), mask)
