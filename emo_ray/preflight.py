"""Checks of the tracking store that fail in one line before Ray, MLflow or a model starts.

Each raises ``ConfigError`` (the CLI prints it as one stderr line and exits with code 2):

- an ``http(s)://`` tracking server that does not answer within ``SERVER_TIMEOUT_S`` (MLflow's own
  client retries for about four minutes, then prints a hundred lines);
- a store a read-only command (``report``, ``aggregate``, ``rescore``, the ``mlflow:<run_id>``
  model of ``eval``) would have to create: MLflow creates a missing SQLite file or ``file:``
  folder on first use, so a mistyped path would leave an empty ``mlflow.db`` behind and then
  say only that the run is unknown;
- an ``mlflow:<run_id>`` that names no run of the store.
"""
from __future__ import annotations

import os
from pathlib import Path

from emo_ray.typed_config import ConfigError

SERVER_TIMEOUT_S = 5.0
"""How long a tracking server may take to answer the reachability probe."""


def scheme_of(uri: str) -> str:
    """``sqlite``, ``http``, ... (``sqlite+pysqlite`` -> ``sqlite``); ``""`` for a plain path."""
    if ":" not in uri or (len(uri) > 1 and uri[1] == ":" and uri[0].isalpha()):  # C:\\... is a path
        return ""
    return uri.split(":", 1)[0].split("+", 1)[0].lower()


def check_tracking_server(uri: str, timeout: float = SERVER_TIMEOUT_S) -> None:
    """An ``http(s)`` store must answer within ``timeout`` seconds. Any HTTP answer counts (401 or
    403 included: credentials are checked, with their own message, when MLflow logs in); a refused
    connection, an unknown host or silence is one line naming the URI."""
    import ssl
    import urllib.error
    import urllib.request

    context = None
    if uri.lower().startswith("https") and os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
        context = ssl._create_unverified_context()  # what MLflow itself does with this setting
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout, context=context).close()
    except urllib.error.HTTPError:
        return  # the server answered
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = " ".join(str(getattr(e, "reason", e) or type(e).__name__).split())
        raise ConfigError(f"tracking server {uri} does not answer within {timeout:g} s ({reason}): start it, "
                          f"or set tracking.tracking_uri (or MLFLOW_TRACKING_URI) to a reachable store") from None


def local_store_path(uri: str) -> Path | None:
    """The file (SQLite) or folder (``file:`` / plain path) a local store lives in; None for a
    server or an in-memory database."""
    scheme = scheme_of(uri)
    if scheme == "sqlite":
        path = uri.split(":///", 1)[1] if ":///" in uri else ""
        return Path(path) if path and path != ":memory:" else None
    if scheme == "file":
        from urllib.parse import unquote, urlparse

        return Path(unquote(urlparse(uri).path))
    return Path(uri).expanduser() if scheme == "" else None


def check_existing_store(uri: str, what: str = "a read-only command") -> None:
    """The store ``uri`` must exist already: ``what`` (e.g. ``emo-ray report``) only reads, and
    MLflow would create a missing local store (an empty ``mlflow.db`` at a mistyped path)."""
    scheme = scheme_of(uri)
    if scheme in ("http", "https"):
        check_tracking_server(uri)
        return
    path = local_store_path(uri)
    if path is None:
        return
    if not path.exists():
        raise ConfigError(f"tracking store {path} does not exist ({what} reads runs and never creates a store): "
                          f"check --tracking-uri / tracking.tracking_uri (resolved from {uri!r})")
    if scheme == "sqlite":
        with open(path, "rb") as f:
            head = f.read(16)
        if not head.startswith(b"SQLite format 3"):
            raise ConfigError(f"tracking store {path} is not an SQLite database (from {uri!r})")


def find_run(uri: str, run_id: str, ref: str):
    """The MLflow run ``run_id`` of an existing store, or one line saying it is not there
    (``ref`` is what the user wrote, e.g. ``mlflow:<run_id>``)."""
    from mlflow.exceptions import MlflowException

    from emo_ray.tracking.store import client

    check_existing_store(uri, f"{ref} names a run to read")
    try:
        return client(uri).get_run(run_id)
    except MlflowException as e:
        detail = " ".join(str(e.message).split())[:200]
        raise ConfigError(f"{ref}: no such run in {uri} ({detail}); the MLflow UI lists the run ids") from None
