"""A real sweep (local Ray, Tune over Train, MLflow) stopped half-way and resumed. Its grid is a
plugin objective with two values of its own hyperparameter, so the same sweep also shows that a
new objective is swept without touching ``emo_ray/sweep/`` and that the end-of-sweep report
chooses between hyperparameter sets by validation loss (one sweep driver instead of two)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.sweep.test_toy_objective import TOY_GRID, write_toy_plugin

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
# 4096 tokens (8 steps) per trial: time for the Ctrl-C between the first trial's end and the second's
ARGS = ["cpu-small", TOY_GRID, "grid.data_tokens=[4096]", "name=resume-test"]


def children(uri):
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("emo-ray-sweeps")
    if exp is None:
        return []
    return [r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" in r.data.tags]


def stop_group(proc, sig, timeout):
    """Signal the process group *we* created for the driver (and its local Ray), then wait."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def test_interrupted_plugin_sweep_resumes_only_unfinished_trials_and_reports(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = [sys.executable, str(ROOT / "sweeps" / "scaling_law.py"), *ARGS, f"plugins=[{write_toy_plugin(tmp_path)}]",
              f"tracking.tracking_uri={uri}", f"storage_path={tmp_path / 'runs'}"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # Create the store before the driver starts: the polling below would otherwise race the
    # driver's own first-use schema migration of the same fresh SQLite file.
    children(uri)
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(common, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 420
        while time.time() < deadline and proc.poll() is None:
            if any(r.info.status == "FINISHED" for r in children(uri)):
                break
            time.sleep(2)
        assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        finished_first = {r.data.tags["emo_ray.trial_id"]: r.info.run_id for r in children(uri) if r.info.status == "FINISHED"}
        assert len(finished_first) == 1
        stop_group(proc, signal.SIGINT, timeout=90)  # Ctrl-C
    finally:
        if proc.poll() is None:
            stop_group(proc, signal.SIGKILL, timeout=30)
    out = subprocess.run([*common, "--resume"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    runs = children(uri)
    trial_ids = [r.data.tags["emo_ray.trial_id"] for r in runs]
    assert len(runs) == 2 and len(set(trial_ids)) == 2, [(r.info.run_name, r.info.status) for r in runs]
    assert all(r.info.status == "FINISHED" for r in runs)
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    (tid, rid), = finished_first.items()
    assert client.get_run(rid).data.tags["emo_ray.trial_id"] == tid
    steps = [m.step for m in client.get_metric_history(rid, "train/loss")]
    assert steps == sorted(set(steps)), "the finished trial was trained again"
    parent = client.get_run(runs[0].data.tags["mlflow.parentRunId"])
    assert parent.info.status == "FINISHED"
    assert "report/figure1.png" in {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    _assert_the_plugin_objective_was_swept(client, uri, parent.info.run_id, runs, tmp_path)


def _assert_the_plugin_objective_was_swept(client, uri, parent_id, runs, tmp_path):
    """Each trial trained the plugin's objective with its own ``scale``, and the end-of-sweep
    report chose between the two hyperparameter sets by validation loss."""
    import json

    import pandas as pd

    from emo_ray.report.collect import collect
    from emo_ray.sweep.trial import TRIAL_RECORD_TAG

    assert sorted(json.loads(r.data.tags[TRIAL_RECORD_TAG])["loss_kwargs"]["scale"] for r in runs) == [0.1, 3.0]
    assert {r.data.params["train.loss"] for r in runs} == {"toy_scaled_mle"}
    df = collect(parent_id, uri)
    points = pd.read_csv(client.download_artifacts(parent_id, "report/figure1_points.csv", str(tmp_path)))
    best = points[points.metric == "val_loss"]
    assert len(best) == 1 and best["hparams"].item() == df.sort_values("val/loss").iloc[0]["hparams"]
