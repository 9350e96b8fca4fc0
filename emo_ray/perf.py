"""The machine's matmul peak per dtype, measured once and cached, and model FLOPs utilisation.

``MFU = 6 N tokens/s / peak``: ``6 N`` FLOPs per trained token (forward 2N, backward 4N; the
attention term is left out, as in the usual definition), ``peak`` the best GEMM FLOP/s this
machine reached in that dtype with the worker's thread count. The peak is *measured* (a
``1024 x 576 @ 576 x 8192`` matmul, SmolLM2's head shape, best of a few ~0.2 s runs), not read
from a datasheet: on a shared CPU the datasheet number is unreachable and would only make every
MFU look small. The measurement is cached per machine (CPU model, thread count, dtype, device,
torch version) in ``$EMO_RAY_CACHE/peak_flops.json``; ``benchmarks/benchmark_matmul_peak.py``
refreshes it.
"""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch

SHAPE = (1024, 576, 8192)  # (M, K, N)


def _cache_file() -> Path:
    from emo_ray.models.loading import cache_dir

    return cache_dir().parent / "peak_flops.json"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_key(dtype: torch.dtype, device: str, threads: int) -> str:
    where = torch.cuda.get_device_name() if device == "cuda" else _cpu_model()
    return f"{device}|{where}|{threads}t|{str(dtype).removeprefix('torch.')}|torch {torch.__version__}"


def measure_matmul(dtype: torch.dtype, device: str = "cpu", *, threads: int | None = None,
                   shape: tuple[int, int, int] = SHAPE, repeats: int = 5, min_time: float = 0.2) -> float:
    """Best FLOP/s of ``(M, K) @ (K, N)`` in ``dtype`` over ``repeats`` timed runs."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        m, k, n = shape
        g = torch.Generator(device="cpu").manual_seed(0)
        a = torch.randn(m, k, generator=g).to(device=device, dtype=dtype)
        b = torch.randn(k, n, generator=g).to(device=device, dtype=dtype)
        out = torch.empty(m, n, dtype=dtype, device=device)
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        torch.mm(a, b, out=out)  # warm-up (oneDNN primitive creation, packing)
        sync()
        best = 0.0
        for _ in range(repeats):
            reps, t0 = 0, time.perf_counter()
            while True:
                torch.mm(a, b, out=out)
                reps += 1
                sync()
                dt = time.perf_counter() - t0
                if dt >= min_time:
                    break
            best = max(best, 2.0 * m * k * n * reps / dt)
        return best
    finally:
        torch.set_num_threads(before)


def peak_flops(dtype: torch.dtype, device: str = "cpu", *, threads: int | None = None, refresh: bool = False) -> float:
    """The cached measured peak (FLOP/s) for ``dtype`` on this machine with ``threads``."""
    threads = threads or torch.get_num_threads()
    key = machine_key(dtype, device, threads)
    path = _cache_file()
    table: dict = {}
    if path.exists():
        try:
            table = json.loads(path.read_text())
        except (OSError, ValueError):
            table = {}
    if not refresh and key in table:
        return float(table[key])
    value = measure_matmul(dtype, device, threads=threads)
    table[key] = value
    from emo_ray.storage import atomic_write

    with atomic_write(path, "w") as f:
        json.dump(table, f, indent=1)
    return value


def mfu(n_params: int, tokens_per_s: float, peak: float) -> float:
    """Model FLOPs utilisation: ``6 N tokens/s / peak`` (both for the same set of workers)."""
    return 6.0 * n_params * tokens_per_s / peak if peak > 0 else float("nan")


__all__ = ["machine_key", "measure_matmul", "mfu", "peak_flops"]
