"""A run's life: the store checked and the experiment selected before anything starts, a run
context that never leaves a run RUNNING, and stale runs (their driver gone) closed."""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from emo_ray.tracking.keys import TRAIN_LOSS
from emo_ray.tracking.store import client, tracking_uri
from emo_ray.tracking.tags import DRIVER_HOST, DRIVER_PID, EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, STALE_REASON
from emo_ray.tracking.writer import logged_through


def setup(uri: str | None, experiment: str) -> str:
    """Point MLflow at ``uri`` (resolved) and select ``experiment``; returns the resolved URI so
    that workers on other nodes can be handed the very same store."""
    import mlflow

    resolved = tracking_uri(uri)
    db = check_store(resolved)
    mlflow.set_tracking_uri(resolved)
    if db is not None:
        # Two first runs against a fresh SQLite file race in MLflow's schema migration: the first
        # to take the lock creates the store, the others then find it ready.
        from filelock import FileLock

        with FileLock(f"{db}.lock", timeout=600):
            exp = mlflow.set_experiment(experiment)
    else:
        exp = mlflow.set_experiment(experiment)
    if EXPERIMENT_KIND_TAG not in (exp.tags or {}):
        try:
            client(resolved).set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        except Exception:  # noqa: BLE001 - a read-only store still runs
            pass
    return resolved


SCHEMES = ("sqlite", "http", "https", "databricks", "file", "postgresql", "mysql", "mssql")


def check_store(uri: str) -> Path | None:
    """Fail in one line, before anything starts, on a store MLflow would retry for minutes: an
    unknown scheme, or a SQLite file (or its folder) that cannot be written. Returns the SQLite
    file's path (None for other stores)."""
    from emo_ray.config import ConfigError

    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower() if ":" in uri else ""
    if scheme and scheme not in SCHEMES and len(scheme) > 1:  # one letter: a Windows drive
        raise ConfigError(f"tracking URI {uri!r}: unknown scheme {scheme!r} (one of {', '.join(SCHEMES)})")
    if scheme in ("http", "https"):  # issue 25.4: a server that is not there, in seconds
        from emo_ray.preflight import check_tracking_server

        check_tracking_server(uri)
    if scheme != "sqlite":
        return None
    path = uri.split(":///", 1)[1] if ":///" in uri else ""
    if not path or path == ":memory:":
        return None
    db = Path(path)  # sqlite:////abs -> /abs, sqlite:///rel -> rel
    if db.exists():
        if not db.is_file() or not os.access(db, os.R_OK | os.W_OK):
            raise ConfigError(f"tracking store {db} is not a writable file")
        with open(db, "rb") as f:
            head = f.read(16)
        if head and not head.startswith(b"SQLite format 3"):
            raise ConfigError(f"tracking store {db} is not an SQLite database")
        if not os.access(db.parent, os.W_OK):
            raise ConfigError(f"tracking store {db}: its folder {db.parent} is not writable (SQLite journal)")
    else:
        parent = db.parent
        if not parent.is_dir() or not os.access(parent, os.W_OK):
            raise ConfigError(f"tracking store {db}: folder {parent} does not exist or is not writable")
    return db


def driver_alive(pid, host) -> bool | None:
    """Whether the driver process still runs: None when it cannot be known (another host)."""
    import socket

    if not pid or host != socket.gethostname():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, OverflowError):
        return True
    return True


def close_stale_runs(experiment_id: str, uri: str | None = None, *, keep: str | None = None) -> list[str]:
    """RUNNING runs of the experiment whose driver (``emo_ray.driver_pid`` / ``_host`` tags) is
    gone from this host (SIGKILL, power loss) end KILLED with ``emo_ray.stale_reason``; runs of
    other hosts and runs without the tags are left alone. Returns the closed run ids."""
    store = client(uri)
    closed = []
    for r in store.search_runs([experiment_id], "attributes.status = 'RUNNING'", max_results=1000):
        if r.info.run_id == keep:
            continue
        pid, host = r.data.tags.get(DRIVER_PID), r.data.tags.get(DRIVER_HOST)
        if driver_alive(pid, host) is False:
            store.set_tag(r.info.run_id, STALE_REASON, f"driver {pid}@{host} gone while RUNNING")
            store.set_terminated(r.info.run_id, status="KILLED")
            closed.append(r.info.run_id)
    return closed


def last_step(run_id: str, uri: str | None = None, key: str = TRAIN_LOSS) -> int:
    """The last step ``key`` was logged at in the run (0: none yet, or the store cannot say)."""
    try:
        return logged_through(client(uri), run_id, key)
    except Exception:  # noqa: BLE001 - only ever used to word a message
        return 0


@contextlib.contextmanager
def run(run_name: str | None = None, *, run_id: str | None = None, nested: bool = False, tags=None) -> Iterator[Any]:
    """``mlflow.start_run`` that ends FINISHED on success, KILLED when interrupted
    (KeyboardInterrupt: Ctrl-C, which the user asked for and can resume) and FAILED on any other
    exception."""
    import mlflow

    active = mlflow.start_run(run_name=run_name, run_id=run_id, nested=nested, tags=tags)
    try:
        yield active
    except KeyboardInterrupt:
        mlflow.end_run(status="KILLED")
        raise
    except BaseException:
        mlflow.end_run(status="FAILED")
        raise
    else:
        mlflow.end_run(status="FINISHED")
