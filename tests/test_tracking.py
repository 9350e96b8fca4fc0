"""Tracking helpers: experiment kind, provenance tags, metric prefixes, dataset inputs."""
from __future__ import annotations

import numpy as np

from emo_ray import tracking
from tests.conftest import fresh_store


def test_experiment_opens_as_runs_table_and_run_carries_provenance(tmp_path, monkeypatch):
    import mlflow

    uri = fresh_store(tmp_path / "m.db")
    assert tracking.setup(uri, "kinds") == uri
    exp = mlflow.get_experiment_by_name("kinds")
    assert exp.tags[tracking.EXPERIMENT_KIND_TAG] == tracking.EXPERIMENT_KIND
    tags = tracking.provenance_tags()
    assert len(tags["emo_ray.git_commit"]) == 40
    assert tags["emo_ray.version.mlflow"] == mlflow.__version__
    blocks = np.arange(64, dtype=np.int64).reshape(4, 16)
    with tracking.run("r") as run:
        tracking.log_dataset(blocks, name="toy/train", source=str(tmp_path / "train.jsonl"))
        tracking.log_metrics(tracking.prefixed({"loss": 1.0, "bad": float("nan")}, "train/"))
    got = mlflow.get_run(run.info.run_id)
    assert set(got.data.metrics) == {"train/loss", "nonfinite_metrics"}
    (inp,) = got.inputs.dataset_inputs
    assert inp.dataset.name == "toy/train" and inp.dataset.digest
    assert {t.key: t.value for t in inp.tags}["tokens"] == "64"
