"""Evaluate a model (paper 4.1 open-ended generation + 4.2 in-context learning) and record it.

    from emo_ray.evaluation import evaluate, load_eval_config
    metrics = evaluate("smollm2-135m", load_eval_config("configs/eval/quick.yaml"))

``evaluate`` is a plain function (usable inside a Ray task or Tune trial: it joins the running
Ray); ``evaluate_and_log`` also writes params, metrics and the generation / prediction tables to
MLflow, on a new run linked to the evaluated training run or on that run itself.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import pandas as pd

from emo_ray import console
from emo_ray.evaluation.config import EvalConfig, to_flat
from emo_ray.evaluation.rows import DataUnavailable
from emo_ray.inference.executor import ray_session
from emo_ray.tracking import keys

MLFLOW_PREFIXES = ("mlflow:", "runs:/")


@dataclass
class EvalResult:
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    """Sections not evaluated, with the reason (recorded and counted, never silently dropped)."""
    files: dict[str, bytes] = field(default_factory=dict)
    """Other artifacts by MLflow artifact path, e.g. ``features/<corpus>.npz`` (``emo-ray rescore``)."""


def resolve_model(ref: str, tracking_uri: str | None = None) -> tuple[str, str | None]:
    """``(loadable path, source MLflow run id or None)`` for a registry name, hub id, folder, or
    ``mlflow:<run_id>`` / ``runs:/<run_id>[/artifact/path]`` (a training run's checkpoint)."""
    from emo_ray.models import materialize

    if not ref.startswith(MLFLOW_PREFIXES):
        return materialize(ref), None
    import mlflow

    from emo_ray import tracking
    from emo_ray.preflight import find_run

    uri = tracking.tracking_uri(tracking_uri or None)
    mlflow.set_tracking_uri(uri)
    rest = ref.split(":", 1)[1].lstrip("/")
    run_id, _, artifact = rest.partition("/")
    run = find_run(uri, run_id, ref)  # issue 25.4: a missing store or run is one line, before Ray
    if artifact:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact)
        return materialize(path), run_id
    path = run.data.tags.get(tracking.tags.HF_MODEL_PATH)
    if not path:
        raise ValueError(
            f"MLflow run {run_id} has no {tracking.tags.HF_MODEL_PATH!r} tag (tags: {sorted(run.data.tags)}); "
            f"name an artifact instead: runs:/{run_id}/<path to a Hugging Face folder>"
        )
    return materialize(path), run_id


def run_evaluation(model_path: str, cfg: EvalConfig) -> EvalResult:
    """Every enabled section; per-section metrics, settings, tables and wall times."""
    from emo_ray.evaluation.icl.tasks import load_task
    from emo_ray.evaluation.open_ended import evaluate_corpus

    console.prepare_process_env()
    t0 = time.perf_counter()
    result = EvalResult(params={f"eval.{k}": str(v) for k, v in to_flat(cfg).items()})
    # Check every task config before the first model loads: a typo fails in seconds.
    if cfg.icl_enabled:
        for t in cfg.icl.tasks:
            load_task(t, wording=cfg.icl.wording)
    with ray_session(cfg.execution):
        if cfg.generation_enabled:
            for corpus in cfg.generation.corpora:
                with console.stage(f"gen {corpus}"):
                    _add(result, evaluate_corpus(model_path, corpus, cfg))
        if cfg.icl_enabled:
            _add_icl(result, model_path, cfg)
    if result.skipped:
        result.params["skipped"] = "; ".join(f"{k}: {v}" for k, v in result.skipped.items())
    result.metrics[keys.time_key("total_s")] = time.perf_counter() - t0
    return result


def _add_icl(result: EvalResult, model_path: str, cfg: EvalConfig) -> None:
    """Every ICL task prepared in the driver, then all scored through ONE actor pool (the model
    loads once per actor, not once per task; issue 27, item 9), then one section per task."""
    from emo_ray.evaluation.icl.evaluate_task import prepare_task, score_tasks, task_section
    from emo_ray.evaluation.icl.tasks import TaskError, load_task

    prepared = []
    for t in cfg.icl.tasks:
        try:
            with console.stage(f"icl {load_task(t).name}"):
                prepared.append(prepare_task(model_path, t, cfg))
        except (DataUnavailable, TaskError) as e:
            if not (cfg.icl.skip_unavailable and isinstance(e, DataUnavailable)):
                raise
            result.skipped[f"icl/{t}"] = str(e)
    with console.stage(f"icl scoring ({len(prepared)} tasks)"):
        scored, t_score = score_tasks(model_path, prepared, cfg) if prepared else ([], 0.0)
    accs = {}
    for p, rows in zip(prepared, scored):
        _add(result, task_section(p, rows, cfg))
        accs[p.task.name] = result.metrics[keys.icl_key(p.task.name, "accuracy")]
    result.metrics[keys.time_key("icl", "score_s")] = t_score  # the shared pass, model loads included
    result.metrics[keys.ICL_N_TASKS] = float(len(accs))
    result.metrics[keys.ICL_N_TASKS_SKIPPED] = float(len(cfg.icl.tasks) - len(accs))
    if accs:
        # The paper's tables average the per-task accuracies (8 tasks when all run).
        result.metrics[keys.ICL_AVG] = sum(accs.values()) / len(accs)
        result.params[keys.ICL_AVG] = f"mean over tasks={','.join(accs)}"


