"""Where sampling stops being bound by reading the weights: one decode step's time by batch size.

SmolLM2-135M as the evaluation samples it (bf16 body, fp32 head, one thread, KV cache), a prefix
of ``--prefix`` random tokens, then ``--steps`` decode steps of one token per row; the draw is left
out (model forward only). A step reads all the weights once whatever the batch (214 MB of bf16
body + 113 MB of fp32 head), so while that read dominates, the step time stays flat and tokens/s
grow with the batch; once the arithmetic dominates, the step time grows with the batch. Printed
per batch: process-CPU ms per step, tokens per CPU-second, and the forward's FLOP rate
(2 x 135M per token) as a share of the machine's measured 1-thread bf16 matmul peak
(``emo_ray.perf.peak_flops``). CPU time is the figure to read on a shared box.

    python benchmarks/benchmark_decode_batch.py [--batches 1,4,16,32,64,128,256] -> results/decode_batch.csv
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from _results import RESULTS, write_csv  # noqa: E402



@torch.no_grad()
def step_cpu_s(model, batch: int, prefix: int, steps: int) -> float:
    """Median process-CPU seconds of one decode step at ``batch`` rows."""
    ids = torch.randint(100, 40_000, (batch, prefix), generator=torch.Generator().manual_seed(batch))
    out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
    cache, nxt, times = out.past_key_values, ids[:, -1:], []
    for _ in range(steps):
        c0 = time.process_time()
        out = model(input_ids=nxt, past_key_values=cache, use_cache=True)
        times.append(time.process_time() - c0)
        cache = out.past_key_values
    return statistics.median(times[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", default="1,4,16,32,64,128,256")
    ap.add_argument("--prefix", type=int, default=24)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--out", default=os.path.join(RESULTS, "decode_batch.csv"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    from emo_ray.models.loading import load_for_eval
    from emo_ray.perf import peak_flops

    model, _ = load_for_eval("smollm2-135m", "cpu", dtype="bf16")
    # FLOPs per token: 2 x the weights a token multiplies (the input embedding is a lookup)
    n_params = sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()
    peak = peak_flops(torch.bfloat16, "cpu", threads=1)
    rows = []
    for b in map(int, args.batches.split(",")):
        s = step_cpu_s(model, b, args.prefix, args.steps)
        rows.append({"batch": b, "cpu_ms_per_step": round(1e3 * s, 1), "tokens_per_cpu_s": round(b / s, 1),
                     "share_of_bf16_peak": round(2 * n_params * b / s / peak, 3),
                     "load_average": round(os.getloadavg()[0], 1)})
        print(rows[-1], flush=True)
    print(f"bf16 1-thread peak {peak / 1e9:.0f} GFLOP/s; {n_params / 1e6:.0f}M parameters")
    write_csv(args.out, rows)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
