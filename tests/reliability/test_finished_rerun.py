"""The same command again after a run FINISHED never rewrites it: a rerun does nothing and says
so; even one that fails (here: interrupted where it would start Ray) leaves the finished run's
MLflow record and checkpoints byte-identical; ``ray.rerun_finished=new`` trains a new run linked
to it. The finished run is trained without validation data (it logs no val metrics), and a rerun
with a changed config is refused before anything opens: one run holds those guarantees too."""
from __future__ import annotations

import pytest

from emo_ray.config import ConfigError, load_config
from emo_ray.train import fit, launch

pytestmark = pytest.mark.integration

ARGS = ["model.name=tiny-llama", "data.block_size=64", "data.max_train_tokens=4096", "data.max_validation_blocks=4",
        "train.micro_batch_size=4", "train.lr=1e-3", "train.max_steps=4", "train.checkpoint_every=2",
        "ray.num_workers=1", "train.zero_stage=0", "tracking.experiment=rerun", "ray.run_name=done",
        "data.validation_fraction=0"]


def _record(client, run_id: str, storage) -> dict:
    """Everything a rerun could rewrite: the MLflow run (status, times, metrics with their
    history, params, tags) and every file under the Ray run's folder with its bytes."""
    run = client.get_run(run_id)
    return {"status": run.info.status, "end_time": run.info.end_time, "metrics": dict(run.data.metrics),
            "params": dict(run.data.params), "tags": dict(run.data.tags),
            "history": {k: [(m.step, m.value) for m in client.get_metric_history(run_id, k)] for k in run.data.metrics},
            "files": {str(p.relative_to(storage)): p.read_bytes() for p in sorted((storage / "done").rglob("*"))
                      if p.is_file()}}


def _interrupt_at_ray_start(*_a, **_k):
    raise KeyboardInterrupt  # Ctrl-C just after the run would have been (re)opened


def _fail_at_ray_start(*_a, **_k):
    raise RuntimeError("injected: no Ray for this rerun")


def _assert_no_validation_metrics(result, record):
    """``data.validation_fraction=0``: the run finishes and logs no val metrics."""
    assert "val/loss" not in record["metrics"] and "val/ppl" not in record["metrics"]
    assert "val_loss" not in result.metrics and "val_ppl" not in result.metrics


def _assert_a_changed_config_is_refused_and_a_neutral_change_is_not(client, args, first, before, storage):
    """Resume with weight-changing fields changed: refused, naming them, before a run opens; with
    only a neutral field changed (``train.log_every``): the same MLflow run, nothing rewritten."""
    n_runs = len(client.search_runs([first.experiment_id]))
    with pytest.raises(ConfigError, match=r"train\.loss .*train\.lr"):
        fit(load_config(None, [*args, "train.lr=1e-2", "train.loss=mle"]))
    assert len(client.search_runs([first.experiment_id])) == n_runs  # refused before a run opened
    again = fit(load_config(None, [*args, "train.log_every=2"]))
    assert again.mlflow_run_id == first.mlflow_run_id
    assert len(client.search_runs([first.experiment_id])) == n_runs
    assert _record(client, first.mlflow_run_id, storage) == before


def test_a_finished_run_is_never_rewritten(ray_local, mlflow_uri, tmp_path, monkeypatch, capsys):
    from mlflow import MlflowClient

    from emo_ray.cli import main

    real_init_ray = launch.init_ray
    storage = tmp_path / "runs"
    args = [*ARGS, f"ray.storage_path={storage}"]
    first = fit(load_config(None, args))
    client = MlflowClient(mlflow_uri)
    before = _record(client, first.mlflow_run_id, storage)
    assert before["status"] == "FINISHED" and before["history"]["train/loss"]
    _assert_no_validation_metrics(first, before)
    _assert_a_changed_config_is_refused_and_a_neutral_change_is_not(client, args, first, before, storage)

    # A rerun that fails once the run would be reopened (Ctrl-C): today's main reopened the
    # finished run and ended it KILLED / FAILED, rewriting its status.
    monkeypatch.setattr(launch, "init_ray", _interrupt_at_ray_start)
    try:
        again = fit(load_config(None, args))
    except KeyboardInterrupt:
        again = None
    assert _record(client, first.mlflow_run_id, storage) == before
    assert again is not None and again.already_finished and again.mlflow_run_id == first.mlflow_run_id
    assert again.hf_model_path == first.hf_model_path and again.metrics == first.metrics

    # The plain command again: one line naming the run and its model, exit 0, nothing written.
    config = tmp_path / "train.yaml"
    config.write_text("model:\n  name: tiny-llama\n")  # the defaults, as load_config(None, ...) has them
    capsys.readouterr()
    assert main(["train", str(config), *args]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "has finished already" in out[0], out
    assert first.mlflow_run_id in out[0] and first.hf_model_path in out[0]
    assert _record(client, first.mlflow_run_id, storage) == before

    # Asked for explicitly: a new run, linked to the finished one. It fails here, and the
    # finished run is still untouched.
    new = [*args, "ray.rerun_finished=new"]
    monkeypatch.setattr(launch, "init_ray", _fail_at_ray_start)
    with pytest.raises(RuntimeError, match="injected"):
        fit(load_config(None, new))
    assert _record(client, first.mlflow_run_id, storage) == before
    exp = client.get_experiment_by_name("rerun").experiment_id
    linked = client.search_runs([exp], f"tags.`emo_ray.rerun_of` = '{first.mlflow_run_id}'")
    assert len(linked) == 1 and linked[0].info.status == "FAILED"
    assert linked[0].info.run_id != first.mlflow_run_id

    # The same command again resumes that new run (same Ray run, same MLflow run) to the end.
    monkeypatch.setattr(launch, "init_ray", real_init_ray)
    rerun = fit(load_config(None, new))
    assert rerun.ray_run_name == "done-rerun2" and rerun.mlflow_run_id == linked[0].info.run_id
    assert client.get_run(rerun.mlflow_run_id).info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(rerun.mlflow_run_id, "train/loss")] == [1, 2, 3, 4]
    assert rerun.hf_model_path and rerun.hf_model_path != first.hf_model_path
    assert _record(client, first.mlflow_run_id, storage) == before
    assert len(client.search_runs([exp])) == 2
