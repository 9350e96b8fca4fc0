"""One Tune trial: fine-tune (Ray Train inside Tune), evaluate, report.

Ray 2.60's documented Tune-over-Train pattern: Tune runs this driver function, which builds
and fits a ``TorchTrainer`` with ``TuneReportCallback`` (``Tuner(trainer)`` raises
``Improper 'run'`` in this version). Names derive from the trial id, never a timestamp, so a
restored sweep finds the same Ray Train run (and resumes it from its checkpoint) and the same
MLflow child run (and does not duplicate it).
"""
from __future__ import annotations

from emo_ray.sweep.spec import SweepSpec, Trial, trial_config

TRIAL_TAG = "emo_ray.trial_id"


def find_child_run(tracking_uri: str, parent_run_id: str, trial_id: str) -> str | None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    parent = client.get_run(parent_run_id)
    found = client.search_runs(
        [parent.info.experiment_id],
        f"tags.`mlflow.parentRunId` = '{parent_run_id}' and tags.`{TRIAL_TAG}` = '{trial_id}'",
    )
    return found[0].info.run_id if found else None


def run_trial(config: dict) -> None:
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from emo_ray.train import fit

    spec = SweepSpec(**config["spec"])
    trial = Trial(**config["trial"])
    trial_id = ray.tune.get_context().get_trial_id()
    uri, parent = config["tracking_uri"], config["parent_run_id"]
    cfg = trial_config(spec, trial, [
        f"tracking.tracking_uri={uri}",
        f"tracking.experiment={config['experiment']}",
        f"tracking.parent_run_id={parent}",
        f"tracking.run_name={trial.key}",
        f"ray.run_name=train-{trial_id}",
        f"ray.storage_path={config['storage_path']}",
    ])
    existing = find_child_run(uri, parent, trial_id)
    tags = {TRIAL_TAG: trial_id, "emo_ray.trial_key": trial.key, "emo_ray.objective": trial.objective,
            "emo_ray.model": trial.model}
    result = fit(cfg, callbacks=[TuneReportCallback()], mlflow_run_id=existing, tags=tags)
    metrics = {k: v for k, v in result.metrics.items() if isinstance(v, (int, float))}
    if spec.eval_config:
        metrics.update(evaluate_trial(spec, result.mlflow_run_id, uri, config["experiment"]))
    ray.tune.report({**metrics, "mlflow_run_id": result.mlflow_run_id, "done_trial": 1})


def evaluate_trial(spec: SweepSpec, run_id: str, tracking_uri: str, experiment: str) -> dict:
    """Evaluate the trial's exported model and log the scores on the trial's own MLflow run."""
    from emo_ray.evaluation import evaluate_and_log, load_eval_config

    eval_cfg = load_eval_config(spec.eval_config, [
        *spec.eval_overrides,
        f"tracking.tracking_uri={tracking_uri}",
        f"tracking.experiment={experiment}",
        "tracking.log_to_source_run=true",
    ])
    _, result = evaluate_and_log(f"mlflow:{run_id}", eval_cfg)
    return dict(result.metrics)
