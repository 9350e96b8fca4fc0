"""Every run tag the project writes or reads, by name: the one place a tag name is spelled.

Stored runs (and a sweep in progress) are read back by these exact strings, so a value here never
changes; a new tag is a new constant. Provenance (code version, package versions) and the driver
tags that make a RUNNING run with a dead driver detectable are built here too.
"""
from __future__ import annotations

import os
from pathlib import Path

# What a run is and what it trained or evaluated.
KIND = "emo_ray.kind"
KIND_TRAINING = "training"
KIND_EVALUATION = "evaluation"
KIND_SWEEP = "sweep"
OBJECTIVE = "emo_ray.objective"
MODEL = "emo_ray.model"
MODEL_PATH = "emo_ray.model_path"
"""The loadable path an evaluation ran on (``emo_ray.model`` is the reference the user wrote)."""

# Where the trained model went (read by ``emo-ray eval model=mlflow:<run>``).
HF_MODEL_PATH = "hf_model_path"
CHECKPOINT_PATH = "checkpoint_path"
RAY_RUN_NAME = "ray.run_name"
RAY_STORAGE_PATH = "ray.storage_path"

# Evaluation.
EVALUATED = "emo_ray.evaluated"
"""Set on a training run that an evaluation was logged onto (``log_to_source_run``)."""
SOURCE_RUN_ID = "emo_ray.source_run_id"
"""On an evaluation's own run: the training run it evaluated."""

# Sweeps: the parent run and one child run per trial.
PRESET = "emo_ray.preset"
TRIAL_ID = "emo_ray.trial_id"
TRIAL_RECORD = "emo_ray.trial"
"""The trial's typed record (``Trial.to_dict`` as JSON): what a report reads back instead of params."""
TRIAL_KEY = "emo_ray.trial_key"
HPARAMS = "emo_ray.hparams"
DOMAIN = "emo_ray.domain"
PARENT_RUN_ID = "mlflow.parentRunId"

# Resume, rerun and failure records of a training run.
DRIVER_PID = "emo_ray.driver_pid"
DRIVER_HOST = "emo_ray.driver_host"
STALE_REASON = "emo_ray.stale_reason"
STALE_RUN_RECOVERED = "emo_ray.stale_run_recovered"
RESUMED_FROM_RUN = "emo_ray.resumed_from_run"
RESUMED_FROM_STEP = "emo_ray.resumed_from_step"
RESUMED_WITH_CHANGED_CONFIG = "emo_ray.resumed_with_changed_config"
RESUMED_WITH_CHANGED_PARAMS = "emo_ray.resumed_with_changed_params"
RERUN_OF = "emo_ray.rerun_of"
RERUN_OF_RAY_RUN = "emo_ray.rerun_of_ray_run"
FAILURE = "emo_ray.failure"
LOGGED_MODEL_ERROR = "emo_ray.logged_model_error"
DATASET_LOG_ERROR = "emo_ray.dataset_log_error"
MLFLOW_SINK_ERRORS = "emo_ray.mlflow_sink_errors"
PEAK_FLOPS_PER_WORKER = "emo_ray.peak_flops_per_worker"

# Provenance.
MLFLOW_GIT_COMMIT = "mlflow.source.git.commit"
GIT_COMMIT = "emo_ray.git_commit"
GIT_DIRTY = "emo_ray.git_dirty"
VERSION_PREFIX = "emo_ray.version."
PACKAGES = ("torch", "ray", "deepspeed", "transformers", "mlflow")

# MLflow 3.x opens an experiment without this tag in its GenAI (traces) view; this kind opens the
# runs table (the value set the UI's own "machine learning" switch uses).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def column(tag: str) -> str:
    """A tag as MLflow's search filters and runs-table column ids name it: ``tags.`<tag>```."""
    return f"tags.`{tag}`"


def version_tag(package: str) -> str:
    return f"{VERSION_PREFIX}{package}"


def driver_tags() -> dict[str, str]:
    """Which process drives the run: a RUNNING run whose driver is gone is detectably stale."""
    import socket

    return {DRIVER_PID: str(os.getpid()), DRIVER_HOST: socket.gethostname()}


def git_commit() -> tuple[str | None, bool]:
    """``(commit, dirty)`` of the checkout emo_ray runs from, or ``(None, False)`` outside git."""
    import subprocess

    root = Path(__file__).resolve().parents[2]  # emo_ray/tracking/tags.py -> the checkout
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
        tags[MLFLOW_GIT_COMMIT] = commit
        tags[GIT_COMMIT] = commit
        tags[GIT_DIRTY] = str(dirty).lower()
    for pkg in (*PACKAGES, "emo_ray"):
        try:
            tags[version_tag(pkg)] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return tags
