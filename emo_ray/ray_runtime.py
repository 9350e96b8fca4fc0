"""The one place that starts or joins Ray (training, sweeps and evaluation all come here).

    started = start_ray(address=cfg.ray.address, num_cpus=3, env=...)   # True: a local Ray we own
    with ray_session(address="", num_cpus=3, dashboard=False):           # stops what it started
        ...

Join ``address`` or ``$RAY_ADDRESS`` when given; otherwise start a local Ray (dashboard on
loopback, token authentication with an owner-only token file: ``secure_auth_token``) with
enough logical CPUs for the job (workers set their own thread counts, so on 2 cores the logical
count may exceed the physical one). Every Ray process gets the job environment: ``env`` plus the
console's verbosity switches (``emo_ray.console.worker_env``).
"""
from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from emo_ray import console

API_SERVER_ENV = "RAY_API_SERVER_ADDRESS"


def free_port() -> int:
    """A free loopback port for the dashboard, below the kernel's ephemeral range and above Ray's
    worker ports (10002-19999). A port from ``bind(0)`` is an ephemeral one, and the kernel can
    hand it straight to one of Ray's own processes before the dashboard binds it (seen in CI:
    "Failed to bind to 127.0.0.1:34587 because it's already occupied")."""
    import random
    import socket

    for port in random.sample(range(20000, 32000), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port in 20000-31999 for the Ray dashboard")


def secure_auth_token() -> Path | None:
    """Token authentication for a local Ray, with a secret only its owner can read.

    Ray 2.60 turns token authentication on for a new local cluster and writes the token to
    ``~/.ray/auth_token`` with the process umask (0644: readable by every user of the machine,
    who could then use the cluster). A local Ray's gRPC services listen on every interface (Ray's
    C++ servers bind ``::`` whatever ``_node_ip_address`` says; measured with Ray 2.60), so this
    token is what keeps other hosts and users out. Here the token file is created 0600 in a 0700
    folder before Ray looks for it, or tightened to 0600 if it exists with looser bits. Returns
    the token file (None when the token comes from ``$RAY_AUTH_TOKEN`` or the user disabled
    token mode)."""
    import secrets

    # The mode itself is left to Ray (token by default for a new local cluster since 2.5x):
    # setting RAY_AUTH_MODE here, after `import ray` cached its config, splits the driver from the
    # GCS it starts. tests/reliability/test_exposure.py checks that a token-less client is refused.
    if os.environ.get("RAY_AUTH_MODE", "token").lower() != "token" or os.environ.get("RAY_AUTH_TOKEN"):
        return None
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token").expanduser()
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another run created it just now
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))  # what Ray's own generator writes: 256 bits
    st = path.stat()
    if st.st_uid == os.getuid() and st.st_mode & 0o077:
        os.chmod(path, 0o600)
    return path


def start_ray(*, address: str = "", num_cpus: int = 1, env: dict[str, str] | None = None,
              resources: dict | None = None, dashboard: bool = True) -> bool:
    """Join ``address`` / ``$RAY_ADDRESS``, or start a local Ray with at least ``num_cpus``
    logical CPUs and ``resources`` as custom resources. Returns True when it started a local Ray
    (the caller owns it); False when Ray was already up or a cluster was joined."""
    import ray

    if ray.is_initialized():
        return False
    env = {**console.worker_env(), **(env or {})}
    # A local Ray inherits the driver's environment; PYTHONWARNINGS stays job-level only.
    os.environ.update({k: v for k, v in env.items() if k != "PYTHONWARNINGS"})
    kwargs: dict = {"runtime_env": {"env_vars": env}, "log_to_driver": True}
    if not console.verbose():
        kwargs["logging_level"] = logging.WARNING  # no "Started a local Ray instance" banner
    local = False
    if address:
        kwargs["address"] = address
    elif not os.environ.get("RAY_ADDRESS"):
        local = True
        secure_auth_token()
        kwargs["num_cpus"] = max(os.cpu_count() or 1, int(num_cpus))
        if dashboard:
            # Ray Train V2's placement-group cleaner asks the State API (served by the dashboard)
            # whether the Train controller lives, and reads "not found" as dead. Its client finds
            # the cluster by machine-wide discovery, which picks *another* Ray when several run on
            # one machine (tests, a second sweep, a `ray start` head): it then removed our
            # placement group and killed a sweep trial's workers mid-step. So: our own dashboard,
            # on loopback, on a port we pick, and every worker of this Ray pinned to it (not the
            # driver's environment, which would redirect job-submission clients aimed at other
            # clusters).
            port = free_port()
            kwargs.update(include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port)
            kwargs["runtime_env"] = {"env_vars": {**env, API_SERVER_ENV: f"http://127.0.0.1:{port}"}}
        else:
            kwargs["include_dashboard"] = False
        if resources:
            kwargs["resources"] = resources
    if local:
        from emo_ray import ray_reaper

        before = ray_reaper.child_pids()
    ray.init(**kwargs)
    if local:  # what this Ray leaves behind once the driver is gone (SIGKILL, Ctrl-C) is stopped
        ray_reaper.watch(ray_reaper.child_pids() - before)
    return local


@contextlib.contextmanager
def ray_session(**kwargs) -> Iterator[bool]:
    """``start_ray(**kwargs)`` for the duration of the block: a Ray it started is stopped, a
    cluster it joined is disconnected from; a Ray that was already up is left alone."""
    import ray

    connected_here = not ray.is_initialized()
    started = start_ray(**kwargs)
    try:
        yield started
    finally:
        if connected_here:
            ray.shutdown()
