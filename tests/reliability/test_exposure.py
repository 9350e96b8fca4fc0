"""What a local Ray started by emo_ray exposes, and how it is closed; runs send no telemetry.

Ray 2.60's C++ services (GCS, raylet, workers) listen on every interface whatever
``_node_ip_address`` says (the strict xfail below measures it), so the guard is Ray's token
authentication with a token file only its owner can read (``emo_ray.ray_runtime.secure_auth_token``)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest


def test_runs_turn_telemetry_off(monkeypatch):
    from emo_ray import console

    env = console.worker_env()
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true" and env["RAY_USAGE_STATS_ENABLED"] == "0"


def test_the_test_suite_sends_no_telemetry():
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true" and os.environ["RAY_USAGE_STATS_ENABLED"] == "0"
    assert os.environ["HF_HUB_DISABLE_TELEMETRY"] == "1"


def _clean_ray_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    return {**env, **extra}


def test_token_file_is_created_owner_only(tmp_path, monkeypatch):
    from emo_ray.ray_runtime import secure_auth_token

    for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    path = secure_auth_token()
    assert path == tmp_path / ".ray" / "auth_token"
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
    token = path.read_text()
    assert len(token) == 64 and int(token, 16) >= 0  # 256 bits, hex, as Ray's own generator writes
    assert secure_auth_token() == path and path.read_text() == token  # kept, not regenerated


def test_an_existing_readable_token_file_is_tightened(tmp_path, monkeypatch):
    from emo_ray.ray_runtime import secure_auth_token

    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    token = tmp_path / "tok"
    token.write_text("a" * 64)
    token.chmod(0o644)  # what Ray 2.60 leaves behind under the usual umask
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))
    assert secure_auth_token() == token
    assert token.stat().st_mode & 0o777 == 0o600 and token.read_text() == "a" * 64


def test_no_token_file_when_the_user_chose_otherwise(tmp_path, monkeypatch):
    from emo_ray.ray_runtime import secure_auth_token

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert secure_auth_token() is None
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "b" * 64)
    assert secure_auth_token() is None
    assert not (tmp_path / ".ray").exists()


PROBE_RAY = textwrap.dedent("""
    import json, os, subprocess, sys, psutil, ray
    from emo_ray.ray_runtime import start_ray
    assert start_ray(num_cpus=1)  # the way a run starts its local Ray (dashboard on loopback)
    gcs = ray.get_runtime_context().gcs_address
    me = psutil.Process()
    pids = {p.pid for p in [me, *me.children(recursive=True)]}
    listening = sorted({(c.laddr.ip, c.pid) for c in psutil.net_connections("tcp")
                        if c.status == psutil.CONN_LISTEN and c.pid in pids})
    tok = os.path.expanduser("~/.ray/auth_token")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_AUTH_MODE="disabled", HOME=sys.argv[1])
    probe = "import ray, sys; ray.init(address=sys.argv[1]); print('CONNECTED')"
    try:
        out = subprocess.run([sys.executable, "-c", probe, gcs], env=env, capture_output=True, text=True,
                             timeout=150)
        res = {"rc": out.returncode, "out": out.stdout[-300:], "err": out.stderr[-3000:]}
    except subprocess.TimeoutExpired:
        res = {"rc": "timeout", "out": "", "err": ""}
    ray.shutdown()
    print(json.dumps({"gcs": gcs, "mode": os.stat(tok).st_mode & 0o777, "listening": listening, **res}))
""")


@pytest.fixture(scope="module")
def probed_local_ray(tmp_path_factory):
    """One local Ray, started the way a run does in a child process with its own HOME, probed for
    both guarantees below (one Ray start instead of two): the TCP sockets its processes listen on,
    and what a second process with no token gets from its GCS on the address other hosts use."""
    import json

    tmp = tmp_path_factory.mktemp("exposure")
    home, other = tmp / "home", tmp / "other"
    home.mkdir()
    other.mkdir()
    out = subprocess.run([sys.executable, "-c", PROBE_RAY, str(other)], env=_clean_ray_env(HOME=str(home)), cwd=tmp,
                         capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.integration
def test_local_ray_refuses_a_client_without_the_token(probed_local_ray):
    got = probed_local_ray
    assert got["mode"] == 0o600
    assert "CONNECTED" not in got["out"] and got["rc"] != 0, got
    assert "InvalidAuthToken" in got["err"] or got["rc"] == "timeout", got["err"][-1500:]


@pytest.mark.integration
@pytest.mark.xfail(strict=True, reason="upstream limit (issue 15): Ray 2.60's GCS, raylet and workers listen on "
                   "'::' / 0.0.0.0 whatever _node_ip_address says (measured; the C++ servers take no bind "
                   "address). Guarded by token auth instead: test_local_ray_refuses_a_client_without_the_token. "
                   "Remove this mark when Ray can bind to loopback.")
def test_local_ray_listens_on_loopback_only(probed_local_ray):
    listening = probed_local_ray["listening"]
    assert listening, "found no listening socket of the Ray we started"
    exposed = [(ip, pid) for ip, pid in listening if ip not in ("127.0.0.1", "::1")]
    assert not exposed, exposed
