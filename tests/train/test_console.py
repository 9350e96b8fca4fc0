"""What `emo-ray train` prints: a short log with a progress bar and ETA, the summary last."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emo_ray import console

REPO = Path(__file__).resolve().parents[2]


def test_bar_prints_a_line_per_tenth_with_eta_when_not_a_tty():
    out = io.StringIO()
    bar = console.Bar(50, "train", unit="steps", stream=out, tty=False)
    for i in range(1, 51):
        bar.update(i, {"loss": 3.0 - i / 100, "tok/s": 12345.0, "lr": 2e-5})
        time.sleep(0.001)
    bar.close()
    lines = out.getvalue().splitlines()
    assert 9 <= len(lines) <= 11, lines
    assert all("ETA" in line and "/50 steps" in line for line in lines)
    assert lines[-1].startswith("train: 100% 50/50 steps") and "loss 2.500" in lines[-1] and "12.3k" in lines[-1]


def test_average_over_ranks():
    from emo_ray.train.progress import average_reports

    avg = average_reports([{"step": 3, "loss": 1.0, "lr": 1e-3, "tag": "x"}, {"step": 3, "loss": 3.0, "lr": 1e-3}])
    assert avg == {"step": 3, "loss": 2.0, "lr": 1e-3}


def test_verbosity_reaches_the_workers_env(monkeypatch):
    monkeypatch.delenv(console.VERBOSE_ENV, raising=False)
    quiet = console.worker_env()
    assert quiet[console.VERBOSE_ENV] == "0" and "all_gather_into_tensor" in quiet["PYTHONWARNINGS"]
    assert quiet["RAY_DATA_LOG_LEVEL"] == "ERROR"
    monkeypatch.setenv(console.VERBOSE_ENV, "1")
    loud = console.worker_env()
    # Verbose brings back the libraries' own output; telemetry stays off either way.
    assert loud[console.VERBOSE_ENV] == "1" and console.verbose()
    assert "PYTHONWARNINGS" not in loud and "RAY_DATA_LOG_LEVEL" not in loud


def test_mlflow_ui_link_opens_the_runs_table():
    cmd, url = console.mlflow_ui("sqlite:////tmp/x/mlflow.db", "7")
    assert cmd == "mlflow ui --backend-store-uri sqlite:////tmp/x/mlflow.db --port 5000"
    assert url == "http://127.0.0.1:5000/#/experiments/7/runs?compareRunsMode=TABLE"
    assert console.mlflow_ui("http://mlflow:5000/", "3") == ("", "http://mlflow:5000/#/experiments/3/runs?compareRunsMode=TABLE")


def test_quieting_finds_ray_trains_report_logger_without_importing_it():
    """The per-rank "Reporting training result" logger is named after its module's file: the path
    computed without importing Ray Train must be that file (a Ray upgrade that moves it fails here)."""
    import logging

    from ray.train.v2._internal.execution import context

    console.quiet_libraries()
    assert logging.getLogger(context.__file__).level == logging.WARNING


def test_a_store_typo_is_one_line_without_loading_torch_ray_or_the_report(tmp_path):
    """`emo-ray report` with a mistyped store: the one-line error comes before any heavy import
    (it took 6-16 s of scipy, torch and Ray Train imports before)."""
    probe = ("import sys; from emo_ray.cli import main; code = main(sys.argv[1:]); "
             "heavy = [m for m in ('torch', 'ray', 'transformers', 'scipy', 'emo_ray.report') if m in sys.modules]; "
             "print(code, heavy)")
    out = subprocess.run([sys.executable, "-c", probe, "report", "s", "--tracking-uri", f"sqlite:///{tmp_path / 'mlfow.db'}"],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.stdout.strip() == "2 []", out.stdout + out.stderr
    assert "does not exist" in out.stderr


def _emo_ray_train(tmp_path, *extra_env_and_args, verbose: bool = False):
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", console.VERBOSE_ENV)}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    if verbose:
        env[console.VERBOSE_ENV] = "1"
    exe = Path(sys.executable).with_name("emo-ray")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "emo_ray.cli"]
    # stderr into stdout: one stream in the order a person sees it.
    return subprocess.run([*cmd, "train", str(REPO / "configs/tiny_smoke.yaml"), *extra_env_and_args], cwd=tmp_path,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900)


@pytest.mark.integration
def test_emo_ray_train_console_is_short_with_progress_and_summary_last(tmp_path):
    proc = _emo_ray_train(tmp_path)
    text = proc.stdout
    assert proc.returncode == 0, text[-3000:]
    lines = text.splitlines()
    assert len(lines) < 60, text
    assert "Reporting training result" not in text and "FutureWarning" not in text, text
    bars = [line for line in lines if line.startswith("train emo:")]
    assert bars and all("ETA" in line for line in bars), text
    assert "100% 8/8 steps" in bars[-1]
    # The summary is the last block, and nothing follows it.
    blocks = text.rstrip().split("\n\n")
    assert blocks[-1].splitlines()[0] == "Training finished", text
    assert "val_ppl" in blocks[-1] and "/hf" in blocks[-1]
    last = text.rstrip().splitlines()[-1]
    assert last.strip().startswith("runs table") and "/runs?compareRunsMode=TABLE" in last, text


@pytest.mark.integration
def test_verbose_brings_back_the_per_rank_reports(tmp_path):
    proc = _emo_ray_train(tmp_path, "train.max_steps=3", "train.checkpoint_every=0", verbose=True)
    text = proc.stdout
    assert proc.returncode == 0, text[-3000:]
    assert "Reporting training result" in text, text[-3000:]  # Ray Train's own per-rank dumps, from the workers
    assert proc.stdout.rstrip().split("\n\n")[-1].startswith("Training finished")
