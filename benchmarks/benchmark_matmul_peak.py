"""The machine's matmul peak per dtype (FLOP/s), the denominator of every MFU this project logs.

Shapes: SmolLM2's head GEMM ``1024 x 576 @ 576 x 8192`` (what the issue measured) and a square
``2048^3``; dtypes fp32 and bf16 (fp16 on CUDA); 1 thread and all threads. Best of ``--repeats``
timed runs of >= 0.2 s each. Also refreshes the per-machine cache that training reads for
``train/mfu`` (``emo_ray.perf.peak_flops``).

    python benchmarks/benchmark_matmul_peak.py [--repeats 5]
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402

import torch  # noqa: E402

from emo_ray import perf  # noqa: E402
from emo_ray.precision import cpu_has_bf16  # noqa: E402

from _results import RESULTS, write_csv  # noqa: E402



def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=os.path.join(RESULTS, "matmul_peak.csv"))
    args = ap.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtypes = [torch.float32, torch.bfloat16] + ([torch.float16] if device == "cuda" else [])
    threads = sorted({1, os.cpu_count() or 1}) if device == "cpu" else [torch.get_num_threads()]
    shapes = [perf.SHAPE, (2048, 2048, 2048)]
    print(f"{device}: {perf._cpu_model() if device == 'cpu' else torch.cuda.get_device_name()};"
          f" native bf16: {cpu_has_bf16() if device == 'cpu' else torch.cuda.is_bf16_supported()};"
          f" load average {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    for shape in shapes:
        for t in threads:
            fp32 = None
            for dt in dtypes:
                flops = perf.measure_matmul(dt, device, threads=t, shape=shape, repeats=args.repeats)
                if dt == torch.float32:
                    fp32 = flops
                if shape == perf.SHAPE:  # the cached peak training's MFU reads
                    _store(dt, device, t, flops)
                rows.append({"device": device, "shape": "x".join(map(str, shape)), "threads": t,
                             "dtype": str(dt).removeprefix("torch."), "gflops": f"{flops / 1e9:.1f}",
                             "vs_fp32": f"{flops / fp32:.2f}"})
                print(f"{rows[-1]['shape']:>16} {t}t {rows[-1]['dtype']:>9}: {flops / 1e9:7.1f} GFLOP/s"
                      f"  ({flops / fp32:.2f}x fp32)", flush=True)
    write_csv(args.out, rows)
    print(f"\n| shape | threads | dtype | GFLOP/s | vs fp32 |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['shape']} | {r['threads']} | {r['dtype']} | {r['gflops']} | {r['vs_fp32']}x |")
    print(f"wrote {args.out}")


def _store(dtype, device, threads, flops):
    """Write a measured value into the per-machine peak cache (keeps the best seen)."""
    import json

    path = perf._cache_file()
    table = json.loads(path.read_text()) if path.exists() else {}
    key = perf.machine_key(dtype, device, threads)
    table[key] = max(flops, float(table.get(key, 0.0)))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.partial")
    tmp.write_text(json.dumps(table, indent=1))
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
