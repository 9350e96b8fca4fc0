"""scripts/mlflow_screenshot.py opens the page a sweep prints: its shared view, by parent run id."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.conftest import fresh_store

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("mlflow_screenshot", ROOT / "scripts" / "mlflow_screenshot.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_query_is_appended_to_the_runs_page_and_keeps_its_mode():
    shot = _script()
    url = shot.page_url("http://h:1", "7", [], "runs", "compareRunsMode=CHART&viewStateShareKey=k1")
    assert url == "http://h:1/#/experiments/7/runs?compareRunsMode=TABLE&viewStateShareKey=k1"
    assert shot.page_url("http://h:1", "7", [], "charts") == "http://h:1/#/experiments/7/runs?compareRunsMode=CHART"


def test_sweep_opens_the_shared_view_its_report_wrote(tmp_path):
    from mlflow import MlflowClient

    from emo_ray.report.mlflow_view import share_view

    shot = _script()
    client = MlflowClient(fresh_store(tmp_path / "mlflow.db"))
    exp = client.create_experiment("sweeps", artifact_location=str(tmp_path / "art"))
    parent = client.create_run(exp).info.run_id
    with pytest.raises(SystemExit, match=f"no shared view for sweep {parent}"):
        shot.sweep_view_query(client, exp, parent)
    printed = share_view(client, parent)  # what the report writes and the sweep's link carries
    assert shot.sweep_view_query(client, exp, parent) in printed
