"""The cluster's MLflow server (scripts/mlflow_server.sh, started by cluster.yaml) refuses clients
without the generated password. Real MLflow server on loopback, in its own process group, stopped
by that group's id."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import fresh_store

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "mlflow_server.sh"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(tmp_path, port):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    # A migrated store (copied): the server would otherwise create its tables on the first
    # authenticated request, which is not what this test is about (~2 s quiet, > 30 s loaded).
    store = fresh_store(tmp_path / "mlflow.db")
    log = open(tmp_path / f"server-{port}.log", "w")
    proc = subprocess.Popen(["bash", str(SCRIPT), str(tmp_path / "auth"), "127.0.0.1", str(port),
                             store, str(tmp_path / "artifacts")],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 240
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=5)
            return proc, url
        except (urllib.error.URLError, ConnectionError, OSError):
            if proc.poll() is not None:
                break
            time.sleep(1)
    _stop(proc)
    raise AssertionError((tmp_path / f"server-{port}.log").read_text()[-3000:])


def _stop(proc):
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # the group we started, nothing else
        proc.wait(timeout=30)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def _status(url, auth=None):
    req = urllib.request.Request(f"{url}/api/2.0/mlflow/experiments/search?max_results=1")
    if auth:
        import base64

        req.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    try:
        # A liveness bound, generous for a loaded machine.
        return urllib.request.urlopen(req, timeout=180).status
    except urllib.error.HTTPError as e:
        return e.code


def test_cluster_mlflow_server_needs_the_generated_password(tmp_path, monkeypatch):
    import mlflow

    proc, url = _start(tmp_path, _free_port())
    try:
        auth = tmp_path / "auth"
        password = (auth / "password").read_text().strip()
        assert len(password) == 64
        for name in ("password", "secret_key", "basic_auth.ini", "basic_auth.db"):
            assert (auth / name).stat().st_mode & 0o077 == 0, name  # owner-only
        assert auth.stat().st_mode & 0o777 == 0o700

        import psutil

        tree = [" ".join(p.cmdline()) for p in psutil.Process(proc.pid).children(recursive=True)]
        assert not [c for c in tree if "huey" in c or "_job_runner" in c], tree  # no GenAI job consumers
        assert _status(url) == 401
        assert _status(url, ("admin", "password1234")) == 401
        assert _status(url, ("admin", password)) == 200

        # What every node does (~/.emo_ray_env): the client sends the credentials from the env.
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        client = mlflow.MlflowClient(url)
        run = client.create_run(client.create_experiment("auth-check"))
        client.log_metric(run.info.run_id, "train/loss", 2.5, step=1)
        assert client.get_run(run.info.run_id).data.metrics == {"train/loss": 2.5}
    finally:
        _stop(proc)

    # A second start (the next `ray up`) keeps the password: running jobs keep working.
    proc, url = _start(tmp_path, _free_port())
    try:
        assert (tmp_path / "auth" / "password").read_text().strip() == password
        assert _status(url, ("admin", password)) == 200
    finally:
        _stop(proc)
