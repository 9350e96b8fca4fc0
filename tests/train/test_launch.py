"""The local Ray that `init_ray` starts: workers must reach *this* cluster's State API.

Ray Train V2's placement-group cleaner asks the State API whether the Train controller is alive
and reads "not found" as dead; left to machine-wide discovery its client can land on another Ray
on the same machine, and then it removes the placement group under a running trial."""
import os

from emo_ray.ray_runtime import API_SERVER_ENV


def test_workers_query_their_own_cluster_state_api(ray_local):
    ray = ray_local

    @ray.remote(num_cpus=0)
    class Probe:
        def lookup(self):
            from ray.util.state import get_actor

            me = get_actor(ray.get_runtime_context().get_actor_id(), timeout=60)
            return os.environ.get(API_SERVER_ENV), None if me is None else me.state

    # Ray Train's controller is created with its own env_vars: the pin must survive the merge.
    probe = Probe.options(runtime_env={"env_vars": {"EMO_RAY_PROBE": "1"}}).remote()
    try:
        address, state = ray.get(probe.lookup.remote(), timeout=180)
    finally:
        ray.kill(probe)
    assert address and address.startswith("http://127.0.0.1:")
    assert state == "ALIVE"


def test_driver_environment_is_not_redirected(ray_local):
    # Job-submission clients in this process (and its children) aimed at other clusters must not
    # be overridden: RAY_API_SERVER_ADDRESS beats an explicit address in Ray's client.
    assert API_SERVER_ENV not in os.environ


def test_dashboard_port_is_free_and_outside_ephemeral_and_ray_worker_ranges():
    import socket

    from emo_ray.ray_runtime import free_port as _free_port

    for _ in range(20):
        port = _free_port()
        assert 20000 <= port < 32000  # Ray workers use 10002-19999; bind(0) hands out 32768+
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
