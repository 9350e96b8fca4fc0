"""How a checkpoint is written into the run's storage (issue 27.4) and what a failed write leaves
(issue 25.3): committed whole under its name, or nothing under its name and no partial folder.
One process, Ray Train's storage context replaced by the run folder in tmp (the real Ray Train
path: tests/train/test_checkpoint_storage_integration.py, tests/reliability/test_storage_faults.py)."""
from __future__ import annotations

import errno
from types import SimpleNamespace

import pyarrow.fs
import pytest

from emo_ray import storage as storage_lib
from emo_ray.train import checkpoint_io
from emo_ray.train.checkpoint_io import CheckpointWriteError


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    import ray.train

    run = tmp_path / "runs" / "r"
    storage = SimpleNamespace(storage_filesystem=pyarrow.fs.LocalFileSystem(),
                              build_checkpoint_path_from_name=lambda name: str(run / name))
    monkeypatch.setattr(ray.train, "get_context", lambda: SimpleNamespace(get_storage=lambda: storage))
    monkeypatch.delenv(checkpoint_io.FAULT_ENV, raising=False)
    return run


def _write(folder, n=3):
    for i in range(n):
        (folder / f"shard{i}.pt").write_bytes(b"x" * 64)


def test_a_checkpoint_is_written_in_place_and_committed_whole(run_dir):
    with checkpoint_io.writing("checkpoint_step_0000004", 4, 0) as (folder, direct):
        assert direct and folder.parent == run_dir and folder.name.endswith(".partial")
        _write(folder)
        assert not (run_dir / "checkpoint_step_0000004").exists()  # not under its name until whole
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoint_step_0000004"]
    assert len(list((run_dir / "checkpoint_step_0000004").iterdir())) == 3


@pytest.mark.parametrize("fault", [OSError(errno.ENOSPC, "No space left on device"),
                                   RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")])
def test_a_failed_write_leaves_nothing_and_names_path_and_cause(run_dir, fault):
    with pytest.raises(CheckpointWriteError) as info:
        with checkpoint_io.writing("checkpoint_step_0000004", 4, 0) as (folder, _):
            _write(folder, 2)
            raise fault
    line = str(info.value)
    assert line.startswith(f"CheckpointWriteError: checkpoint of step 4 not written to {run_dir / 'checkpoint_step_0000004'}: ")
    assert ("No space left on device (ENOSPC)" if isinstance(fault, OSError) else "file write failed") in line
    assert list(run_dir.iterdir()) == []  # neither the partial folder nor one under the name


def test_the_line_names_the_checkpoint_folder_not_a_file_inside_it():
    final = checkpoint_io.Path("/r/checkpoint_step_0000004")
    for name in ("left-by-someone-else", "/r/.checkpoint_step_0000004.partial/mp_rank_00_model_states.pt", None):
        e = PermissionError(errno.EPERM, "Operation not permitted", name)
        assert f"not written to {final}: Operation not permitted (EPERM)" in checkpoint_io.describe_fault(4, e, final)
    e = OSError(errno.EROFS, "Read-only file system", "/r")  # outside it: that path is the cause
    assert "not written to /r: Read-only file system (EROFS)" in checkpoint_io.describe_fault(4, e, final)


def test_a_program_error_is_not_a_storage_fault_but_still_cleans_up(run_dir):
    with pytest.raises(KeyError):
        with checkpoint_io.writing("checkpoint_step_0000002", 2, 0) as (folder, _):
            _write(folder, 1)
            raise KeyError("bug")
    assert list(run_dir.iterdir()) == []


def test_a_stale_copy_under_the_name_is_replaced(run_dir):
    stale = run_dir / "checkpoint_step_0000006"  # committed by an attempt that died before reporting it
    stale.mkdir(parents=True)
    (stale / "half").write_text("old")
    (run_dir / ".checkpoint_step_0000006.partial").mkdir()  # and a dead attempt's staging folder
    with checkpoint_io.writing("checkpoint_step_0000006", 6, 0) as (folder, _):
        _write(folder, 1)
    assert sorted(p.name for p in stale.iterdir()) == ["shard0.pt"]
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoint_step_0000006"]


def test_the_fault_hook_fails_rank0_at_its_step_only(run_dir, monkeypatch):
    monkeypatch.setenv(checkpoint_io.FAULT_ENV, "ENOSPC@4")
    for step, rank in ((2, 0), (4, 1)):
        with checkpoint_io.writing(f"checkpoint_step_{step:07d}", step, rank) as (folder, _):
            _write(folder, 1)
    with pytest.raises(CheckpointWriteError, match=r"step 4 .*No space left on device \(ENOSPC\)"):
        with checkpoint_io.writing("checkpoint_step_0000004", 4, 0) as (folder, _):
            _write(folder, 1)
    assert not list(run_dir.glob(".*"))


def test_the_driver_finds_the_fault_line_in_rays_error_and_removes_leftovers(tmp_path):
    worker_error = RuntimeError("Training failed due to worker errors:\n[Rank 0 Error Snippet]:\nTraceback ...\n"
                                "emo_ray.train.checkpoint_io.CheckpointWriteError: CheckpointWriteError: checkpoint "
                                "of step 4 not written to /r/checkpoint_step_0000004: No space left on device (ENOSPC)")
    try:
        raise ValueError("outer") from worker_error
    except ValueError as e:
        found = storage_lib.storage_fault_line(e)
    assert found == "checkpoint of step 4 not written to /r/checkpoint_step_0000004: No space left on device (ENOSPC)"
    assert storage_lib.storage_fault_line(RuntimeError("something else")) is None
    (tmp_path / ".checkpoint_step_0000004.partial").mkdir()
    (tmp_path / "checkpoint_step_0000002").mkdir()
    assert checkpoint_io.remove_partial(str(tmp_path)) == [str(tmp_path / ".checkpoint_step_0000004.partial")]
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_step_0000002"]
