"""kill -9 of the training driver, then the same command again: the same MLflow run continues
(no second run, no step logged twice) and nothing stays RUNNING."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from emo_ray.config import REPO_ROOT

pytestmark = pytest.mark.integration

ARGS = ["model.name=tiny-llama", "data.block_size=64", "data.max_train_tokens=4096", "data.max_validation_blocks=4",
        "train.micro_batch_size=4", "train.lr=1e-3", "train.max_steps=40", "train.checkpoint_every=4",
        "ray.num_workers=1", "train.zero_stage=0", "tracking.experiment=killed", "ray.run_name=killme"]


CONFIG = str(REPO_ROOT / "configs" / "tiny_smoke.yaml")


def _tree(pid: int) -> list:
    import psutil

    try:
        p = psutil.Process(pid)
        return [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def test_sigkilled_driver_resumes_the_same_mlflow_run(mlflow_uri, tmp_path):
    import psutil
    from mlflow import MlflowClient

    args = [*ARGS, f"ray.storage_path={tmp_path / 'runs'}"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_uri, "RAY_ADDRESS": ""}
    env.pop("RAY_ADDRESS")
    code = f"import sys; from emo_ray.cli import main; sys.exit(main(['train', {CONFIG!r}, *{args!r}]))"
    driver = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=open(tmp_path / "driver.err", "w"))
    client = MlflowClient(mlflow_uri)
    procs, run_id = [], None
    try:
        deadline = time.time() + 600
        while time.time() < deadline and driver.poll() is None:
            time.sleep(0.5)
            procs = list({p.pid: p for p in [*procs, *_tree(driver.pid)]}.values())
            exp = client.get_experiment_by_name("killed")
            if not exp:
                continue
            found = client.search_runs([exp.experiment_id])
            if found and len(client.get_metric_history(found[0].info.run_id, "train/loss")) >= 6:
                run_id = found[0].info.run_id
                break
        assert run_id, f"the driver never logged 6 steps: {(tmp_path / 'driver.err').read_text()[-3000:]}"
        driver.send_signal(signal.SIGKILL)
        driver.wait(30)
    finally:
        if driver.poll() is None:
            driver.kill()
        for p in procs:  # what that driver started (its local Ray), by PID, if still there
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(list(procs), timeout=30)
    assert client.get_run(run_id).info.status == "RUNNING"  # what the kill left behind

    from emo_ray.config import load_config
    from emo_ray.train import fit

    result = fit(load_config(CONFIG, args))
    assert result.mlflow_run_id == run_id  # the same MLflow run, not a second one
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and "emo_ray.stale_run_recovered" in run.data.tags
    assert len(client.search_runs([run.info.experiment_id])) == 1
    steps = [m.step for m in client.get_metric_history(run_id, "train/loss")]
    assert sorted(steps) == list(range(1, 41)), steps  # each step once
