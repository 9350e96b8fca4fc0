"""Ctrl-C (SIGINT) of ``emo-ray train``: one line naming the step and how to resume, exit code
130, the MLflow run ended KILLED (not FAILED), and every process the command started is gone; of
``emo-ray eval``: one line naming the stage, exit code 130. (After a SIGKILLed driver no Ray
process it started stays: tests/reliability/test_driver_kill.py, with the resume of that run.)"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from emo_ray.typed_config import REPO_ROOT
from tests.reliability.test_driver_kill import _alive, _tree

RAY_PREFIX = re.compile(r"^(\x1b\[\d+m)?\(\w[\w.]* pid=\d+")
CONFIG = str(REPO_ROOT / "configs" / "tiny_smoke.yaml")
ARGS = ["model.name=tiny-llama", "data.block_size=64", "data.max_train_tokens=4096", "data.max_validation_blocks=4",
        "train.micro_batch_size=4", "train.lr=1e-3", "train.max_steps=400", "train.checkpoint_every=4",
        "ray.num_workers=1", "train.zero_stage=0", "tracking.experiment=interrupted", "ray.run_name=ctrlc"]


def _start(tmp_path, mlflow_uri, command: list[str]) -> subprocess.Popen:
    """The CLI in a process group of its own, as a shell starts a command (Ctrl-C in a terminal
    signals that whole group: the driver and the local Ray it started)."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_uri, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("RAY_ADDRESS", None)  # never join a cluster that happens to run on this machine
    # SIGINT back to its default in the child: a test run started in the background of a shell
    # without job control (a CI script under nohup) inherits it ignored, and Python then installs
    # no KeyboardInterrupt handler, as `nohup` intends, so Ctrl-C would never reach the CLI.
    return subprocess.Popen([sys.executable, "-m", "emo_ray.cli", *command], env=env, cwd=tmp_path,
                            stdout=open(tmp_path / "out.txt", "w"), stderr=open(tmp_path / "err.txt", "w"),
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


@pytest.mark.integration
@pytest.mark.parametrize("whom", ["group", "driver"])  # a terminal's Ctrl-C, and `kill -INT <driver pid>`
def test_ctrl_c_of_train_is_one_line_exit_130_run_killed_nothing_left(mlflow_uri, tmp_path, whom):
    import psutil
    from mlflow import MlflowClient

    driver = _start(tmp_path, mlflow_uri, ["train", CONFIG, *ARGS, f"ray.storage_path={tmp_path / 'runs'}"])
    client = MlflowClient(mlflow_uri)
    procs, run_id = {}, None
    try:
        deadline = time.time() + 600
        while time.time() < deadline and driver.poll() is None:
            time.sleep(0.5)
            procs.update({p.pid: p for p in _tree(driver.pid)})
            exp = client.get_experiment_by_name("interrupted")
            found = client.search_runs([exp.experiment_id]) if exp else []
            if found and len(client.get_metric_history(found[0].info.run_id, "train/loss")) >= 3:
                run_id = found[0].info.run_id
                break
        assert run_id, f"the driver never logged 3 steps: {(tmp_path / 'err.txt').read_text()[-3000:]}"
        procs.update({p.pid: p for p in _tree(driver.pid)})
        assert len(procs) > 3  # the local Ray the command started: GCS, raylet, workers...
        if whom == "group":
            os.killpg(driver.pid, signal.SIGINT)
        else:
            driver.send_signal(signal.SIGINT)
        code = driver.wait(180)
    finally:
        if driver.poll() is None:
            driver.kill()
        _, left = psutil.wait_procs([p for p in procs.values() if p.pid != driver.pid], timeout=60)
        left = _alive(left)
        for p in left:  # never leave them to the rest of the suite, whatever the assertions say
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
    err = (tmp_path / "err.txt").read_text()
    assert code == 130, err[-3000:]
    # The driver's own lines (Ray forwards its processes' output prefixed "(Name pid=N)": on a
    # loaded machine that can include a controller's harmless timeout trace).
    own = [ln for ln in err.splitlines() if not RAY_PREFIX.match(ln)]
    lines = [ln for ln in own if "interrupted" in ln]
    assert len(lines) == 1 and not any("Traceback" in ln for ln in own), err[-3000:]
    step = int(re.search(r"interrupted at step (\d+)", lines[0]).group(1))
    assert step >= 3 and "ray.run_name=ctrlc" in lines[0] and "rerun the same command to resume" in lines[0]
    run = client.get_run(run_id)
    assert run.info.status == "KILLED", run.info.status
    assert not [p for p in left], [(p.pid, p.name()) for p in left]


def test_ctrl_c_of_eval_is_one_line_naming_the_stage_exit_130(mlflow_uri, monkeypatch, capsys):
    """Ctrl-C while sampling (simulated where the evaluation runs): nothing recorded, one line."""
    from mlflow import MlflowClient

    from emo_ray import console
    from emo_ray.cli import main
    from emo_ray.evaluation import run as eval_run

    def sampling_interrupted(*_a, **_k):
        with console.stage("gen wikitext-2"):
            raise KeyboardInterrupt

    monkeypatch.setattr(eval_run, "run_evaluation", sampling_interrupted)
    try:
        code = main(["eval", "model=tiny-llama", "tracking.experiment=eval-ctrlc"])
    except KeyboardInterrupt:  # what an unhandled Ctrl-C does: a traceback, exit status 1
        code = None
    assert code == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("emo-ray eval: interrupted during gen wikitext-2;"), err
    assert "nothing was recorded" in err[0] and "Rerun the same command" in err[0]
    exp = MlflowClient(mlflow_uri).get_experiment_by_name("eval-ctrlc")
    assert not exp or not MlflowClient(mlflow_uri).search_runs([exp.experiment_id])


def test_an_interrupted_mlflow_run_ends_killed_a_failed_one_failed(mlflow_uri):
    from mlflow import MlflowClient

    from emo_ray import tracking

    tracking.setup(mlflow_uri, "statuses")
    ids = {}
    for exc in (KeyboardInterrupt, RuntimeError):
        with pytest.raises(exc):
            with tracking.run(exc.__name__) as run:
                ids[exc] = run.info.run_id
                raise exc
    client = MlflowClient(mlflow_uri)
    assert client.get_run(ids[KeyboardInterrupt]).info.status == "KILLED"
    assert client.get_run(ids[RuntimeError]).info.status == "FAILED"


def test_the_interrupt_line_names_the_run_name_a_resume_needs():
    from emo_ray.train.lifecycle import TrainingInterrupted

    named = str(TrainingInterrupted(12, "mine", "abc", named=True))
    assert named.startswith("interrupted at step 12; rerun the same command to resume (ray.run_name=mine;")
    unnamed = str(TrainingInterrupted(5, "emo-ray-abc", "abc", named=False))
    assert "rerun the same command with ray.run_name=emo-ray-abc to resume" in unnamed
    assert "before training started" in str(TrainingInterrupted(None, None, None, named=False))


def test_the_failure_line_names_the_run_name_a_resume_needs(monkeypatch, capsys):
    """``fit`` marks a failure of an opened run with its MLflow run and ``ray.run_name``; the one
    line of a diverged run carries them."""
    import emo_ray.train
    from emo_ray.cli import main

    def fit(cfg):
        e = RuntimeError("Training failed due to worker errors\nTrainingDiverged: non-finite loss (nan) at step 3")
        e.emo_ray_context = "MLflow run abc FAILED; ray.run_name=mine"
        raise e

    monkeypatch.setattr(emo_ray.train, "fit", fit)
    assert main(["train", CONFIG]) == 3
    assert capsys.readouterr().err.strip() == ("emo-ray train: TrainingDiverged: non-finite loss (nan) at step 3 "
                                               "(MLflow run abc FAILED; ray.run_name=mine)")


DRIVER = """
import subprocess, sys, time
from emo_ray import ray_reaper

sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
other = subprocess.Popen(sleeper)  # started before "ray.init": not Ray's, must survive
before = ray_reaper.child_pids()
root = subprocess.Popen([sys.executable, "-c", f"import subprocess; subprocess.Popen({sleeper!r}); import time; time.sleep(600)"])
ray_reaper.watch(ray_reaper.child_pids() - before)
print(other.pid, root.pid, flush=True)
time.sleep(600)
"""


def test_the_watchdog_stops_exactly_the_processes_ray_started_once_the_driver_is_gone(tmp_path):
    """A stand-in driver: one child started before its "ray.init" (not Ray's) and one root with a
    child of its own (a head process and a worker). SIGKILL the driver: the root and its child are
    stopped, the other process is not."""
    import psutil

    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], env=env, stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    other = None
    try:
        other_pid, root_pid = map(int, driver.stdout.readline().split())
        other, root = psutil.Process(other_pid), psutil.Process(root_pid)
        time.sleep(3)  # the watchdog has seen the root's child
        ray_side = [root, *root.children(recursive=True)]
        assert len(ray_side) == 2
        driver.kill()
        driver.wait(10)
        _, left = psutil.wait_procs(ray_side, timeout=20)
        assert not _alive(left), left
        assert _alive([other]), "a process the driver started before Ray was stopped too"
    finally:
        if driver.poll() is None:
            driver.kill()
        for p in _alive([p for p in [other] if p]):
            p.kill()
