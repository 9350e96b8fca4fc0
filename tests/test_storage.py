"""Storage paths: local folders become absolute, cloud URIs pass through untouched (a resolved
``s3://bucket`` would become ``/cwd/s3:/bucket``), and the sweep state file round-trips."""
from __future__ import annotations

from pathlib import Path

from emo_ray import storage


def test_uris_are_left_alone_local_paths_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.resolve("s3://bucket/emo/runs") == "s3://bucket/emo/runs"
    assert storage.resolve("gs://b/x") == "gs://b/x"
    assert storage.resolve("runs") == str(tmp_path / "runs")
    assert storage.join("s3://bucket/emo/", "sweep", "tune") == "s3://bucket/emo/sweep/tune"
    assert storage.join(str(tmp_path), "sweep", "tune") == str(tmp_path / "sweep" / "tune")


def test_state_file_round_trip_creates_parents(tmp_path):
    path = storage.join(str(tmp_path), "sweep", "deep", "state.json")
    assert not storage.exists(path)
    storage.write_text(path, '{"parent_run_id": "abc"}')
    assert storage.exists(path) and Path(path).is_file()
    assert storage.read_text(path) == '{"parent_run_id": "abc"}'


def _memory_fs():
    """A non-local pyarrow filesystem (fsspec's in-memory one, as pyarrow wraps any fsspec
    filesystem): what an s3:// bucket is to the code, without a network."""
    import fsspec
    import pyarrow.fs

    mem = fsspec.filesystem("memory")
    return mem, pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(mem))


def test_exists_looks_on_the_given_filesystem_not_the_local_disk(tmp_path):
    mem, fs = _memory_fs()
    remote = "/emo-bucket/runs/ckpt/hf/config.json"
    mem.pipe(remote, b"{}")
    try:
        assert not Path(remote).exists()
        assert storage.exists(remote, filesystem=fs)  # found where it is, not on this disk
        local = tmp_path / "ckpt" / "hf" / "config.json"
        local.parent.mkdir(parents=True)
        local.write_text("{}")
        assert storage.exists(str(local)) and not storage.exists(str(local), filesystem=fs)
    finally:
        mem.rm("/emo-bucket", recursive=True)


def test_fit_finds_the_export_on_the_checkpoints_filesystem(tmp_path):
    """``fit`` records the exported model (what sweep evaluation reads) only if the final
    checkpoint holds ``hf/config.json``: looked up on the filesystem Ray wrote the checkpoint to
    (an s3 bucket, here an in-memory filesystem; Ray reports remote paths without their scheme),
    not on the local disk."""
    from ray.train import Checkpoint

    from emo_ray.train.finalize import checkpoint_uri, exported_model

    mem, fs = _memory_fs()
    mem.pipe("/emo-bucket/runs/r1/checkpoint_000000/hf/config.json", b"{}")
    mem.pipe("/emo-bucket/runs/r2/checkpoint_000000/trainer_state.json", b"{}")
    try:
        ckpt = Checkpoint("emo-bucket/runs/r1/checkpoint_000000", filesystem=fs)
        uri = checkpoint_uri("s3://emo-bucket/runs", ckpt.path)
        assert uri == "s3://emo-bucket/runs/r1/checkpoint_000000"
        assert exported_model(ckpt, uri) == "s3://emo-bucket/runs/r1/checkpoint_000000/hf"
        bare = Checkpoint("emo-bucket/runs/r2/checkpoint_000000", filesystem=fs)  # no export
        assert exported_model(bare, checkpoint_uri("s3://emo-bucket/runs", bare.path)) is None
        assert exported_model(None, None) is None
    finally:
        mem.rm("/emo-bucket", recursive=True)
    local = tmp_path / "checkpoint_000000"
    (local / "hf").mkdir(parents=True)
    (local / "hf" / "config.json").write_text("{}")
    assert exported_model(Checkpoint(str(local)), str(local)) == str(local / "hf")
