"""One progress bar over a sweep's trials: done / running / failed, elapsed and ETA."""
from __future__ import annotations

from ray.tune import Callback

from emo_ray.console import Bar


class TrialProgress(Callback):
    def __init__(self, total: int, stream=None):
        self.total = total
        self.done = 0
        self.failed = 0
        self.running: set[str] = set()
        self._stream = stream
        self._bar: Bar | None = None

    def _draw(self) -> None:
        if self._bar is None:
            # ETA from the sweep's start: trials take similar times, and the first one ends late.
            self._bar = Bar(self.total, "sweep", unit="trials", stream=self._stream, eta_from_start=True, every=0.0)
        self._bar.update(self.done, {"running": len(self.running), "failed": self.failed})
        if self.done >= self.total:
            self._bar.close()

    def on_trial_start(self, iteration, trials, trial, **info):
        self.running.add(trial.trial_id)
        self._draw()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.running.discard(trial.trial_id)
        self.done += 1
        self._draw()

    def on_trial_error(self, iteration, trials, trial, **info):
        self.running.discard(trial.trial_id)
        self.done += 1
        self.failed += 1
        self._draw()

    def on_experiment_end(self, trials, **info):
        if self._bar is not None:
            self._bar.close()
