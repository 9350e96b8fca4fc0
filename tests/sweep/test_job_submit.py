"""`ray job submit` as a user does it from a laptop: a local Ray head with token auth on (Ray
2.60's default for `ray start`), the smallest CPU sweep submitted as a job with a runtime_env
(working dir + data location), waited on until SUCCEEDED, its MLflow records checked.

The head is started by this test on loopback, in its own process group, on ports it picked, and
stopped by that group's id: nothing else on the machine is touched (no `ray stop`)."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from emo_ray.typed_config import default_data_dir

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
RAY = [sys.executable, "-m", "ray.scripts.scripts"]
# What the README tells users to leave out of the upload (large, local-only, or secret-free noise).
EXCLUDES = [".git", "runs", "mlruns", "mlflow.db", "*.egg-info", ".pytest_cache", "**/__pycache__"]


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@pytest.fixture(scope="module")
def ray_head():
    """A Ray head on 127.0.0.1 with token auth; yields (dashboard address, client env)."""
    if not (Path(default_data_dir()) / "wikitext-2").exists():
        pytest.skip(f"shared data not found at {default_data_dir()} (set EMO_RAY_DATA)")
    # Short root: Ray's unix socket paths must stay under 107 characters.
    tmp = Path(tempfile.mkdtemp(prefix="rj", dir="/tmp"))
    token = tmp / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token),
               # On SIGTERM `ray start --block` first drains the node for Ray Serve (up to 30 s by
               # default, measured 33 s of this module's teardown); no Serve here: stop at once.
               RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0")
    gcs, dash, client, agent, agent_grpc, rt_agent, metrics, om, nm = free_ports(9)
    cmd = [*RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}",
           "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
           f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
           f"--dashboard-agent-grpc-port={agent_grpc}", f"--runtime-env-agent-port={rt_agent}",
           f"--metrics-export-port={metrics}", f"--object-manager-port={om}", f"--node-manager-port={nm}",
           "--min-worker-port=21000", "--max-worker-port=21999",  # clear of other local Rays' range
           "--num-cpus=4", f"--temp-dir={tmp / 'ray'}", "--disable-usage-stats"]
    log = open(tmp / "head.log", "w")
    head = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.time() + 120
        while True:
            assert head.poll() is None, (tmp / "head.log").read_text()[-3000:]
            out = subprocess.run([*RAY, "job", "list", "--address", address], env=env, capture_output=True, text=True)
            if out.returncode == 0:
                break
            assert time.time() < deadline, f"head not ready: {out.stderr[-2000:]}\n{(tmp / 'head.log').read_text()[-2000:]}"
            time.sleep(2)
        yield address, env, tmp
    finally:
        # `ray start --block` stops the processes it started on SIGTERM; the group kill is the backstop.
        for sig, wait in ((signal.SIGTERM, 60), (signal.SIGKILL, 30)):
            if head.poll() is not None:
                break
            os.killpg(head.pid, sig)
            try:
                head.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(head.pid, signal.SIGKILL)  # leftovers of the group we created, if any
        except ProcessLookupError:
            pass
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def test_token_is_required(ray_head):
    address, env, _ = ray_head
    no_token = {k: v for k, v in env.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")}
    out = subprocess.run([*RAY, "job", "list", "--address", address], env=no_token, capture_output=True, text=True)
    assert out.returncode != 0 and "auth" in (out.stdout + out.stderr).lower()


def test_submitted_cpu_small_sweep_succeeds(ray_head):
    address, env, tmp = ray_head
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    runtime_env = {"working_dir": str(ROOT), "excludes": EXCLUDES,
                   "env_vars": {"EMO_RAY_DATA": str(Path(default_data_dir()).resolve())}}
    job_id = f"emo-ray-test-{secrets.token_hex(4)}"
    submit = [*RAY, "job", "submit", "--address", address, "--submission-id", job_id, "--no-wait",
              "--runtime-env-json", json.dumps(runtime_env), "--",
              # One volume: 2 trials carry the job path (upload, token, data location, MLflow) as 4 did.
              "python", "sweeps/scaling_law.py", "cpu-small", "name=job-test", "grid.data_tokens=[4096]",
              f"storage_path={tmp / 'runs'}", f"tracking.tracking_uri={uri}"]
    out = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]

    # The SDK in a child process: token mode must be on in the client's process, not in pytest's.
    status_cmd = [sys.executable, "-c", "import sys; from ray.job_submission import JobSubmissionClient as C; "
                  "print(C(sys.argv[1]).get_job_status(sys.argv[2]).value)", address, job_id]
    deadline, status = time.time() + 1200, ""
    while time.time() < deadline:
        st = subprocess.run(status_cmd, env=env, capture_output=True, text=True)
        status = st.stdout.strip().splitlines()[-1] if st.returncode == 0 and st.stdout.strip() else ""
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            break
        time.sleep(10)
    logs = subprocess.run([*RAY, "job", "logs", "--address", address, job_id], env=env, capture_output=True, text=True).stdout
    assert status == "SUCCEEDED", f"job {job_id}: {status or 'timed out'}\n{logs[-4000:]}"

    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("emo-ray-sweeps")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("emo_ray.kind") == "sweep"]
    kids = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(kids) == 2 and all(r.info.status == "FINISHED" for r in kids)  # mle, emo
    assert {(r.data.params["train.loss"], r.data.params["data.max_train_tokens"]) for r in kids} == {
        ("mle", "4096"), ("emo", "4096")}
    assert all("val/ppl" in r.data.metrics for r in kids)
    arts = {a.path for a in client.list_artifacts(parents[0].info.run_id, "report")}
    assert "report/figure1.png" in arts  # the report's Figure 1, drawn at the sweep's end
