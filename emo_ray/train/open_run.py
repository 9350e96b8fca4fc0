"""Phase 2 of a run, on the driver: open it. Which Ray run and MLflow run it continues or starts
(``run_record.resolve_run``), the MLflow run's tags, then, once that run is open, its params, config
and datasets, and the run record beside the checkpoints."""
from __future__ import annotations

from dataclasses import dataclass, field

from emo_ray import tracking
from emo_ray.config import Config, to_yaml
from emo_ray.train.lifecycle import FitResult
from emo_ray.train.prepare import PreparedInputs, dataset_name, run_params
from emo_ray.train.run_record import check_storage_writable, new_run_record, resolve_run, write_run_record


@dataclass
class RunSlot:
    """Phase 2, before the MLflow run opens: where the run is stored and recorded, and which Ray
    run and MLflow run it continues (``run_record.resolve_run``)."""

    storage: str
    uri: str
    ray_name: str
    mlflow_run_id: str | None
    tags: dict
    finished: FitResult | None


@dataclass
class OpenedRun:
    """What this driver has opened so far: the interrupt and failure lines name the runs, and the
    end of ``fit`` stops a Ray started here."""

    run_id: str | None = None
    run_name: str | None = None
    experiment_id: str = ""
    ray_run_name: str | None = None
    record: dict = field(default_factory=dict)
    started_ray: bool = False


def resolve_slot(cfg: Config, storage: str, mlflow_run_id: str | None, allow_changed: bool,
                 tags: dict | None) -> RunSlot:
    """Phase 2a: the storage checked, MLflow set up, the run to continue (or a refusal), the stale
    runs of this host closed, and the tags the MLflow run opens with."""
    check_storage_writable(storage)
    uri = tracking.setup(cfg.tracking.tracking_uri, cfg.tracking.experiment)
    ray_name, mlflow_run_id, resume_tags, finished = resolve_run(cfg, storage, uri, mlflow_run_id,
                                                                 allow_changed=allow_changed)
    if finished is not None:
        return RunSlot(storage, uri, ray_name, None, {}, finished)
    try:  # runs left RUNNING by a driver of this host that is gone end KILLED, with the reason
        import mlflow

        tracking.close_stale_runs(mlflow.get_experiment_by_name(cfg.tracking.experiment).experiment_id, uri,
                                  keep=mlflow_run_id)
    except Exception:  # noqa: BLE001 - housekeeping must never stop a run
        pass
    all_tags = {tracking.tags.KIND: tracking.tags.KIND_TRAINING, tracking.tags.OBJECTIVE: cfg.train.loss,
                tracking.tags.MODEL: cfg.model.name,
                **tracking.provenance_tags(), **tracking.driver_tags(), **resume_tags, **(tags or {})}
    if cfg.tracking.parent_run_id:
        all_tags[tracking.tags.PARENT_RUN_ID] = cfg.tracking.parent_run_id
    return RunSlot(storage, uri, ray_name, mlflow_run_id, all_tags, None)


def open_run(cfg: Config, prepared: PreparedInputs, slot: RunSlot, run, opened: OpenedRun) -> None:
    """Phase 2b, the MLflow run open: its params, config and datasets logged, and the run record
    (which config this Ray run trains, recorded where) written beside the checkpoints."""
    import mlflow

    opened.run_id, opened.run_name, opened.experiment_id = run.info.run_id, run.info.run_name, run.info.experiment_id
    params = run_params(cfg, prepared)
    if slot.mlflow_run_id:  # a continued run: params cannot change; differing neutral keys become a tag
        old = mlflow.get_run(opened.run_id).data.params
        differ = sorted(k for k, v in params.items() if k in old and old[k] != str(v)[:6000])
        if differ:
            mlflow.set_tag(tracking.tags.RESUMED_WITH_CHANGED_PARAMS,
                           ", ".join(f"{k}={params[k]}" for k in differ)[:5000])
        params = {k: v for k, v in params.items() if k not in differ}
    tracking.log_params_flat(params)
    mlflow.log_text(to_yaml(cfg), "config.yaml")
    _log_datasets(cfg, prepared.packed, params)
    opened.ray_run_name = slot.ray_name or f"emo-ray-{opened.run_id}"
    opened.record = new_run_record(cfg, opened.run_id, slot.uri)
    write_run_record(slot.storage, opened.ray_run_name, opened.record)


def _log_datasets(cfg: Config, packed, params: dict) -> None:
    import mlflow

    try:
        tracking.log_dataset(packed.train, name=dataset_name(params["data.train"]),
                             source=params["data.train"].split(",")[0], context="training",
                             tags={"block_size": cfg.data.block_size})
        if len(packed.validation):
            val_src = params.get("data.validation") or params["data.train"]
            tracking.log_dataset(packed.validation, name=dataset_name(val_src) + "/validation",
                                 source=val_src.split(",")[0], context="validation",
                                 tags={"block_size": cfg.data.block_size})
    except Exception as e:  # noqa: BLE001 - a dataset record must never stop a run
        mlflow.set_tag(tracking.tags.DATASET_LOG_ERROR, str(e)[:500])
