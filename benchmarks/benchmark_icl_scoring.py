"""ICL scoring time per item: the prefix-sharing scorer against the plain one-forward-per-
candidate scorer (OpenICL's way), and ``rank_only`` (prefix sharing without the output head on
the prefix of equal-length candidates), on the same items with 8 retrieved demonstrations.

    python benchmarks/benchmark_icl_scoring.py                  # SmolLM2, sst2/trec/ag_news, 24 items
    python benchmarks/benchmark_icl_scoring.py --model tiny-llama --items 8
    python benchmarks/benchmark_icl_scoring.py --scorers shared_prefix,rank_only --tasks sst2 --items 200

Writes ``benchmarks/results/icl_scoring.csv`` (``--out``) and prints a table; each scorer's CPU
ratio is against ``shared_prefix`` (>1: faster). Every scorer must make the same predictions as
the first one listed, or the row says so.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from emo_ray.evaluation.config import EvalConfig, ICLConfig
from emo_ray.evaluation.icl.evaluate_task import build_rows, demonstration_indices, select_items
from emo_ray.evaluation.icl.predict import predict
from emo_ray.evaluation.icl.scorer import get_scorer, score_shared_prefix
from emo_ray.evaluation.icl.tasks import load_task, load_task_data
from emo_ray.models.loading import load_for_eval

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
    ap.add_argument("--scorers", default="plain,shared_prefix,rank_only", help="comma-separated; shared_prefix is always run")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--dtype", default="fp32", help="fp32, or bf16 as the evaluation ships it (bf16 body, fp32 head)")
    args = ap.parse_args()
    scorers = [n for n in args.scorers.split(",") if n]
    scorers += [] if "shared_prefix" in scorers else ["shared_prefix"]

    torch.set_num_threads(args.threads)
    model, tok = load_for_eval(args.model, dtype=args.dtype)
    cfg = EvalConfig(icl=ICLConfig(retriever=args.retriever))
    rows_out = []
    for name in args.tasks:
        data = load_task_data(replace(load_task(name), demonstrations=8))
        items = select_items(data, args.items, 0)
        rows = build_rows(data, items, demonstration_indices(data, items, cfg))
        ids = [[tok(p)["input_ids"] for p in r["prompts"]] for r in rows]
        # Warm-up: first-call allocations would otherwise be charged to whichever scorer runs first.
        score_shared_prefix(model, ids[:1], batch_items=1)
        row = {"model": args.model, "task": name, "labels": len(data.task.label_words), "items": len(ids),
               "mean_prompt_tokens": round(sum(len(c) for it in ids for c in it) / sum(len(it) for it in ids), 1),
               "equal_length_items": sum(len({len(c) for c in it}) == 1 for it in ids),
               "threads": args.threads, "batch_items": args.batch_items, "dtype": args.dtype}
        runs = {n: timed(get_scorer(n), model, ids, repeats=args.repeats, batch_items=args.batch_items) for n in scorers}
        first = [predict(a, data.label_prior) for a in runs[scorers[0]][1]]
        for n, ((wall, cpu), out) in runs.items():
            row[f"{n}_s_per_item"] = round(wall / len(ids), 4)
            row[f"{n}_cpu_s_per_item"] = round(cpu / len(ids), 4)
            row[f"{n}_cpu_speedup_vs_shared_prefix"] = round(runs["shared_prefix"][0][1] / cpu, 2)
            row[f"{n}_same_predictions"] = [predict(a, data.label_prior) for a in out] == first
        rows_out.append(row)
        print(rows_out[-1], flush=True)
    write_csv(args.out, rows_out)
    cols = ["task", "labels", "items", "equal_length_items"] + [f"{n}_{k}" for n in scorers for k in
                                                                  ("cpu_s_per_item", "cpu_speedup_vs_shared_prefix", "same_predictions")]
    print("\n" + " | ".join(cols))
    for r in rows_out:
        print(" | ".join(str(r[c]) for c in cols))
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
