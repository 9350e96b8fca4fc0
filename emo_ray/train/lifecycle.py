"""A training run's ends beyond success and failure: finished already, and interrupted (Ctrl-C).

A FINISHED run's record is never rewritten: the run record (``emo_ray_run.json`` next to Ray's
checkpoints) keeps what the finished run produced under ``finished``, so the same command again
says so and does nothing (``ray.rerun_finished=skip``), or trains again as a new run linked to
the finished one (``ray.rerun_finished=new``: Ray run ``<name>-rerun2``, MLflow tag
``emo_ray.rerun_of``). Ctrl-C ends the MLflow run KILLED and raises ``TrainingInterrupted``,
which says at which step training stood and how to resume it.
"""
from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass

from emo_ray import tracking

FINISHED_KEY = "finished"
RERUN_SUFFIX = "-rerun"


@dataclass
class FitResult:
    mlflow_run_id: str
    metrics: dict
    """Final metrics as Ray Train reported them (plain names: ``loss``, ``val_ppl``...)."""
    checkpoint_path: str | None
    hf_model_path: str | None
    """The exported Hugging Face folder: a local path, or a URI (``s3://...``) on remote storage."""
    ray_run_name: str
    n_params: int = 0
    """Parameters of the model, counted from its config on the meta device."""
    run_name: str = ""
    """The MLflow run's name."""
    tracking_uri: str = ""
    experiment_id: str = ""
    already_finished: bool = False
    """True when ``ray.run_name`` had finished already and nothing ran (``ray.rerun_finished=skip``):
    the fields describe that finished run."""


def finished_record(result) -> dict:
    """What the run record keeps of a finished run (a ``FitResult``): enough to answer a rerun
    without opening anything."""
    return {"mlflow_run_id": result.mlflow_run_id, "run_name": result.run_name, "experiment_id": result.experiment_id,
            "metrics": dict(result.metrics or {}), "checkpoint_path": result.checkpoint_path,
            "hf_model_path": result.hf_model_path, "n_params": result.n_params}


def finished_run(record: dict | None, uri: str) -> dict | None:
    """The finished run a run record names (``finished_record``'s fields), or None when that Ray
    run has not finished. A record written before the ``finished`` key existed counts as finished
    when its MLflow run, in this store, is FINISHED."""
    if not record:
        return None
    if record.get(FINISHED_KEY):
        return record[FINISHED_KEY]
    if record.get("tracking_uri") != uri or not record.get("mlflow_run_id"):
        return None
    try:
        run = tracking.client(uri).get_run(record["mlflow_run_id"])
    except Exception:  # noqa: BLE001 - deleted, or the store cannot say: not known to be finished
        return None
    if run.info.status != "FINISHED" or run.info.lifecycle_stage != "active":
        return None
    tags, params = run.data.tags, run.data.params
    return {"mlflow_run_id": run.info.run_id, "run_name": run.info.run_name, "experiment_id": run.info.experiment_id,
            "metrics": {}, "checkpoint_path": tags.get(tracking.tags.CHECKPOINT_PATH), "hf_model_path": tags.get(tracking.tags.HF_MODEL_PATH),
            "n_params": int(params.get("model.n_params") or 0)}


def rerun_slot(storage: str, name: str, read_record: Callable[[str, str], dict | None],
               uri: str) -> tuple[str, dict | None]:
    """``(Ray run name, its record or None)`` for ``ray.rerun_finished=new`` of ``name``: the first
    ``<name>-rerunK`` (K = 2, 3, ...) that has not finished. An interrupted rerun is found again, so
    the same command resumes it; a finished one is kept and the next K starts."""
    for k in itertools.count(2):
        slot = f"{name}{RERUN_SUFFIX}{k}"
        record = read_record(storage, slot)
        if finished_run(record, uri) is None:
            return slot, record
    raise AssertionError("unreachable")


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training. The MLflow run has ended KILLED; the message is the one line the
    console prints: the step reached and how to resume (the Ray run name, which the command must
    carry when it did not name one)."""

    def __init__(self, step: int | None, ray_run_name: str | None, mlflow_run_id: str | None, *, named: bool):
        self.step, self.ray_run_name, self.mlflow_run_id = step or 0, ray_run_name, mlflow_run_id
        if not mlflow_run_id:
            msg = "interrupted before training started; nothing was recorded"
        elif named:
            msg = (f"interrupted at step {self.step}; rerun the same command to resume (ray.run_name={ray_run_name}; "
                   f"MLflow run {mlflow_run_id} ended KILLED)")
        else:
            msg = (f"interrupted at step {self.step}; rerun the same command with ray.run_name={ray_run_name} to "
                   f"resume (MLflow run {mlflow_run_id} ended KILLED)")
        super().__init__(msg)


def fit_interruptible(trainer):
    """``trainer.fit()`` such that Ctrl-C reaches this thread as a KeyboardInterrupt.

    On the main thread Ray Train 2.60's ``fit`` installs its own SIGINT handler, which aborts the
    run's controller and then exits the process from inside the handler (exit status 1 and no
    output, measured): the driver never learns it was interrupted and the MLflow run ends FAILED.
    Run from another thread (as Tune does) it installs none, so fit runs in a helper thread here
    and the main thread only waits. Off the main thread (a Tune trial) fit is called directly."""
    if threading.current_thread() is not threading.main_thread():
        return trainer.fit()
    box: dict = {}

    def target() -> None:
        try:
            box["result"] = trainer.fit()
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread as it is
            box["error"] = e

    # Daemon: after Ctrl-C the caller stops Ray, which ends the blocked fit; it must never keep
    # the process alive.
    thread = threading.Thread(target=target, name="emo-ray-fit", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.5)  # short waits: a signal is handled between them
    if "error" in box:
        raise box["error"]
    return box["result"]
