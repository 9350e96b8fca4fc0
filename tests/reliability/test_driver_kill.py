"""kill -9 of the training driver: no Ray process it started stays (the watchdog), and the same
command again continues the same MLflow run (no second run, no step logged twice) and nothing
stays RUNNING. One killed driver holds both guarantees: they walk the same path."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from emo_ray.typed_config import REPO_ROOT

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


def _alive(procs) -> list:
    """The processes of ``procs`` still running (a zombie has exited: only its parent's wait is missing)."""
    import psutil

    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def _start_driver(tmp_path, mlflow_uri, args) -> subprocess.Popen:
    """`emo-ray train` in a process group of its own, as a shell starts a command."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_uri, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("RAY_ADDRESS", None)  # never join a cluster that happens to run on this machine
    return subprocess.Popen([sys.executable, "-m", "emo_ray.cli", "train", CONFIG, *args], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "driver.err", "w"),
                            start_new_session=True)


def _wait_for_steps(driver, client, procs: dict, n: int) -> str | None:
    """Poll until the run logged ``n`` steps; collect the driver's process tree on the way."""
    deadline = time.time() + 600
    while time.time() < deadline and driver.poll() is None:
        time.sleep(0.5)
        procs.update({p.pid: p for p in _tree(driver.pid)})
        exp = client.get_experiment_by_name("killed")
        found = client.search_runs([exp.experiment_id]) if exp else []
        if found and len(client.get_metric_history(found[0].info.run_id, "train/loss")) >= n:
            procs.update({p.pid: p for p in _tree(driver.pid)})
            return found[0].info.run_id
    return None


def test_sigkilled_driver_leaves_no_ray_process_and_resumes_the_same_mlflow_run(mlflow_uri, tmp_path):
    """Without the watchdog the raylet's DashboardAgent and RuntimeEnvAgent outlived a SIGKILLed
    driver by 40 s to 3 min (measured), listening on every interface."""
    import psutil
    from mlflow import MlflowClient

    args = [*ARGS, f"ray.storage_path={tmp_path / 'runs'}"]
    driver = _start_driver(tmp_path, mlflow_uri, args)
    client = MlflowClient(mlflow_uri)
    procs: dict = {}
    try:
        run_id = _wait_for_steps(driver, client, procs, 6)
        assert run_id, f"the driver never logged 6 steps: {(tmp_path / 'driver.err').read_text()[-3000:]}"
        names = {p.name() for p in _alive(procs.values())}
        assert "ray::DashboardAgent" in names or "ray::RuntimeEnvAgent" in names, names
        driver.send_signal(signal.SIGKILL)
        driver.wait(30)
        # the watchdog polls each second, grants Ray 3 s, then stops what is left (its own exit
        # included); a loaded machine stretches that, so a minute is allowed
        _, left = psutil.wait_procs([p for p in procs.values() if p.pid != driver.pid], timeout=60)
        left = _alive(left)
        assert not left, [(p.pid, p.name()) for p in left]
    finally:
        if driver.poll() is None:
            driver.kill()
        for p in _alive([p for p in procs.values() if p.pid != driver.pid]):  # never left to the suite
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
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
