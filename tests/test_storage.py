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
