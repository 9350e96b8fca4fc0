"""Maximum likelihood: forward cross-entropy."""
from __future__ import annotations

import torch

from emo_ray.losses.common import IGNORE_INDEX, LossOutput, masked_mean, shift_and_flatten, token_logprobs


def mle_loss(logits: torch.Tensor, labels: torch.Tensor, *, ignore_index: int = IGNORE_INDEX) -> LossOutput:
    r"""Forward cross-entropy, mean over target tokens.

    .. math:: \mathcal{L}_{MLE} = -\frac{1}{N}\sum_t \log p_\theta(y_t \mid y_{<t})

    Shape:
        logits ``(B, T, V)``, labels ``(B, T)`` (shifted inside).
    """
    flat_logits, safe_labels, mask = shift_and_flatten(logits, labels, ignore_index)
    _, logp_y = token_logprobs(flat_logits, safe_labels)
    nll = -logp_y
    loss = masked_mean(nll, mask)
    return LossOutput(loss, int(mask.sum()), {"mle": float(loss.detach())})
