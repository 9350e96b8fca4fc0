"""The pre-trained evaluation trial's MLflow bookkeeping (``evaluate_pretrained``), without Ray:
a child run of the sweep tagged ``emo_ray.kind=pretrained`` with its record; kept, not redone, when
the sweep is restored; FAILED and raised on error, then retried on the same run."""
import json

import pandas as pd
import pytest

from emo_ray.sweep import load_sweep_config
from emo_ray.sweep.spec import pretrained_trials
from emo_ray.sweep.trial import TRIAL_RECORD_TAG, evaluate_pretrained
from tests.conftest import fresh_store


@pytest.fixture
def fake_eval(monkeypatch):
    """Counts evaluations; fails while ``state['fail']`` is set."""
    from emo_ray.evaluation import run

    state = {"calls": 0, "fail": False}

    def fake(path, cfg):
        state["calls"] += 1
        if state["fail"]:
            raise RuntimeError("evaluation crashed")
        table = pd.DataFrame({"item": [0, 1], "correct": [True, False]})
        return run.EvalResult({"icl/avg_accuracy": 0.5}, {"icl/sst2": "settings"}, {"icl/sst2.json": table})

    monkeypatch.setattr(run, "run_evaluation", fake)
    monkeypatch.setattr(run, "resolve_model", lambda ref, uri=None: (f"/models/{ref}", None))
    return state


def test_pretrained_child_run_is_tagged_resumable_and_retried_after_failure(tmp_path, fake_eval):
    from mlflow import MlflowClient

    uri = fresh_store(tmp_path / "m.db")
    client = MlflowClient(uri)
    parent = client.create_run(client.create_experiment("s", str(tmp_path / "a"))).info.run_id
    sweep = load_sweep_config("cpu-small", ["eval_config=configs/eval/quick.yaml"])
    (trial,) = pretrained_trials(sweep)

    fake_eval["fail"] = True
    with pytest.raises(RuntimeError, match="crashed"):
        evaluate_pretrained(sweep, trial, "tid", uri, parent)
    (failed,) = client.search_runs([client.get_run(parent).info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'")
    assert failed.info.status == "FAILED"

    fake_eval["fail"] = False
    metrics, rid = evaluate_pretrained(sweep, trial, "tid", uri, parent)  # Tune's retry: the same run
    assert rid == failed.info.run_id and metrics["eval/icl/avg_accuracy"] == 0.5
    run = client.get_run(rid)
    assert run.info.status == "FINISHED" and run.data.tags["mlflow.parentRunId"] == parent
    assert run.data.tags["emo_ray.kind"] == "pretrained"
    assert json.loads(run.data.tags[TRIAL_RECORD_TAG])["model"] == "tiny-llama"
    assert run.data.metrics["eval/icl/avg_accuracy"] == 0.5
    assert any(a.path == "icl" for a in client.list_artifacts(rid))

    calls = fake_eval["calls"]
    again, rid2 = evaluate_pretrained(sweep, trial, "tid", uri, parent)  # restored sweep: kept as is
    assert rid2 == rid and fake_eval["calls"] == calls and again["eval/icl/avg_accuracy"] == 0.5
    children = client.search_runs([run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'")
    assert len(children) == 1
