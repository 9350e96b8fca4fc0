"""Storage faults while a checkpoint is written (issue 25.3), through `emo-ray train` on real
local Ray + DeepSpeed + MLflow (SQLite in tmp): a full disk and a checkpoint folder the run cannot
write each end in one line naming the path and the cause, exit 1, the run FAILED with its
``emo_ray.failure`` tag, no partial checkpoint folder, and the same command then resumes.

The full disk is injected (``EMO_RAY_TEST_CHECKPOINT_FAULT=ENOSPC@4``: rank 0's write of step 4
fails after DeepSpeed wrote its files, as a disk filling mid-write does); the unwritable folder is
real: immutable (``chattr +i``) as root, who ignores permission bits, read-only otherwise."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from emo_ray.typed_config import REPO_ROOT

pytestmark = pytest.mark.integration

ARGS = ["model.name=tiny-llama", "data.block_size=64", "data.max_train_tokens=4096", "data.max_validation_blocks=4",
        "train.micro_batch_size=4", "train.lr=1e-3", "train.warmup_steps=0", "train.max_steps=6",
        "train.checkpoint_every=2", "ray.max_failures=0", "train.zero_stage=0", "tracking.experiment=storage"]


def _train(tmp_path, name: str, workers: int, **env_extra) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}", **env_extra)
    args = [*ARGS, f"ray.num_workers={workers}", f"ray.run_name={name}", f"ray.storage_path={tmp_path / 'runs'}"]
    code = "import sys; from emo_ray.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, "train", str(REPO_ROOT / "configs" / "tiny_smoke.yaml"), *args],
                          env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=900)


def _the_run(tmp_path):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("storage").experiment_id])
    return client, run


def _assert_one_line_failure(proc, path, cause: str) -> str:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    assert "Traceback" not in out and "Error:" not in proc.stdout, out[-3000:]
    # the workers' start-up notes (precision) may come before it; the failure is one line, the last
    lines = [line for line in out.splitlines() if "error" in line.lower() or "errno" in line.lower()]
    assert len(lines) == 1 and proc.stderr.rstrip().splitlines()[-1] == lines[0], out[-3000:]
    assert lines[0].startswith("emo-ray train: storage error: checkpoint of step 4 not written to "), lines
    assert str(path) in lines[0] and cause in lines[0] and "rerun the same command" in lines[0], lines
    return lines[0]


def _assert_no_partial_checkpoint(run_dir, *, foreign=()):
    """Every folder named like a checkpoint is a complete DeepSpeed one (``latest`` written last
    by DeepSpeed), and no staging folder is left."""
    assert not list(run_dir.glob(".*partial*")), sorted(p.name for p in run_dir.iterdir())
    for p in run_dir.glob("checkpoint_step_*"):
        if p.is_dir() and p.name not in foreign:
            assert (p / "latest").exists(), f"incomplete checkpoint folder {p}: {sorted(os.listdir(p))}"


def _assert_resumes(tmp_path, name: str, workers: int, run_id: str):
    proc = _train(tmp_path, name, workers)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    client, run = _the_run(tmp_path)
    assert run.info.run_id == run_id and run.info.status == "FINISHED"
    assert run.data.tags["emo_ray.resumed_from_step"] == "2"
    assert [m.step for m in client.get_metric_history(run_id, "train/loss")] == list(range(1, 7))


def _make_unwritable(folder) -> callable:
    """``folder`` (holding a file) made unwritable for this user; returns the undo."""
    if os.geteuid() != 0:
        os.chmod(folder, 0o555)
        return lambda: os.chmod(folder, 0o755)
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("root, and chattr +i is refused on this filesystem: no folder root cannot write")
    return lambda: subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_full_disk_then_unwritable_folder_while_checkpointing_then_resume(tmp_path):
    """One run, two faults at the same checkpoint, one resume (one end-to-end path, three
    commands): the full disk first, then the rerun finds the checkpoint folder unwritable."""
    run_dir = tmp_path / "runs" / "faults"
    target = run_dir / "checkpoint_step_0000004"  # the folder the checkpoint of step 4 goes to

    proc = _train(tmp_path, "faults", 2, EMO_RAY_TEST_CHECKPOINT_FAULT="ENOSPC@4")
    line = _assert_one_line_failure(proc, target, "No space left on device (ENOSPC)")
    _, run = _the_run(tmp_path)
    assert run.info.status == "FAILED"
    assert run.data.tags["emo_ray.failure"] == "StorageFault: " + line.split("storage error: ", 1)[1].split("; rerun")[0]
    assert (run_dir / "checkpoint_step_0000002" / "latest").exists()  # the last complete one stays
    assert not target.exists()
    _assert_no_partial_checkpoint(run_dir)

    target.mkdir()
    (target / "left-by-someone-else").write_text("x")
    undo = _make_unwritable(target)
    try:
        proc = _train(tmp_path, "faults", 2)  # resumes from step 2 and meets the folder at step 4
        _assert_one_line_failure(proc, target, "(E")  # EPERM (immutable) or EACCES (read-only)
        _, again = _the_run(tmp_path)
        assert again.info.run_id == run.info.run_id
        assert again.info.status == "FAILED" and str(target) in again.data.tags["emo_ray.failure"]
        _assert_no_partial_checkpoint(run_dir, foreign={target.name})
        assert os.listdir(target) == ["left-by-someone-else"]
    finally:
        undo()
    _assert_resumes(tmp_path, "faults", 2, run.info.run_id)
