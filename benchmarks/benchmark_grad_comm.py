"""Does bf16 gradient communication help 2 CPU workers? (issue 26, DeepSpeed ``communication_data_type``)

Two processes on a gloo group all-reduce SmolLM2-135M's gradient volume (134.5M values), as
ZeRO-2's bucketed reduce does on CPU (``stage_1_and_2.allreduce_bucket``), in fp32 and in bf16
(cast down, all-reduce, cast back: what ``communication_data_type: bf16`` does to fp32
gradients). Rounds interleaved, one thread per process, median wall and CPU time. Also the
error bf16 communication puts into the summed gradients (relative to the fp32 sum, 1M values).
Writes ``results/grad_comm.csv``.

    python benchmarks/benchmark_grad_comm.py [--rounds 3] [--numel 134515008]
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import statistics
import time

import torch
import torch.distributed as dist

from _results import RESULTS, write_csv



def reduce_once(g: torch.Tensor, dtype: str) -> torch.Tensor:
    if dtype == "fp32":
        x = g.clone()
        dist.all_reduce(x)
        return x
    x = g.to(torch.bfloat16)
    dist.all_reduce(x)
    return x.float()


def worker(rank: int, port: int, numel: int, rounds: int, out) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    g = torch.randn(numel, generator=torch.Generator().manual_seed(rank)) * 1e-3
    rows = []
    for r in range(rounds):
        for dtype in ("fp32", "bf16"):
            dist.barrier()
            w, c = time.perf_counter(), time.process_time()
            reduce_once(g, dtype)
            rows.append({"round": r, "dtype": dtype, "wall_s": time.perf_counter() - w, "cpu_s": time.process_time() - c})
    exact, low = reduce_once(g[:1_000_000], "fp32"), reduce_once(g[:1_000_000], "bf16")
    rel = (low - exact).abs() / exact.abs().clamp_min(1e-12)
    if rank == 0:
        out.put((rows, rel.median().item(), rel.quantile(0.99).item()))
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--numel", type=int, default=134_515_008)
    args = ap.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(r, port, args.numel, args.rounds, out)) for r in range(2)]
    for p in procs:
        p.start()
    rows, med, p99 = out.get()
    for p in procs:
        p.join()
    write_csv(RESULTS / "grad_comm.csv", rows)
    med_of = {d: {k: statistics.median(x[k] for x in rows if x["dtype"] == d) for k in ("wall_s", "cpu_s")}
              for d in ("fp32", "bf16")}
    for d, m in med_of.items():
        print(f"{d}: all-reduce of {args.numel:,} gradients {m['wall_s']:.2f} s wall, {m['cpu_s']:.2f} s CPU")
    print(f"bf16 / fp32 wall: {med_of['bf16']['wall_s'] / med_of['fp32']['wall_s']:.2f}x; "
          f"summed-gradient error of bf16: median {med:.1e}, p99 {p99:.1e} relative; load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
