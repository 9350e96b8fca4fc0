"""MixCE (Zhang et al., ACL 2023), EMO paper Eq. 17."""
from __future__ import annotations

import torch

from emo_ray.losses.common import IGNORE_INDEX, LossOutput, masked_mean, shift_and_flatten, token_logprobs


def mixce_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    gamma: float = 0.8,
    ignore_index: int = IGNORE_INDEX,
) -> LossOutput:
    r"""MixCE, EMO paper Eq. 17 (``gamma`` is bloomberg/MixCE-acl2023's ``eta``).

    .. math:: \mathcal{L} = -\frac{1}{N}\sum_t \big(\gamma + (1-\gamma)\,\mathrm{sg}(p_t)\big)\log p_t

    ``gamma = 1`` gives MLE.

    Shape:
        logits ``(B, T, V)``, labels ``(B, T)``.
    """
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must lie in [0, 1], got {gamma}")
    flat_logits, safe_labels, mask = shift_and_flatten(logits, labels, ignore_index)
    _, logp_y = token_logprobs(flat_logits, safe_labels)
    weight = gamma + (1.0 - gamma) * logp_y.detach().exp()
    nll = -logp_y
    loss = masked_mean(weight * nll, mask)
    return LossOutput(loss, int(mask.sum()), {"mle": float(masked_mean(nll.detach(), mask))})
