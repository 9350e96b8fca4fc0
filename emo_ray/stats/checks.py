"""Input checks shared by every procedure: a bad input fails naming the problem (shape, length,
nan/inf, a score passed as correctness), never as a silently wrong number."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ArrayLike = Sequence[float] | Sequence[bool] | np.ndarray


def _finite_1d(values: ArrayLike, name: str, min_len: int = 1) -> np.ndarray:
    """``values`` as a 1-D float array; ValueError naming the problem (shape, length, nan/inf)."""
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D sequence, got shape {arr.shape}")
    if len(arr) < min_len:
        raise ValueError(f"{name}: needs at least {min_len} value(s), got {len(arr)}")
    bad = np.flatnonzero(~np.isfinite(arr))
    if len(bad):
        raise ValueError(f"{name}: {len(bad)} non-finite value(s) (nan/inf) at positions {bad[:10].tolist()}")
    return arr


def _bool_1d(values: ArrayLike, name: str) -> np.ndarray:
    """Per-item correctness as a bool array; only True/False or 0/1 are accepted, because a
    score like 0.7 passed here by mistake would silently become True."""
    arr = _finite_1d(values, name)
    if not np.isin(arr, (0.0, 1.0)).all():
        raise ValueError(f"{name}: correctness must be booleans or 0/1, got other values")
    return arr.astype(bool)


def _same_length(a: np.ndarray, b: np.ndarray) -> None:
    if len(a) != len(b):
        raise ValueError(f"paired arms differ in length: {len(a)} vs {len(b)}; "
                         "both must score the same items (or seeds) in the same order")


def _check_level(level: float, name: str = "level") -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {level}")
