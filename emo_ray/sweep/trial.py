"""One Tune trial: fine-tune (Ray Train inside Tune), evaluate, report.

Ray 2.60's documented Tune-over-Train pattern: Tune runs this driver function, which builds
and fits a ``TorchTrainer`` with ``TuneReportCallback`` (``Tuner(trainer)`` raises
``Improper 'run'`` in this version). Names derive from the trial id, never a timestamp, so a
restored sweep finds the same Ray Train run (and resumes it from its checkpoint) and the same
MLflow child run (and does not duplicate it).
"""
from __future__ import annotations

import json

from emo_ray import tracking, typed_config
from emo_ray.sweep.spec import PRETRAINED, SweepConfig, Trial, eval_config, trial_config
from emo_ray.tracking import tags

TRIAL_TAG = tags.TRIAL_ID
TRIAL_RECORD_TAG = tags.TRIAL_RECORD
"""The trial's typed record (``Trial.to_dict`` as JSON) on its MLflow child run: what the
aggregation reads back, instead of re-parsing params."""


def find_child_run(tracking_uri: str, parent_run_id: str, trial_id: str) -> str | None:
    client = tracking.client(tracking_uri)
    parent = client.get_run(parent_run_id)
    found = client.search_runs(
        [parent.info.experiment_id],
        f"{tags.column(tags.PARENT_RUN_ID)} = '{parent_run_id}' and {tags.column(TRIAL_TAG)} = '{trial_id}'",
    )
    return found[0].info.run_id if found else None


def trial_tags(sweep: SweepConfig, trial: Trial, trial_id: str) -> dict[str, str]:
    return {TRIAL_TAG: trial_id, TRIAL_RECORD_TAG: json.dumps(trial.to_dict(), sort_keys=True),
            tags.TRIAL_KEY: trial.key, tags.OBJECTIVE: trial.loss, tags.MODEL: trial.model,
            tags.HPARAMS: trial.hparams or "-", tags.PRESET: sweep.name,
            tags.DOMAIN: trial.domain or "-",
            **({tags.KIND: PRETRAINED} if trial.pretrained else {})}


def param_space(sweep_tree: dict, grid: list, tracking_uri: str, parent_run_id: str, storage_path: str) -> dict:
    """Tune's ``param_space`` of a sweep: one grid entry per trial. The sweep itself travels as
    JSON text: Tune resolves nested dicts of a param space, and reads a one-key dict ``{"eval":
    ...}`` (a domain that only sets its evaluation, as figure1-cpu's does) or ``{"grid_search":
    ...}`` as its own sampling syntax."""
    from ray import tune

    return {
        "sweep": json.dumps(sweep_tree),
        "trial": tune.grid_search([t.to_dict() for t in grid]),
        "tracking_uri": tracking_uri,
        "parent_run_id": parent_run_id,
        "storage_path": storage_path,
    }


def sweep_of(config: dict) -> SweepConfig:
    """The sweep of a trial's config (a dict in experiments started before it travelled as JSON)."""
    tree = config["sweep"]
    return typed_config.build(SweepConfig, json.loads(tree) if isinstance(tree, str) else tree, "sweep")


def run_trial(config: dict) -> None:
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from emo_ray.train import fit

    sweep = sweep_of(config)
    trial = Trial.from_dict(config["trial"])
    trial_id = ray.tune.get_context().get_trial_id()
    uri, parent = config["tracking_uri"], config["parent_run_id"]
    if trial.pretrained:
        metrics, run_id = evaluate_pretrained(sweep, trial, trial_id, uri, parent)
        ray.tune.report({**metrics, "mlflow_run_id": run_id, "done_trial": 1})
        return
    cfg = trial_config(sweep, trial, {
        "tracking": {"tracking_uri": uri, "experiment": sweep.tracking.experiment, "parent_run_id": parent,
                     "run_name": trial.key},
        "ray": {"run_name": f"train-{trial_id}", "storage_path": config["storage_path"]},
    })
    existing = find_child_run(uri, parent, trial_id)
    result = fit(cfg, callbacks=[TuneReportCallback()], mlflow_run_id=existing, tags=trial_tags(sweep, trial, trial_id))
    metrics = {k: v for k, v in result.metrics.items() if isinstance(v, (int, float))}
    if sweep.eval_config:
        metrics.update(evaluate_trial(sweep, result, uri, trial.domain))
    ray.tune.report({**metrics, "mlflow_run_id": result.mlflow_run_id, "done_trial": 1})


def evaluate_trial(sweep: SweepConfig, fitted, tracking_uri: str, domain: str = "") -> dict:
    """Evaluate the trial's exported model (``fitted``: the ``FitResult``, whose
    ``hf_model_path`` is the model) and log the scores on the trial's own MLflow run."""
    from emo_ray.evaluation import evaluate_and_log

    if not fitted.hf_model_path:
        raise ValueError(f"trial run {fitted.mlflow_run_id} exported no model (no hf_model_path) to evaluate")
    cfg = eval_config(sweep, {"tracking": {"tracking_uri": tracking_uri, "experiment": sweep.tracking.experiment,
                                           "log_to_source_run": True}}, domain=domain)
    _, result = evaluate_and_log(fitted.hf_model_path, cfg, source_run=fitted.mlflow_run_id)
    return dict(result.metrics)


def evaluate_pretrained(sweep: SweepConfig, trial: Trial, trial_id: str, tracking_uri: str,
                        parent_run_id: str) -> tuple[dict, str]:
    """Evaluate the untrained ``trial.model`` with the domain's evaluation config on a child run of
    the sweep (tagged ``emo_ray.kind=pretrained`` and carrying the trial record).

    Resumable like a fine-tuning trial: the child run is found by trial id; a FINISHED one is
    kept as it is (its metrics are reported again, nothing is re-evaluated or duplicated), an
    unfinished one is evaluated again on the same run. A failure marks the run FAILED and raises,
    so Tune records the trial as errored and ``--resume`` retries it, as for training trials.
    """
    from emo_ray.evaluation.run import log_result_to_run, resolve_model, run_evaluation

    client = tracking.client(tracking_uri)
    run_id = find_child_run(tracking_uri, parent_run_id, trial_id)
    if run_id and client.get_run(run_id).info.status == "FINISHED":
        return dict(client.get_run(run_id).data.metrics), run_id
    if run_id is None:
        experiment = client.get_run(parent_run_id).info.experiment_id
        run_tags = {tags.PARENT_RUN_ID: parent_run_id, **trial_tags(sweep, trial, trial_id)}
        run_id = client.create_run(experiment, run_name=trial.key, tags=run_tags).info.run_id
    else:
        client.update_run(run_id, status="RUNNING")
    try:
        cfg = eval_config(sweep, {"tracking": {"tracking_uri": tracking_uri}}, domain=trial.domain)
        path, _ = resolve_model(trial.model, tracking_uri)
        result = run_evaluation(path, cfg)
        log_result_to_run(result, run_id, client)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    from emo_ray.evaluation.run import METRIC_PREFIX

    return {f"{METRIC_PREFIX}{k}": v for k, v in result.metrics.items()}, run_id
