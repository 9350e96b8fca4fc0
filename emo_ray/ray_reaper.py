"""Stop what a local Ray left behind once its driver is gone, by pid, nothing else.

Ray 2.60 ties its head services (GCS, raylet, dashboard, monitors) to the driver that started
them, but not their own children: after a SIGKILLed driver the raylet's ``DashboardAgent`` and
``RuntimeEnvAgent`` stayed 30 s to 3 min, listening on every interface (measured), and idle
workers a few seconds more. ``watch(roots)`` starts a small watchdog process (its own session, so
a terminal's Ctrl-C does not reach it) that follows the driver and the head processes ``roots``
this driver's ``ray.init`` started, remembers their descendants, and when the driver or all the
roots are gone (SIGKILL, Ctrl-C, or a normal ``ray.shutdown``), waits ``GRACE_S`` for Ray's own
shutdown and then terminates whatever of them is still running. Only processes it saw descend
from those roots are touched (psutil checks each pid's start time, so a reused pid is not).

    before = child_pids(); ray.init(...); watch(child_pids() - before)
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

POLL_S = 1.0
GRACE_S = 3.0


def child_pids() -> set[int]:
    """This process's direct children now (``ray.init`` adds the head processes to them)."""
    import psutil

    return {p.pid for p in psutil.Process().children()}


def watch(roots: set[int]) -> subprocess.Popen | None:
    """Start the watchdog for this driver and the Ray head processes ``roots``; None when there is
    nothing to watch."""
    if not roots:
        return None
    return subprocess.Popen([sys.executable, os.path.abspath(__file__), str(os.getpid()), *map(str, sorted(roots))],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, close_fds=True)


def _alive(p) -> bool:
    """Running and not a zombie (an exited child its parent has not waited for yet)."""
    import psutil

    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _descendants(roots: list, seen: dict) -> None:
    """Add the live roots and all their descendants to ``seen`` (pid -> psutil.Process)."""
    import psutil

    for root in roots:
        try:
            if _alive(root):
                seen.setdefault(root.pid, root)
                for child in root.children(recursive=True):
                    seen.setdefault(child.pid, child)
        except psutil.Error:
            continue


def _stop(procs: list) -> None:
    import psutil

    alive = [p for p in procs if _alive(p)]
    for p in alive:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, left = psutil.wait_procs(alive, timeout=5)
    for p in left:
        try:
            p.kill()
        except psutil.Error:
            pass


def main(driver_pid: int, root_pids: list[int]) -> None:
    import psutil

    try:
        driver = psutil.Process(driver_pid)
    except psutil.NoSuchProcess:
        return
    roots = []
    for pid in root_pids:
        try:
            roots.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    seen: dict = {}
    while _alive(driver) and any(_alive(r) for r in roots):
        _descendants(roots, seen)
        seen = {pid: p for pid, p in seen.items() if _alive(p)}  # exited workers: forget them
        time.sleep(POLL_S)
    time.sleep(GRACE_S)  # Ray's own shutdown first; only what it leaves is stopped here
    _stop(list(seen.values()))


if __name__ == "__main__":
    main(int(sys.argv[1]), [int(a) for a in sys.argv[2:]])
