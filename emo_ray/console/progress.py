"""Progress: :class:`Bar`, the one bar (tqdm redrawn in place on a terminal; in a log file a line
every 10 % with n/total, elapsed and ETA), and the evaluation stage it names (``with
stage("icl sst2"):``; :func:`current_stage`, :func:`interrupted_stage`).

The stage stack lives here and only here: ``emo_ray.console`` re-exports the functions, which
read this module's state.
"""
from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping
from typing import Any

def _fmt_time(s: float | None) -> str:
    if s is None or not math.isfinite(s):
        return "?"
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m:02d}:{sec:02d}"


def _fmt_num(v: float) -> str:
    if isinstance(v, int):
        return str(v)
    if abs(v) >= 1e4:
        return f"{v / 1e3:.1f}k"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if v != 0 and abs(v) < 1e-2:
        return f"{v:.1e}"
    return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"


class Bar:
    """One progress bar: tqdm redrawn in place on a terminal; otherwise a line at start, every
    ``every`` fraction of the total and at the end (so logs stay short). Always shows n/total,
    elapsed and ETA."""

    def __init__(self, total: int, desc: str, *, unit: str = "it", every: float = 0.1, stream=None,
                 tty: bool | None = None, eta_from_start: bool = False):
        self.total, self.desc, self.unit, self.every = max(1, int(total)), desc, unit, every
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.n = 0
        self.t0 = time.monotonic()
        self.n0 = 0  # work done before the bar saw its first update (a resumed run)
        self.t_first: float | None = self.t0 if eta_from_start else None
        self.postfix = ""
        self._next_print = 0.0
        self._tqdm = None
        self._printed_n = -1
        self.closed = False

    def eta(self) -> float | None:
        if self.n >= self.total:
            return 0.0
        if self.t_first is None or self.n <= self.n0:
            return None
        rate = (time.monotonic() - self.t_first) / (self.n - self.n0)
        return rate * (self.total - self.n)

    def line(self) -> str:
        pct = 100.0 * self.n / self.total
        post = f"  {self.postfix}" if self.postfix else ""
        return (f"{self.desc}: {pct:3.0f}% {self.n}/{self.total} {self.unit}{post}  "
                f"[{_fmt_time(time.monotonic() - self.t0)} elapsed, ETA {_fmt_time(self.eta())}]")

    def update(self, n: int, postfix: Mapping[str, Any] | str | None = None) -> None:
        if self.closed:
            return
        n = min(max(0, int(n)), self.total)
        if self.t_first is None:
            # ETA from the first update on: start-up (Ray, model loading) is not per-step time.
            self.t_first, self.n0 = time.monotonic(), n
        if postfix is not None:
            self.postfix = postfix if isinstance(postfix, str) else "  ".join(
                f"{k} {_fmt_num(v) if isinstance(v, (int, float)) else v}" for k, v in postfix.items())
        self.n = n
        if self.tty:
            if self._tqdm is None:
                # Created at the first update, from where the work stands: its rate (and so the
                # ETA) then measures steps, not the start-up before them.
                from tqdm import tqdm

                self._tqdm = tqdm(total=self.total, initial=n, desc=self.desc, unit=self.unit, file=self.stream,
                                  dynamic_ncols=True, bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                                                                 "[{elapsed}<{remaining}{postfix}]")
            self._tqdm.set_postfix_str(self.postfix, refresh=False)
            if n >= self._tqdm.n:
                self._tqdm.update(n - self._tqdm.n)
            else:  # a restarted attempt resumed from an earlier checkpoint
                self._tqdm.n = n
                self._tqdm.refresh()
            return
        frac = n / self.total
        if (frac >= self._next_print and self.eta() is not None) or n >= self.total:
            self._print()
            if self.every > 0:
                self._next_print = (math.floor(frac / self.every + 1e-9) + 1) * self.every - 1e-9

    def _print(self) -> None:
        if self._printed_n != self.n:
            print(self.line(), file=self.stream, flush=True)
            self._printed_n = self.n

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._tqdm is not None:
            self._tqdm.close()
        elif self.n > 0:
            self._print()


# --------------------------------------------------------------------------------------------
# Evaluation stages: which section / task is running, for the stage bars.

_stage: list[str] = []


class stage:  # noqa: N801 - used as a context manager: ``with console.stage("icl sst2"):``
    """Name the running section (``gen wikitext-2``, ``icl sst2``): the bars drawn inside say it."""

    def __init__(self, name: str):
        self.name = name

    def __enter__(self):
        global _interrupted_stage
        if not _stage:  # a new outermost stage: an earlier interrupt is history
            _interrupted_stage = ""
        _stage.append(self.name)
        return self

    def __exit__(self, exc_type, *exc):
        global _interrupted_stage
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt) and not _interrupted_stage:
            _interrupted_stage = current_stage()  # the innermost stage, before the unwinding pops it
        _stage.pop()


_interrupted_stage = ""


def current_stage() -> str:
    return " / ".join(_stage)


def interrupted_stage() -> str:
    """The stage a Ctrl-C stopped (empty: none was running)."""
    return _interrupted_stage
