"""A progress bar over trials (Tune prints its own live trial table beside it)."""
from __future__ import annotations

from ray.tune import Callback


class TrialProgress(Callback):
    def __init__(self, total: int):
        self.total = total
        self.done = 0
        self.failed = 0
        self._bar = None

    def _print(self) -> None:
        width = 30
        filled = int(width * self.done / max(1, self.total))
        print(f"[sweep] [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} trials done"
              + (f", {self.failed} failed" if self.failed else ""), flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.done += 1
        self._print()

    def on_trial_error(self, iteration, trials, trial, **info):
        self.done += 1
        self.failed += 1
        self._print()
