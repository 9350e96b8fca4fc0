"""Rank 0's metrics to MLflow, off the training step (issue 27.10).

A synchronous HTTP call per logged step capped a GPU run at a few steps per second, and an
exception from it (a restarted tracking server, a timeout) killed the step and with it the run.
Here ``log`` only queues the batch; one background thread sends the batches in order. A failed
call is counted, said once on stderr, and never raised: the count goes out with the next batch
that gets through (``train/mlflow_sink_errors``), is reported to Ray Train with the step's metrics
(``mlflow_sink_errors``), and is set as a run tag at ``close``.
"""
from __future__ import annotations

import queue
import sys
import threading
import time

from emo_ray import tracking

ERRORS_METRIC = tracking.keys.SINK_ERRORS
ERRORS_TAG = tracking.tags.MLFLOW_SINK_ERRORS
MAX_PENDING = 1000
"""Batches held while MLflow is slow or down; beyond that new batches are dropped (and counted)."""
FLUSH_TIMEOUT_S = 60.0


class MlflowSink:
    """Rank 0 writes metrics into the run the driver opened, through the client API, so the
    worker never changes the run's status (the driver ends it FINISHED or FAILED).

    ``client``: an ``MlflowClient``-like object (tests pass one that raises)."""

    logged_through = 0
    """Training steps an earlier attempt already logged: replayed after a restore, never logged
    twice (MLflow's metric history keeps duplicates)."""
    val_logged_through = 0
    """The same for validations (``train.eval_every``): a replayed step's validation too."""

    def __init__(self, uri: str, run_id: str, enabled: bool, *, client=None):
        self.enabled = enabled and bool(run_id)
        self.errors = 0
        self._warned = False
        self._queue: queue.Queue = queue.Queue(maxsize=MAX_PENDING)
        self._thread = None
        if self.enabled:
            if client is None:
                client = tracking.client(uri)
            self.client, self.run_id = client, run_id

    def _failed(self, what: str, error: BaseException) -> None:
        self.errors += 1
        if not self._warned:
            self._warned = True
            print(f"emo-ray: MLflow {what} failed ({type(error).__name__}: {error}); training goes on, "
                  f"failures are counted in {ERRORS_METRIC}", file=sys.stderr, flush=True)

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - any tracking failure must not end the step
            self._failed(what, e)
            return None

    def resume(self, key: str = tracking.keys.TRAIN_LOSS) -> None:
        """Read how far an earlier attempt of this run logged ``key`` (and ``val/loss``)."""
        if not self.enabled:
            return
        through = self._call("read", lambda: (tracking.logged_through(self.client, self.run_id, key),
                                              tracking.logged_through(self.client, self.run_id, tracking.keys.VAL_LOSS)))
        if through is not None:
            self.logged_through, self.val_logged_through = through

    def log(self, metrics: dict, step: int, prefix: str = "") -> None:
        """Queue one step's metrics (non-finite values left out); returns at once."""
        if not self.enabled or (prefix == "train/" and step <= self.logged_through) or \
                (prefix == "val/" and step <= self.val_logged_through):
            return
        now = int(time.time() * 1000)
        batch = tracking.metric_entities(tracking.prefixed(metrics, prefix), step, timestamp=now)
        if not batch:
            return
        self._start()
        try:
            self._queue.put_nowait((batch, now, step))
        except queue.Full:
            self._failed("log (queue full, batch dropped)", RuntimeError(f"{MAX_PENDING} batches pending"))

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._drain, name="mlflow-sink", daemon=True)
            self._thread.start()

    def _drain(self) -> None:
        from mlflow.entities import Metric

        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                batch, now, step = item
                if self.errors:  # the count so far travels with the first batch that gets through
                    batch = [*batch, Metric(f"train/{ERRORS_METRIC}", float(self.errors), now, step)]
                self._call("log", self.client.log_batch, self.run_id, metrics=batch)
            finally:
                self._queue.task_done()

    def flush(self, timeout: float = FLUSH_TIMEOUT_S) -> None:
        """Wait (at most ``timeout``) until every queued batch was sent or failed."""
        deadline = time.monotonic() + timeout
        while self._thread is not None and self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)

    def describe(self, params: dict, tags: dict) -> None:
        """Facts about the run that are not curves: params (same value on a resumed attempt is
        fine) and tags (the last attempt's value wins). Synchronous, after the queued metrics."""
        if not self.enabled:
            return
        from mlflow.entities import Param, RunTag

        self.flush()
        self._call("describe", self.client.log_batch, self.run_id,
                   params=[Param(k, str(v)) for k, v in params.items()], tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def close(self) -> None:
        """Send what is queued, record the error count as a tag, stop the thread."""
        if not self.enabled:
            return
        self.flush()
        if self.errors:
            self.describe({}, {ERRORS_TAG: self.errors})
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=5)
            self._thread = None