def _add(result: EvalResult, section) -> None:
    result.metrics.update(section.metrics)
    result.params.update(section.params)
    result.tables.update(section.tables)
    result.files.update(getattr(section, "files", {}))


def evaluate(model_path: str, cfg: EvalConfig) -> dict[str, float]:
    """Metrics only: the function a sweep calls after each trial."""
    path, _ = resolve_model(model_path, cfg.tracking.tracking_uri)
    return run_evaluation(path, cfg).metrics


METRIC_PREFIX = keys.EVAL


def log_result(result: EvalResult) -> None:
    """Params (settings next to their metrics), metrics and tables into the active MLflow run.
    MLflow metric names get the ``eval/`` prefix (``eval/icl/avg_accuracy``), so evaluation
    scores sort apart from the ``train/`` and ``val/`` curves on the same run; ``EvalResult``
    keeps the plain names."""
    import mlflow

    from emo_ray import tracking

    tracking.log_params_flat(result.params)
    tracking.log_metrics(tracking.prefixed(result.metrics, METRIC_PREFIX))
    for name, table in result.tables.items():
        mlflow.log_table(data=_jsonable(table), artifact_file=name)
    _log_files(result.files, mlflow.log_artifact)


def log_result_to_run(result: EvalResult, run_id: str, client=None) -> None:
    """``log_result`` onto an existing run (the evaluated training run) without activating it:
    the client API logs by run id and leaves the run's status alone."""
    from emo_ray import tracking

    client = client or tracking.client()
    tracking.log_batch(client, run_id, tracking.prefixed(result.metrics, METRIC_PREFIX), result.params,
                       {tracking.tags.EVALUATED: "true"}, count_key=keys.eval_name(keys.NONFINITE))
    for name, table in result.tables.items():
        client.log_table(run_id, data=_jsonable(table), artifact_file=name)
    _log_files(result.files, lambda local, folder: client.log_artifact(run_id, local, folder))


def _log_files(files: dict[str, bytes], log_artifact) -> None:
    """Each ``{artifact path: bytes}`` through ``log_artifact(local file, artifact folder)``."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        for name, data in files.items():
            folder, _, base = name.rpartition("/")
            local = Path(tmp) / base
            local.write_bytes(data)
            log_artifact(str(local), folder or None)


def _jsonable(table: pd.DataFrame) -> pd.DataFrame:
    out = table.copy()
    for c in out.columns:
        if out[c].dtype == object:
            out[c] = [v.tolist() if hasattr(v, "tolist") else v for v in out[c]]
    return out


class EvaluationInterrupted(KeyboardInterrupt):
    """Ctrl-C while evaluating. Nothing was recorded (an evaluation is logged once complete, so no
    run is left half-written); the message is the console's one line: where it stopped and what a
    rerun reuses."""

    def __init__(self, stage: str):
        super().__init__(f"interrupted{f' during {stage}' if stage else ''}; nothing was recorded. Rerun the same "
                         "command to evaluate again: sampling and scoring start over, the cached reference-text "
                         "features and retriever embeddings are reused")


def evaluate_and_log(model: str, cfg: EvalConfig, *, source_run: str | None = None) -> tuple[str, EvalResult]:
    """Evaluate ``model`` and record it in MLflow; returns ``(mlflow run id, result)``.
    ``source_run``: the training run ``model`` (a path it exported) came from, as ``mlflow:<run>``
    would name it (a sweep trial holds both and needs no tag read back)."""
    from emo_ray import tracking

    path, found = resolve_model(model, cfg.tracking.tracking_uri)
    source_run = source_run or found
    tracking.setup(cfg.tracking.tracking_uri or None, cfg.tracking.experiment)
    try:
        result = run_evaluation(path, cfg)
    except KeyboardInterrupt:
        raise EvaluationInterrupted(console.interrupted_stage()) from None
    tags = {tracking.tags.KIND: tracking.tags.KIND_EVALUATION, tracking.tags.MODEL: model,
            tracking.tags.MODEL_PATH: path, **tracking.provenance_tags()}
    if source_run and cfg.tracking.log_to_source_run:
        # Onto the training run through the client API, by run id: never start_run / end_run, so
        # a failure here cannot change the training run's status (FINISHED stays FINISHED).
        log_result_to_run(result, source_run)
        return source_run, result
    if source_run:
        tags[tracking.tags.SOURCE_RUN_ID] = source_run
    name = cfg.tracking.run_name or f"eval-{model.rstrip('/').split('/')[-1]}"
    with tracking.run(name, tags=tags) as active:
        log_result(result)
        return active.info.run_id, result
