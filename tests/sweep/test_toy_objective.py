"""A new objective with its own hyperparameter is swept without touching ``emo_ray/sweep/``:
registered by a plugin file, named in the sweep config's grid, trained on a real local Ray."""
from __future__ import annotations

import textwrap

import pytest

pytestmark = pytest.mark.integration

TOY = textwrap.dedent('''
    """A toy objective: MLE scaled by ``scale`` (its gradient, not its optimum, depends on it)."""
    from emo_ray.losses import LOSSES, LossSpec
    from emo_ray.losses.common import IGNORE_INDEX, LossOutput, masked_mean, target_nll


    def scaled_mle_loss(logits, labels, *, scale: float = 1.0, ignore_index: int = IGNORE_INDEX):
        mle, mask = target_nll(logits, labels, ignore_index)
        loss = scale * masked_mean(mle, mask)
        return LossOutput(loss, int(mask.sum()), {"mle": float(masked_mean(mle.detach(), mask))})


    LOSSES.setdefault("toy_scaled_mle", LossSpec(scaled_mle_loss))
''')


def test_a_plugin_objective_and_its_hyperparameter_are_swept(tmp_path, ray_local):
    import json

    from mlflow import MlflowClient

    from emo_ray.sweep import load_sweep_config, trials
    from emo_ray.report.collect import collect
    from emo_ray.report import sweep_end
    from emo_ray.sweep.runner import run_sweep
    from emo_ray.sweep.trial import TRIAL_RECORD_TAG

    plugin = tmp_path / "toy_objective.py"
    plugin.write_text(TOY)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep = load_sweep_config("cpu-small", [
        f"plugins=[{plugin}]", "name=toy",
        "grid.objectives={toy_scaled_mle: [{scale: 0.1}, {scale: 3.0}]}", "grid.data_tokens=[2048]",
        f"storage_path={tmp_path / 'runs'}", f"tracking.tracking_uri={uri}",
    ])
    assert [t.loss_kwargs for t in trials(sweep)] == [{"scale": 0.1}, {"scale": 3.0}]
    summary = run_sweep(sweep, report=sweep_end)
    assert summary["failed"] == 0 and summary["trials"] == 2
    client = MlflowClient(uri)
    children = client.search_runs([client.get_run(summary["parent_run_id"]).info.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{summary['parent_run_id']}'")
    assert sorted(json.loads(r.data.tags[TRIAL_RECORD_TAG])["loss_kwargs"]["scale"] for r in children) == [0.1, 3.0]
    assert {r.data.params["train.loss"] for r in children} == {"toy_scaled_mle"}
    assert all(r.info.status == "FINISHED" for r in children)
    # The end-of-sweep report chose between the two hyperparameter sets by validation loss.
    import pandas as pd

    df = collect(summary["parent_run_id"], uri)
    points = pd.read_csv(client.download_artifacts(summary["parent_run_id"], "report/figure1_points.csv", str(tmp_path)))
    best = points[points.metric == "val_loss"]
    assert len(best) == 1 and best["hparams"].item() == df.sort_values("val/loss").iloc[0]["hparams"]
