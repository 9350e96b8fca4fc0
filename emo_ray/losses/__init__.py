"""Objectives as pure functions of ``(logits, labels, *, hyperparameters)`` and one registry.

    from emo_ray.losses import get_loss
    loss_fn = get_loss("emo", cost_embedding=head_weight)
    out = loss_fn(logits, labels)         # LossOutput(loss, n_tokens, metrics)

Each objective is written once, as a mix of per-token terms (``LossSpec.mix``, see
:data:`emo_ray.losses.common.Mix`); the materialised loss (``LossSpec.fn``) and the chunked one
(``emo_ray.losses.chunked``) differ only in how they compute those terms. Hyperparameters, their
defaults and their valid ranges are read from ``fn``'s signature (``gamma: Unit = 0.8``).
"""
from __future__ import annotations

import functools
import inspect
import typing
from dataclasses import dataclass, field
from typing import Any, Callable

from emo_ray.losses.common import IGNORE_INDEX, LossOutput, Mix
from emo_ray.losses.emo import emo_loss, emo_mix, emo_option_error
from emo_ray.losses.mixce import mixce_loss, mixce_mix
from emo_ray.losses.mle import mle_loss, mle_mix
from emo_ray.losses.tailr import tailr_loss, tailr_mix, tvd_loss, tvd_mix


@dataclass(frozen=True)
class LossSpec:
    """A registry entry: the materialised loss ``fn(logits, labels, *, hparams)``, the keyword
    arguments that pin this named variant, whether the caller must bind a cost embedding, and its
    per-token formula ``mix`` (which ``fn`` computes through, and the chunked path too). An entry
    without a ``mix`` (e.g. a plugin's ``LossSpec(my_loss)``) has no chunked form. ``option_error``
    (optional) checks constraints *between* hyperparameters: called with every resolved keyword
    argument, it returns why the combination is invalid, or ``None``."""

    fn: Callable[..., LossOutput]
    pinned: dict[str, Any] = field(default_factory=dict)
    needs_cost_embedding: bool = False
    mix: Mix | None = None
    option_error: Callable[..., str | None] | None = None


_EMO = {"mode": 1, "level": "token", "ratio_cap": None, "exclude_target": False}

LOSSES: dict[str, LossSpec] = {
    "mle": LossSpec(mle_loss, mix=mle_mix),
    "tailr": LossSpec(tailr_loss, mix=tailr_mix),
    "tvd": LossSpec(tvd_loss, mix=tvd_mix),
    "mixce": LossSpec(mixce_loss, mix=mixce_mix),
    "emo": LossSpec(emo_loss, _EMO, True, emo_mix),
    "emo_capped": LossSpec(emo_loss, {**_EMO, "ratio_cap": 3.0}, True, emo_mix),
    "emo_mode2": LossSpec(emo_loss, {**_EMO, "mode": 2}, True, emo_mix),
    "emo_exclude_target": LossSpec(emo_loss, {**_EMO, "exclude_target": True}, True, emo_mix),
    "emo_batch": LossSpec(emo_loss, {**_EMO, "level": "batch"}, True, emo_mix),
    "emo_mode2_exclude_target": LossSpec(emo_loss, {**_EMO, "mode": 2, "exclude_target": True}, True, emo_mix),
    # Nothing pinned: every EMO option is a hyperparameter (defaults those of "emo"), for the
    # combinations no preset above covers.
    "emo_custom": LossSpec(emo_loss, {}, True, emo_mix, emo_option_error),
}


def _unpinned_sibling(name: str, key: str) -> str | None:
    """A registered entry with the same loss function in which ``key`` is tunable (for EMO presets:
    ``emo_custom``), to name in the error when a preset's pinned key is set."""
    fn = get_spec(name).fn
    for other, spec in LOSSES.items():
        if other != name and spec.fn is fn and key not in spec.pinned and key in hyperparameters(other):
            return other
    return None


def has_chunked_form(name: str) -> bool:
    """Whether ``emo_ray.losses.chunked`` can compute ``name``: it has a per-token ``mix``."""
    return get_spec(name).mix is not None


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


def hparam_ranges(name: str) -> dict[str, Any]:
    """Valid values of every keyword argument of ``name``'s loss that declares them, read from the
    ``Annotated`` metadata of its signature (``gamma: Unit``): ``{key: Interval | OneOf}``."""
    hints = typing.get_type_hints(get_spec(name).fn, include_extras=True)
    return {
        key: meta
        for key, hint in hints.items()
        if typing.get_origin(hint) is typing.Annotated
        for meta in hint.__metadata__
        if hasattr(meta, "contains")
    }


def check_hparams(name: str, hparams: dict[str, Any]) -> None:
    """Raise early on a hyperparameter the loss does not take (naming the valid ones) or a value
    outside its declared range (naming the loss, key, value and range): a config fails when it is
    loaded, not inside a worker."""
    spec = get_spec(name)
    allowed = hyperparameters(name)
    ranges = hparam_ranges(name)
    for key, value in hparams.items():
        if key in spec.pinned:
            sibling = _unpinned_sibling(name, key)
            hint = f"; to choose it, use the loss {sibling!r} ({key}={value!r})" if sibling else ""
            raise ValueError(f"{key!r} is pinned to {spec.pinned[key]!r} by the named variant {name!r}{hint}")
        if key not in allowed:
            raise ValueError(f"loss {name!r} takes no hyperparameter {key!r}; valid: {sorted(allowed)}")
        if key in ranges and not ranges[key].contains(value):
            raise ValueError(f"loss {name!r}: {key} must lie in {ranges[key]}, got {value!r}")
    if spec.option_error is not None:
        error = spec.option_error(**{**hyperparameters(name), **spec.pinned, **hparams})
        if error:
            raise ValueError(f"loss {name!r}: {error}")


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


__all__ = [
    "LOSSES", "LossOutput", "LossSpec", "IGNORE_INDEX", "Mix", "check_hparams", "get_loss", "get_spec", "hparam_ranges",
    "has_chunked_form", "hyperparameters",
]
