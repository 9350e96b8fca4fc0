"""The one client-side writer of run records: finite numbers only (the rest counted), batches
within MLflow's per-call limits, and no curve step written twice after a resume.

MLflow rejects NaN in some stores and a NaN curve helps nobody, so every writer of the project
filters through ``finite`` and, where the caller names a ``count_key``, logs how many values it
left out instead. A resumed training run replays steps an earlier attempt logged already;
``logged_through`` is how far that was (MLflow's metric history keeps duplicates).
"""
from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from emo_ray.tracking.keys import NONFINITE

BATCH = 100
"""Params and tags per ``log_batch`` call (MLflow's limit; metrics allow 1000)."""


def finite(metrics: Mapping[str, Any]) -> tuple[dict[str, float], int]:
    """``(the finite numbers as floats, how many values were left out)``: None, NaN, inf and
    anything that is not a number are left out."""
    clean = {}
    for k, v in metrics.items():
        try:
            x = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(x):
            clean[k] = x
    return clean, len(metrics) - len(clean)


def log_metrics(metrics: Mapping[str, Any], step: int | None = None, count_key: str = NONFINITE) -> None:
    """Log finite numbers into the active run; non-finite values are counted under ``count_key``."""
    import mlflow

    clean, dropped = finite(metrics)
    if dropped:
        clean[count_key] = float(dropped)
    if clean:
        mlflow.log_metrics(clean, step=step)


def log_params_flat(params: Mapping[str, Any]) -> None:
    """MLflow params are strings of at most 6000 chars; log in batches of 100 (its limit)."""
    import mlflow

    items = [(k, str(v)[:6000]) for k, v in params.items()]
    for i in range(0, len(items), BATCH):
        mlflow.log_params(dict(items[i : i + BATCH]))


def metric_entities(metrics: Mapping[str, Any], step: int = 0, count_key: str | None = None,
                    timestamp: int | None = None) -> list:
    """MLflow ``Metric`` entities of the finite values; with ``count_key``, one more counting the
    values left out (when any were)."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000) if timestamp is None else timestamp
    clean, dropped = finite(metrics)
    if dropped and count_key:
        clean[count_key] = float(dropped)
    return [Metric(k, v, now, step) for k, v in clean.items()]


def log_batch(client, run_id: str, metrics: Mapping[str, Any] | None = None, params: Mapping[str, Any] | None = None,
              tags: Mapping[str, Any] | None = None, *, step: int = 0, count_key: str | None = None) -> int:
    """Log onto ``run_id`` through the client API, never activating the run (its status stays
    what it is): finite metrics, params (at most 6000 chars) and tags (with the first batch), in
    batches of ``BATCH``. Returns the number of metrics logged."""
    from mlflow.entities import Param, RunTag

    entities = metric_entities(metrics or {}, step, count_key)
    plist = [Param(k, str(v)[:6000]) for k, v in (params or {}).items()]
    tlist = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
    for i in range(0, max(len(plist), len(entities), 1), BATCH):
        client.log_batch(run_id, metrics=entities[i : i + BATCH], params=plist[i : i + BATCH],
                         tags=tlist if i == 0 else [])
    return len(entities)


def logged_through(client, run_id: str, key: str) -> int:
    """The last step ``key`` was logged at in the run (0: never). Store errors propagate."""
    return max((m.step for m in client.get_metric_history(run_id, key)), default=0)


def log_dataset(blocks, *, name: str, source: str, context: str = "training", tags: Mapping[str, Any] | None = None):
    """Log packed token blocks (``(n_blocks, block_size)`` ints) as an MLflow dataset input of the
    active run: name, digest of the tokens, source path, and the token count as an input tag."""
    import warnings

    import mlflow
    import mlflow.data
    from mlflow.data.http_dataset_source import HTTPDatasetSource

    src: Any = source
    if source.startswith("hf:"):
        src = HTTPDatasetSource(f"https://huggingface.co/datasets/{source[3:].split(':')[0]}")
    with warnings.catch_warnings():
        # A local path matches both of MLflow's local sources ("" and "file" schemes): same class.
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted in multiple ways")
        try:
            dataset = mlflow.data.from_numpy(blocks, source=src, name=name)
        except Exception:  # noqa: BLE001 - an unresolvable source: keep name and digest anyway
            dataset = mlflow.data.from_numpy(blocks, name=name)
    all_tags = {"tokens": str(int(blocks.size)), "blocks": str(int(len(blocks))), **{k: str(v) for k, v in (tags or {}).items()}}
    mlflow.log_input(dataset, context=context, tags=all_tags)
    return dataset
