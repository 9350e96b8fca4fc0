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
# MLflow 3.x opens an experiment without this tag in its GenAI (traces) view; this kind opens the
# runs table (the value set the UI's own "machine learning" switch uses).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
PACKAGES = ("torch", "ray", "deepspeed", "transformers", "mlflow")


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
            mlflow.MlflowClient(resolved).set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
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


def driver_tags() -> dict[str, str]:
    """Which process drives the run: a RUNNING run whose driver is gone is detectably stale."""
    import socket

    return {"emo_ray.driver_pid": str(os.getpid()), "emo_ray.driver_host": socket.gethostname()}


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
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    closed = []
    for r in client.search_runs([experiment_id], "attributes.status = 'RUNNING'", max_results=1000):
        if r.info.run_id == keep:
            continue
        pid, host = r.data.tags.get("emo_ray.driver_pid"), r.data.tags.get("emo_ray.driver_host")
        if driver_alive(pid, host) is False:
            client.set_tag(r.info.run_id, "emo_ray.stale_reason", f"driver {pid}@{host} gone while RUNNING")
            client.set_terminated(r.info.run_id, status="KILLED")
            closed.append(r.info.run_id)
    return closed


def last_step(run_id: str, uri: str | None = None, key: str = "train/loss") -> int:
    """The last step ``key`` was logged at in the run (0: none yet, or the store cannot say)."""
    from mlflow import MlflowClient

    try:
        return max((m.step for m in MlflowClient(uri).get_metric_history(run_id, key)), default=0)
    except Exception:  # noqa: BLE001 - only ever used to word a message
        return 0


def prefixed(metrics: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """``{"loss": 1} -> {"train/loss": 1}`` for ``prefix="train/"`` (MLflow names only; what Ray
    Train / Tune see keeps the plain names)."""
    return {f"{prefix}{k}": v for k, v in metrics.items()}


def git_commit() -> tuple[str | None, bool]:
    """``(commit, dirty)`` of the checkout emo_ray runs from, or ``(None, False)`` outside git."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None, False
    return commit or None, dirty


def provenance_tags() -> dict[str, str]:
    """Code version and key package versions, as run tags."""
    from importlib import metadata

    tags: dict[str, str] = {}
    commit, dirty = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
        tags["emo_ray.git_commit"] = commit
        tags["emo_ray.git_dirty"] = str(dirty).lower()
    for pkg in PACKAGES:
        try:
            tags[f"emo_ray.version.{pkg}"] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    try:
        tags["emo_ray.version.emo_ray"] = metadata.version("emo_ray")
    except metadata.PackageNotFoundError:
        pass
    return tags


def log_dataset(blocks, *, name: str, source: str, context: str = "training", tags: Mapping[str, Any] | None = None):
    """Log packed token blocks (``(n_blocks, block_size)`` ints) as an MLflow dataset input of the
    active run: name, digest of the tokens, source path, and the token count as an input tag."""
    import mlflow
    import mlflow.data
    from mlflow.data.http_dataset_source import HTTPDatasetSource

    src: Any = source
    if source.startswith("hf:"):
        src = HTTPDatasetSource(f"https://huggingface.co/datasets/{source[3:].split(':')[0]}")
    import warnings

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
