"""The last phases of a run, on the driver: run the trainer (a storage fault said in one line), then
make its model visible from the MLflow run and keep only the checkpoints that are still useful."""
from __future__ import annotations

from emo_ray import storage as storage_lib
from emo_ray.config import Config
from emo_ray.train.lifecycle import FINISHED_KEY, FitResult, finished_record, fit_interruptible
from emo_ray.train.open_run import OpenedRun, RunSlot
from emo_ray.train.prepare import PreparedInputs
from emo_ray.train.run_record import write_run_record
from emo_ray import tracking


def checkpoint_uri(storage: str, ckpt_path: str) -> str:
    """The checkpoint as a path or URI a reader elsewhere can open: Ray reports paths on a
    remote filesystem without their scheme (``bucket/key``)."""
    if storage_lib.is_uri(storage) and not storage_lib.is_uri(ckpt_path):
        return f"{storage.split('://', 1)[0]}://{ckpt_path.lstrip('/')}"
    return ckpt_path


def exported_model(checkpoint, ckpt_uri: str | None) -> str | None:
    """The final checkpoint's exported Hugging Face folder (``hf/``) as a path or URI, or None
    when the run exported none. Looked up on the checkpoint's own filesystem
    (``checkpoint.filesystem``: the one Ray wrote it to, local, ``s3://`` or any other), never as
    a local path."""
    if checkpoint is None or not ckpt_uri:
        return None
    marker = f"{checkpoint.path.rstrip('/')}/hf/config.json"
    return storage_lib.join(ckpt_uri, "hf") if storage_lib.exists(marker, filesystem=checkpoint.filesystem) else None


def record_model(run_id: str, run_name: str, ckpt_uri: str | None, hf: str | None, n_params: int, cfg: Config) -> None:
    """Make the fine-tuned model visible from the run: tags (``hf_model_path`` is what
    ``emo-ray-eval model=mlflow:<run>`` reads), a small ``model/reference.json`` artifact, and an
    MLflow external LoggedModel whose source is this run (the weights stay in Ray's storage,
    local or s3, and are not copied)."""
    import mlflow

    model_tags = {tracking.tags.CHECKPOINT_PATH: ckpt_uri, tracking.tags.HF_MODEL_PATH: hf}
    mlflow.set_tags({k: v for k, v in model_tags.items() if v})
    if not hf:
        return
    mlflow.log_dict({"hf_model_path": hf, "checkpoint_path": ckpt_uri, "format": "huggingface-causal-lm",
                     "load": f"transformers.AutoModelForCausalLM.from_pretrained({hf!r})",
                     "base_model": cfg.model.name, "n_params": n_params}, "model/reference.json")
    try:
        run = mlflow.get_run(run_id)
        existing = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list",
                                               filter_string=f"source_run_id = '{run_id}'")
        if any(m.source_run_id == run_id for m in existing):
            return  # a resumed run: its model is recorded already
        mlflow.create_external_model(
            name=run_name or f"model-{run_id[:8]}", source_run_id=run_id, model_type="huggingface-causal-lm",
            tags={tracking.tags.HF_MODEL_PATH: hf, tracking.tags.OBJECTIVE: cfg.train.loss,
                  tracking.tags.MODEL: cfg.model.name},
            params={"model.n_params": str(n_params), "base_model": cfg.model.name},
        )
    except Exception as e:  # noqa: BLE001 - an older server without logged models: the tags remain
        mlflow.set_tag(tracking.tags.LOGGED_MODEL_ERROR, str(e)[:500])


def drop_superseded_checkpoints(result) -> list[str]:
    """With ``train.final_checkpoint=weights``, once the run ended with its final weights
    committed, delete the full DeepSpeed checkpoints Ray Train still keeps beside them
    (``keep_checkpoints``): nothing resumes from them any more (a restarted driver stops at the
    final checkpoint) and for 13B each is 156 GB of EFS (issue 27.4). Returns the deleted paths."""
    final = result.checkpoint
    if final is None:
        return []
    dropped = []
    for ckpt, _metrics in getattr(result, "best_checkpoints", None) or []:
        if ckpt.path != final.path:
            ckpt.filesystem.delete_dir(ckpt.path)
            dropped.append(ckpt.path)
    return dropped


def fit_or_storage_fault(trainer, run_dir: str):
    """``trainer.fit()`` (Ctrl-C-aware: ``fit_interruptible``). A checkpoint the storage refused (a
    full disk, an unwritable folder; issue 25.3) ends the run FAILED with its ``emo_ray.failure`` tag and one line naming the path
    and the cause (``StorageFault``); no partial folder is left (a resume never sees one) and the
    same command resumes from the last complete checkpoint. Other errors pass unchanged."""
    import mlflow

    from emo_ray.train.checkpoint_io import remove_partial

    try:
        return fit_interruptible(trainer)
    except Exception as e:
        fault = storage_lib.storage_fault_line(e)
        if not fault:
            raise
    remove_partial(run_dir)
    mlflow.set_tag(tracking.tags.FAILURE, f"StorageFault: {fault}"[:5000])
    raise storage_lib.StorageFault(f"{fault}; rerun the same command to resume from the last complete checkpoint") from None


def finalize(cfg: Config, prepared: PreparedInputs, slot: RunSlot, opened: OpenedRun, result) -> FitResult:
    """Phase 5: superseded checkpoints dropped, the model recorded on the MLflow run, and the
    finished run in the run record (a rerun then changes nothing)."""
    if cfg.train.final_checkpoint == "weights":
        drop_superseded_checkpoints(result)
    ckpt = checkpoint_uri(slot.storage, result.checkpoint.path) if result.checkpoint else None
    hf = exported_model(result.checkpoint, ckpt)
    record_model(opened.run_id, opened.run_name, ckpt, hf, prepared.n_params, cfg)
    final = {k: v for k, v in (result.metrics or {}).items() if isinstance(v, (int, float))}
    out = FitResult(opened.run_id, final, ckpt, hf, opened.ray_run_name, n_params=prepared.n_params,
                    run_name=opened.run_name, tracking_uri=slot.uri, experiment_id=opened.experiment_id)
    write_run_record(slot.storage, opened.ray_run_name, {**opened.record, FINISHED_KEY: finished_record(out)})
    return out
