"""The training bar on the driver.

Ray Train calls ``UserCallback.after_report`` in its *controller* actor, with every rank's report
dict; anything printed there reaches the terminal prefixed ``(TrainController pid=...)``. So the
callback only averages the ranks' dicts (loss over ranks, tokens/s, lr) and sends one record to a
zero-CPU inbox actor; a thread in the driver drains the inbox and draws the bar.

    progress = TrainProgress(max_steps)              # in the driver, Ray running
    trainer = TorchTrainer(..., run_config=RunConfig(callbacks=[progress.callback, ...]))
    with progress:
        trainer.fit()
"""
from __future__ import annotations

import threading

import ray
import ray.train

from emo_ray.console import Bar


def average_reports(metrics: list[dict]) -> dict:
    """One record from the ranks' report dicts: each number averaged over the ranks that have it."""
    out: dict = {}
    for k in {k for m in metrics for k in m}:
        vals = [m[k] for m in metrics if isinstance(m.get(k), (int, float)) and not isinstance(m.get(k), bool)]
        if vals:
            out[k] = sum(vals) / len(vals)
    return out


@ray.remote(num_cpus=0, max_restarts=0)
class ProgressInbox:
    def __init__(self):
        self.items: list = []

    def put(self, item) -> None:
        self.items.append(item)

    def drain(self) -> list:
        items, self.items = self.items, []
        return items


class TrainProgressCallback(ray.train.UserCallback):
    """Runs in Ray Train's controller: after every report, the ranks' averaged metrics go to the inbox."""

    def __init__(self, inbox):
        self.inbox = inbox

    def after_report(self, run_context, metrics, checkpoint):
        try:
            self.inbox.put.remote(average_reports(list(metrics or [])))
        except Exception:  # noqa: BLE001 - progress must never fail a run
            pass


class TrainProgress:
    POLL_S = 0.5

    def __init__(self, total_steps: int, *, desc: str = "train", stream=None):
        self.inbox = ProgressInbox.remote()
        self.callback = TrainProgressCallback(self.inbox)
        self.bar = Bar(total_steps, desc, unit="steps", stream=stream)
        self.last: dict = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="emo-ray-progress", daemon=True)

    def _drain(self) -> None:
        try:
            items = ray.get(self.inbox.drain.remote(), timeout=30)
        except Exception:  # noqa: BLE001
            return
        for m in items:
            self.last = m
            if "step" not in m:
                continue
            post = {k: m[k] for k in ("loss",) if k in m}
            if "tokens_per_s" in m:
                post["tok/s"] = m["tokens_per_s"]
            if "lr" in m:
                post["lr"] = m["lr"]
            self.bar.update(int(round(m["step"])), post)

    def _run(self) -> None:
        while not self._stop.wait(self.POLL_S):
            self._drain()

    def __enter__(self) -> "TrainProgress":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._drain()
        self.bar.close()
        try:
            ray.kill(self.inbox)
        except Exception:  # noqa: BLE001
            pass
