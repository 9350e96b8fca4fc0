"""ICL scoring time per item: the prefix-sharing scorer against the plain one-forward-per-
candidate scorer (OpenICL's way), on the same items with 8 retrieved demonstrations.

    python benchmarks/benchmark_icl_scoring.py                  # SmolLM2, sst2/trec/ag_news, 24 items
    python benchmarks/benchmark_icl_scoring.py --model tiny-llama --items 8

Writes ``benchmarks/results/icl_scoring.csv`` and prints a table; the ratio is plain / shared
(>1: prefix sharing is faster). Both scorers must make the same predictions, or the row says so.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from emo_ray.evaluation.config import EvalConfig, ICLConfig
from emo_ray.evaluation.icl.evaluate_task import build_rows, demonstration_indices, select_items
from emo_ray.evaluation.icl.predict import predict
from emo_ray.evaluation.icl.scorer import score_plain, score_shared_prefix
from emo_ray.evaluation.icl.tasks import load_task, load_task_data
from emo_ray.models import load_model

from _results import RESULTS, write_csv

OUT = RESULTS / "icl_scoring.csv"


def timed(fn, *args, repeats: int, **kw):
    """Best of ``repeats`` (wall seconds, process CPU seconds). On a shared machine the CPU time
    is the number to read: wall clock also measures whatever else runs."""
    wall, cpu, out = float("inf"), float("inf"), None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn(*args, **kw)
        wall, cpu = min(wall, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
    return (wall, cpu), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tasks", nargs="+", default=["sst2", "trec", "ag_news"])
    ap.add_argument("--items", type=int, default=24)
    ap.add_argument("--batch-items", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2, help="best of N timings per scorer")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--retriever", default="all-minilm-l6-v2")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    model, tok = load_model(args.model)
    model.eval()
    cfg = EvalConfig(icl=ICLConfig(retriever=args.retriever))
    rows_out = []
    for name in args.tasks:
        data = load_task_data(replace(load_task(name), demonstrations=8))
        items = select_items(data, args.items, 0)
        rows = build_rows(data, items, demonstration_indices(data, items, cfg))
        ids = [[tok(p)["input_ids"] for p in r["prompts"]] for r in rows]
        # Warm-up: first-call allocations would otherwise be charged to whichever scorer runs first.
        score_shared_prefix(model, ids[:1], batch_items=1)
        (t_plain, c_plain), plain = timed(score_plain, model, ids, repeats=args.repeats, batch_items=args.batch_items)
        (t_shared, c_shared), shared = timed(score_shared_prefix, model, ids, repeats=args.repeats, batch_items=args.batch_items)
        same = [predict(a, data.label_prior) for a in plain] == [predict(b, data.label_prior) for b in shared]
        max_diff = max(float(abs(a.nll_sum - b.nll_sum).max()) for a, b in zip(plain, shared))
        rows_out.append({
            "model": args.model, "task": name, "labels": len(data.task.label_words), "items": len(ids),
            "mean_prompt_tokens": round(sum(len(c) for it in ids for c in it) / sum(len(it) for it in ids), 1),
            "threads": args.threads, "batch_items": args.batch_items,
            "plain_s_per_item": round(t_plain / len(ids), 4), "shared_s_per_item": round(t_shared / len(ids), 4),
            "ratio_plain_over_shared": round(t_plain / t_shared, 2),
            "plain_cpu_s_per_item": round(c_plain / len(ids), 4), "shared_cpu_s_per_item": round(c_shared / len(ids), 4),
            "cpu_ratio_plain_over_shared": round(c_plain / c_shared, 2), "same_predictions": same,
            "max_abs_nll_diff": f"{max_diff:.2e}",
        })
        print(rows_out[-1], flush=True)
    write_csv(OUT, rows_out)
    cols = ["task", "labels", "items", "mean_prompt_tokens", "plain_s_per_item", "shared_s_per_item", "ratio_plain_over_shared", "cpu_ratio_plain_over_shared", "same_predictions"]
    print("\n" + " | ".join(cols))
    for r in rows_out:
        print(" | ".join(str(r[c]) for c in cols))
    print(f"\nwritten {OUT}")


if __name__ == "__main__":
    main()
