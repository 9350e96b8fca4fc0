"""Rank 0's MLflow sink (issue 27.10): a failing tracking call is counted, never raised, and the
step does not wait for the HTTP call."""
from __future__ import annotations

import threading
import time

import mlflow
import pytest


class FlakyClient:
    """An MlflowClient stand-in: ``log_batch`` raises for its first ``failures`` calls, and
    optionally takes ``delay`` seconds (a slow tracking server)."""

    def __init__(self, uri=None, failures: int = 0, delay: float = 0.0):
        self.failures, self.delay = failures, delay
        self.batches: list[dict] = []
        self.lock = threading.Lock()

    def log_batch(self, run_id, metrics=(), params=(), tags=()):
        time.sleep(self.delay)
        with self.lock:
            if self.failures > 0:
                self.failures -= 1
                raise ConnectionError("tracking server unreachable")
            self.batches.append({"metrics": list(metrics), "params": list(params), "tags": list(tags)})

    def get_metric_history(self, run_id, key):
        return []


@pytest.fixture
def flaky(monkeypatch):
    """The client every sink builds (``from mlflow import MlflowClient`` in the sink): fails twice."""
    client = FlakyClient(failures=2)
    monkeypatch.setattr(mlflow, "MlflowClient", lambda uri=None: client)
    return client


def test_a_failing_mlflow_call_is_counted_not_raised(flaky, capsys):
    from emo_ray.train.worker import MlflowSink  # where the training loop takes it from

    sink = MlflowSink("http://tracking.invalid:5000", "run-1", enabled=True)
    for step in (1, 2, 3):
        sink.log({"loss": 2.0 / step}, step, prefix="train/")  # the first two calls fail: no exception
    if hasattr(sink, "flush"):
        sink.flush()
    assert sink.errors == 2
    assert capsys.readouterr().err.count("MLflow log failed") == 1  # said once, not per step
    (sent,) = flaky.batches
    by_key = {m.key: m for m in sent["metrics"]}
    assert by_key["train/loss"].step == 3
    assert by_key["train/mlflow_sink_errors"].value == 2.0  # the count reaches the run with the next batch
    sink.close()
    assert {t.key: t.value for t in flaky.batches[-1]["tags"]} == {"emo_ray.mlflow_sink_errors": "2"}


def test_logging_does_not_wait_for_the_tracking_server():
    from emo_ray.train.sink import MlflowSink

    client = FlakyClient(delay=0.3)
    sink = MlflowSink("", "run-1", enabled=True, client=client)
    t0 = time.perf_counter()
    for step in range(1, 6):
        sink.log({"loss": 1.0}, step, prefix="train/")
    assert time.perf_counter() - t0 < 0.2  # five calls of 0.3 s each would take 1.5 s
    sink.close()
    assert [b["metrics"][0].step for b in client.batches] == [1, 2, 3, 4, 5]  # all sent, in order


def test_describe_sends_after_the_queued_metrics_and_survives_a_failure():
    from emo_ray.train.sink import MlflowSink

    client = FlakyClient(delay=0.05)
    sink = MlflowSink("", "run-1", enabled=True, client=client)
    sink.log({"loss": 1.0}, 1, prefix="train/")
    sink.describe({}, {"emo_ray.failure": "TrainingDiverged"})
    assert [bool(b["metrics"]) for b in client.batches] == [True, False]  # metrics first, then the tag
    client.failures = 1
    sink.describe({"x": 1}, {})  # raises inside: counted
    assert sink.errors == 1
    sink.close()


def test_a_disabled_sink_calls_nothing():
    from emo_ray.train.sink import MlflowSink

    client = FlakyClient(failures=10)
    sink = MlflowSink("", "run-1", enabled=False, client=client)
    sink.log({"loss": 1.0}, 1)
    sink.describe({"a": 1}, {})
    sink.close()
    assert client.batches == [] and client.failures == 10 and sink.errors == 0
