"""Where runs go, and the one way the project opens a client on them.

Default store: SQLite in the working directory (MLflow 3.17's file store is in maintenance mode
and refuses without an override). ``MLFLOW_TRACKING_URI`` or the config's ``tracking_uri`` win.
This module imports nothing of the project, so that every layer (``preflight`` included) can
open its client here.
"""
from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DB = "mlflow.db"


def tracking_uri(explicit: str | None = None) -> str:
    if explicit:
        return explicit
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{Path.cwd() / DEFAULT_DB}"


def client(uri: str | None = None):
    """An ``MlflowClient`` on ``uri`` (None: MLflow's current tracking URI, as ``MlflowClient()``
    reads it). Every client of the project is made here (issue 24.1)."""
    from mlflow import MlflowClient

    return MlflowClient(uri)
