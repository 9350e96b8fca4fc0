"""The run record beside Ray's checkpoints, and what it decides before a run opens: continue a
Ray run and its MLflow run, refuse a resume with a config that trains something else, hand back
a finished run, or start a rerun of it.

``emo_ray_run.json`` (``<storage>/<ray.run_name>/``) holds the config that was trained (without
the fields marked ``typed_config.NEUTRAL``: they change where, when or how things are recorded,
not the weights), the MLflow run that records it, and the driver that runs it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from emo_ray import storage as storage_lib
from emo_ray import tracking, typed_config
from emo_ray.config import Config, ConfigError, to_flat
from emo_ray.train.lifecycle import FitResult, finished_run, rerun_slot

RUN_RECORD = "emo_ray_run.json"
RESUME_CHANGED_ENV = "EMO_RAY_RESUME_CHANGED_CONFIG"


def trained_config(cfg: Config) -> dict:
    """The flattened config minus the fields that do not change the trained weights (JSON values)."""
    flat = json.loads(json.dumps(to_flat(cfg), default=str))
    neutral = typed_config.neutral_keys(Config)
    return {k: v for k, v in flat.items() if k not in neutral}


def changed_keys(old: dict, new: dict) -> list[str]:
    """Keys whose value differs. A key the old record lacks (a field added since it was written,
    e.g. ``data.format``) counts as that field's default, so a newer emo_ray can resume a run an
    older one started when nothing that trains changed."""
    defaults = trained_config(Config())
    return sorted(k for k in set(old) | set(new) if old.get(k, defaults.get(k)) != new.get(k, defaults.get(k)))


def read_run_record(storage: str, name: str) -> dict | None:
    path = storage_lib.join(storage, name, RUN_RECORD)
    if not storage_lib.exists(path):
        return None
    return json.loads(storage_lib.read_text(path))


def write_run_record(storage: str, name: str, record: dict) -> None:
    storage_lib.write_text(storage_lib.join(storage, name, RUN_RECORD), json.dumps(record, indent=1, sort_keys=True))


def new_run_record(cfg: Config, run_id: str, uri: str) -> dict:
    """The record of a run that is about to train: its config, its MLflow run, this driver."""
    import socket

    return {"config": trained_config(cfg), "mlflow_run_id": run_id, "tracking_uri": uri,
            "driver_pid": os.getpid(), "driver_host": socket.gethostname()}


def allow_changed_config(cfg: Config, explicit: bool | None) -> bool:
    """``fit(allow_changed_config=...)``, else ``ray.resume_changed_config`` or the environment."""
    if explicit is not None:
        return explicit
    return cfg.ray.resume_changed_config or os.environ.get(RESUME_CHANGED_ENV, "") not in ("", "0", "false")


def check_resume(cfg: Config, record: dict | None, *, allow_changed: bool) -> list[str]:
    """Resuming ``ray.run_name`` with a config that changes what was trained is refused (a
    ``ConfigError`` naming the keys) unless ``allow_changed``; returns the changed keys."""
    if not record or "config" not in record:
        return []
    changed = changed_keys(record["config"], trained_config(cfg))
    if changed and not allow_changed:
        shown = ", ".join(f"{k} ({record['config'].get(k)!r} -> {trained_config(cfg).get(k)!r})" for k in changed[:8])
        raise ConfigError(
            f"ray.run_name={cfg.ray.run_name!r} was trained with another config; it differs in {shown}"
            f"{' ...' if len(changed) > 8 else ''}. Use another ray.run_name, or set {RESUME_CHANGED_ENV}=1 "
            "to continue its checkpoint anyway"
        )
    return changed


def check_storage_writable(storage: str) -> None:
    """A local storage folder must be creatable and writable before the MLflow run opens."""
    if storage_lib.is_uri(storage):
        return
    path = Path(storage)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".emo_ray_write_probe.{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"ray.storage_path {storage} is not writable: {e.strerror or e}") from None


def _driver_alive(record: dict) -> bool:
    """Whether another process of this host still drives the run a record names."""
    pid = record.get("driver_pid")
    return bool(tracking.driver_alive(pid, record.get("driver_host"))) and str(pid) != str(os.getpid())


def _continue_run(record: dict, uri: str) -> str | None:
    """The MLflow run a stored Ray run belongs to, if it still exists. One left RUNNING by a
    driver that is gone (SIGKILL) is continued and tagged so; one whose driver still runs is a
    concurrent start of the same run: refused."""
    try:
        run = tracking.client(uri).get_run(record["mlflow_run_id"])
    except Exception:  # noqa: BLE001 - deleted or another store: a new MLflow run
        return None
    if run.info.lifecycle_stage != "active":
        return None
    if run.info.status == "RUNNING":
        if _driver_alive(record):
            raise ConfigError(f"ray.run_name is being trained right now by process {record.get('driver_pid')} "
                              f"(MLflow run {run.info.run_id})")
        tracking.client(uri).set_tag(run.info.run_id, tracking.tags.STALE_RUN_RECOVERED,
                                  f"driver {record.get('driver_pid')}@{record.get('driver_host')} gone; resumed")
    return run.info.run_id


def resolve_run(cfg: Config, storage: str, uri: str, mlflow_run_id: str | None, *,
                allow_changed: bool) -> tuple[str, str | None, dict, FitResult | None]:
    """``(Ray run name, MLflow run to continue or None, extra run tags, finished run or None)``.

    The same ``ray.run_name`` with the same config continues its Ray run and MLflow run (after a
    SIGKILL, Ctrl-C or failure); a changed config is refused unless allowed (then a new MLflow run
    continues the checkpoint). A FINISHED run is never reopened: ``ray.rerun_finished=skip`` hands
    it back as it is (``already_finished``: nothing runs, nothing is written), ``new`` trains a new
    Ray run ``<name>-rerunK`` whose MLflow run is tagged with the finished one."""
    name = cfg.ray.run_name
    record = read_run_record(storage, name) if name else None
    changed = check_resume(cfg, record, allow_changed=allow_changed)
    if changed:  # explicitly allowed: a new MLflow run (its params are the new config) that says so
        return name, mlflow_run_id, {tracking.tags.RESUMED_WITH_CHANGED_CONFIG: ",".join(changed)[:5000],
                                     tracking.tags.RESUMED_FROM_RUN: record.get("mlflow_run_id", "")}, None
    done = finished_run(record, uri)
    tags: dict = {}
    if done and cfg.ray.rerun_finished == "skip":
        return name, None, {}, _finished_result(done, name, record, uri)
    if done:
        tags = {tracking.tags.RERUN_OF: done["mlflow_run_id"], tracking.tags.RERUN_OF_RAY_RUN: name}
        name, record = rerun_slot(storage, name, read_run_record, uri)
        mlflow_run_id = None
    if record and not mlflow_run_id and record.get("mlflow_run_id") and record.get("tracking_uri") == uri:
        mlflow_run_id = _continue_run(record, uri)  # the same Ray run continues its MLflow run
    return name, mlflow_run_id, tags, None


def already_finished(cfg: Config, storage: str, uri: str) -> FitResult | None:
    """The finished run a rerun of ``cfg`` would hand back (``ray.rerun_finished=skip``, same
    config), read before any data is prepared: a finished run's rerun costs nothing."""
    record = read_run_record(storage, cfg.ray.run_name) if cfg.ray.run_name else None
    if cfg.ray.rerun_finished != "skip" or not record or changed_keys(record.get("config") or {}, trained_config(cfg)):
        return None
    done = finished_run(record, uri)
    return _finished_result(done, cfg.ray.run_name, record, uri) if done else None


def _finished_result(done: dict, name: str, record: dict, uri: str) -> FitResult:
    return FitResult(done["mlflow_run_id"], done.get("metrics") or {}, done.get("checkpoint_path"),
                     done.get("hf_model_path"), name, n_params=done.get("n_params") or 0,
                     run_name=done.get("run_name") or "", tracking_uri=record.get("tracking_uri") or uri,
                     experiment_id=done.get("experiment_id") or "", already_finished=True)
