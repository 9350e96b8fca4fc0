"""MLflow: where runs go, and a run context that never leaves a run RUNNING.

Default store: SQLite in the working directory (MLflow 3.17's file store is in maintenance mode
and refuses without an override). ``MLFLOW_TRACKING_URI`` or the config's ``tracking_uri`` win.
"""
from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

DEFAULT_DB = "mlflow.db"


def tracking_uri(explicit: str | None = None) -> str:
    if explicit:
        return explicit
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{Path.cwd() / DEFAULT_DB}"


def setup(uri: str | None, experiment: str) -> str:
    """Point MLflow at ``uri`` (resolved) and select ``experiment``; returns the resolved URI so
    that workers on other nodes can be handed the very same store."""
    import mlflow

    resolved = tracking_uri(uri)
    mlflow.set_tracking_uri(resolved)
    mlflow.set_experiment(experiment)
    return resolved


def log_params_flat(params: Mapping[str, Any]) -> None:
    """MLflow params are strings of at most 6000 chars; log in batches of 100 (its limit)."""
    import mlflow

    items = [(k, str(v)[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):
        mlflow.log_params(dict(items[i : i + 100]))


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    """Log finite numbers only: MLflow rejects NaN in some stores and a NaN curve helps nobody;
    non-finite values are counted under ``nonfinite_metrics`` instead."""
    import mlflow

    clean = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
    dropped = len(metrics) - len(clean)
    if dropped:
        clean["nonfinite_metrics"] = float(dropped)
    if clean:
        mlflow.log_metrics(clean, step=step)


@contextlib.contextmanager
def run(run_name: str | None = None, *, run_id: str | None = None, nested: bool = False, tags=None) -> Iterator[Any]:
    """``mlflow.start_run`` that ends FINISHED on success and FAILED on any exception,
    KeyboardInterrupt included."""
    import mlflow

    active = mlflow.start_run(run_name=run_name, run_id=run_id, nested=nested, tags=tags)
    try:
        yield active
    except BaseException:
        mlflow.end_run(status="FAILED")
        raise
    else:
        mlflow.end_run(status="FINISHED")
