"""Sampling throughput by batch size, and the draw itself: ``torch.multinomial`` per row (the
sampler before 2026-12-02) against the inverse-CDF draw of ``decoders.choose``.

One torch thread, SmolLM2-135M in bf16 (head fp32, as ``execution.dtype: bf16``), ancestral
sampling of ``--gen-tokens`` tokens after ``--prefix`` random token prefixes, one generator per
row as the evaluation's ``Sampler``. Each batch size is timed with both draws back to back, so
every ratio comes from the same run (the box may be shared: read ratios, not absolute speeds).

    python benchmarks/benchmark_sampling_batch.py [--batches 16,64,128 --gen-tokens 80]
        -> results/sampling_batch.csv
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from unittest import mock

import pandas as pd
import torch

from emo_ray.inference import decoders
from emo_ray.inference.sampler import sample


def multinomial_choose(logits, dec, generators):
    """The previous draw: one ``torch.multinomial`` per row (a fp32 exponential per vocab entry)."""
    if dec.greedy:
        return logits.argmax(-1)
    probs = decoders.next_token_probs(logits, dec)
    return torch.stack([torch.multinomial(probs[r], 1, generator=g)[0] for r, g in enumerate(generators)])


def tokens_per_s(model, batch: int, prefix: int, gen_tokens: int, draw) -> float:
    prefixes = [torch.randint(100, 40_000, (prefix,), generator=torch.Generator().manual_seed(r)).tolist()
                for r in range(batch)]
    gens = [torch.Generator().manual_seed(r) for r in range(batch)]
    with mock.patch("emo_ray.inference.sampler.choose", draw):
        t0 = time.perf_counter()
        ids, _ = sample(model, prefixes, decoders.get_decoder("ancestral"), gens, gen_tokens, set())
        dt = time.perf_counter() - t0
    return sum(map(len, ids)) / dt


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--batches", default="16,64,128")
    ap.add_argument("--prefix", type=int, default=20)
    ap.add_argument("--gen-tokens", type=int, default=80)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "sampling_batch.csv"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from emo_ray.models.loading import load_for_eval

    model, _ = load_for_eval(args.model, "cpu", dtype="bf16")
    tokens_per_s(model, 4, args.prefix, 4, decoders.choose)  # warm-up
    rows = []
    for b in map(int, args.batches.split(",")):
        old = tokens_per_s(model, b, args.prefix, args.gen_tokens, multinomial_choose)
        new = tokens_per_s(model, b, args.prefix, args.gen_tokens, decoders.choose)
        rows.append({"batch": b, "multinomial_tok_s": round(old, 1), "inverse_cdf_tok_s": round(new, 1),
                     "speedup": round(new / old, 2)})
    base = rows[0]["inverse_cdf_tok_s"]
    for r in rows:
        r[f"inverse_cdf_vs_batch_{rows[0]['batch']}"] = round(r["inverse_cdf_tok_s"] / base, 2)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(args.out, index=False)
    print(f"{'batch':>6} {'multinomial':>12} {'inverse CDF':>12} {'speed-up':>9}   tok/s, 1 thread, bf16 -> {args.out}")
    for r in rows:
        print(f"{r['batch']:>6} {r['multinomial_tok_s']:>12} {r['inverse_cdf_tok_s']:>12} {r['speedup']:>8}x")


if __name__ == "__main__":
    main()
