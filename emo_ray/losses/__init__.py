"""Objectives as pure functions of ``(logits, labels, *, hyperparameters)`` and one registry.

    from emo_ray.losses import get_loss
    loss_fn = get_loss("emo", cost_embedding=head_weight)
    out = loss_fn(logits, labels)         # LossOutput(loss, n_tokens, metrics)
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

from emo_ray.losses.common import IGNORE_INDEX, LossOutput
from emo_ray.losses.emo import emo_loss
from emo_ray.losses.mixce import mixce_loss
from emo_ray.losses.mle import mle_loss
from emo_ray.losses.tailr import tailr_loss, tvd_loss


@dataclass(frozen=True)
class LossSpec:
    """A registry entry: the function, the keyword arguments that pin this named variant, and
    whether the caller must bind a cost embedding."""

    fn: Callable[..., LossOutput]
    pinned: dict[str, Any] = field(default_factory=dict)
    needs_cost_embedding: bool = False


LOSSES: dict[str, LossSpec] = {
    "mle": LossSpec(mle_loss),
    "tailr": LossSpec(tailr_loss),
    "tvd": LossSpec(tvd_loss),
    "mixce": LossSpec(mixce_loss),
    "emo": LossSpec(emo_loss, {"mode": 1, "level": "token", "ratio_cap": None, "exclude_target": False}, True),
    "emo_capped": LossSpec(emo_loss, {"mode": 1, "level": "token", "ratio_cap": 3.0, "exclude_target": False}, True),
    "emo_mode2": LossSpec(emo_loss, {"mode": 2, "level": "token", "ratio_cap": None, "exclude_target": False}, True),
    "emo_exclude_target": LossSpec(
        emo_loss, {"mode": 1, "level": "token", "ratio_cap": None, "exclude_target": True}, True
    ),
    "emo_batch": LossSpec(emo_loss, {"mode": 1, "level": "batch", "ratio_cap": None, "exclude_target": False}, True),
}


def get_spec(name: str) -> LossSpec:
    if name not in LOSSES:
        raise ValueError(f"{name!r} is not a supported loss; choose one of {sorted(LOSSES)}")
    return LOSSES[name]


def hyperparameters(name: str) -> dict[str, Any]:
    """The tunable keyword arguments of ``name`` with their defaults (pinned ones excluded)."""
    spec = get_spec(name)
    params = inspect.signature(spec.fn).parameters
    return {
        k: p.default
        for k, p in params.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
        and k not in spec.pinned
        and k not in ("cost_embedding", "ignore_index")
    }


def check_hparams(name: str, hparams: dict[str, Any]) -> None:
    """Raise early, naming the valid choices, on a hyperparameter the loss does not take."""
    spec = get_spec(name)
    allowed = hyperparameters(name)
    for key in hparams:
        if key in spec.pinned:
            raise ValueError(f"{key!r} is pinned to {spec.pinned[key]!r} by the named variant {name!r}")
        if key not in allowed:
            raise ValueError(f"loss {name!r} takes no hyperparameter {key!r}; valid: {sorted(allowed)}")


def get_loss(name: str, *, cost_embedding=None, ignore_index: int = IGNORE_INDEX, **hparams) -> Callable[..., LossOutput]:
    """Bind a named objective to its hyperparameters (and cost embedding, for EMO variants)."""
    spec = get_spec(name)
    check_hparams(name, hparams)
    kwargs = {**spec.pinned, **hparams, "ignore_index": ignore_index}
    if spec.needs_cost_embedding:
        if cost_embedding is None:
            raise ValueError(f"loss {name!r} needs a cost_embedding (V, d)")
        kwargs["cost_embedding"] = cost_embedding
    return functools.partial(spec.fn, **kwargs)


__all__ = ["LOSSES", "LossOutput", "LossSpec", "IGNORE_INDEX", "get_loss", "get_spec", "check_hparams", "hyperparameters"]
