"""How many generations a MAUVE number needs: human-vs-human MAUVE over random disjoint halves of
a corpus's windows (its spread is the noise floor of the metric itself, with no model involved),
and human-vs-word-shuffled MAUVE (the featurizer sanity check: it must score far lower).

Issue 12 asks for "enough generations that human-vs-human MAUVE has a 95% interval half-width
<= 0.02": here the half-width is 1.96 x the std of one MAUVE estimate over random halves of n
texts per side (the t-interval of a mean over several sampling runs is narrower still).

    python benchmarks/mauve_noise_floor.py [--corpora wikitext-2 webtext] [--sizes 100 200 400]
        -> results/mauve_noise_floor.csv

Offline featurizer of the CPU configs: SmolLM2-135M, mean pooling, layer -8, bf16 body.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import random
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpora", nargs="+", default=["wikitext-2", "webtext"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[100, 200, 400])
    ap.add_argument("--repeats", type=int, default=12, help="random halves per size (human vs human)")
    ap.add_argument("--shuffled-repeats", type=int, default=3)
    ap.add_argument("--buckets", nargs="+", type=int, default=[0],
                    help="k-means buckets; 0 = mauve-text's default (n/10)")
    ap.add_argument("--pool", type=int, default=800,
                    help="windows featurized per corpus (fixed, so the feature cache serves every size)")
    ap.add_argument("--featurizer", default="smollm2-135m")
    ap.add_argument("--pooling", default="mean")
    ap.add_argument("--layer", type=int, default=-8)
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "mauve_noise_floor.csv"))
    args = ap.parse_args()

    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    from emo_ray.evaluation.config import ExecutionConfig, MauveConfig
    from emo_ray.evaluation.corpora import get_corpus
    from emo_ray.evaluation.featurize import featurize
    from emo_ray.evaluation.generation import make_prompts
    from emo_ray.evaluation.mauve_score import mauve
    from emo_ray.models import load_tokenizer, materialize

    path = materialize(args.featurizer)
    tok = load_tokenizer(path)
    ex = ExecutionConfig(executor="local", cpus_per_actor=torch.get_num_threads(), dtype=args.dtype, progress_bar=False)
    base = MauveConfig(featurizer=args.featurizer, pooling=args.pooling, layer=args.layer)
    rows = []
    for name in args.corpora:
        prompts, counts = make_prompts(get_corpus(name), tok, num_prompts=0, seed=0)
        need = max(args.pool, 2 * max(args.sizes))
        sizes = [n for n in args.sizes if 2 * n <= len(prompts)]
        if len(sizes) < len(args.sizes):
            print(f"{name}: {len(prompts)} windows; sizes above {len(prompts) // 2} per side skipped")
        prompts = prompts[: min(len(prompts), need)]
        texts = [p.prefix + p.reference for p in prompts]
        rng = random.Random(0)
        shuffled = [" ".join(rng.sample(t.split(), len(t.split()))) for t in texts]
        t0 = time.perf_counter()
        human = featurize(texts, path, pooling=args.pooling, max_tokens=base.max_tokens, batch_size=16,
                          execution=ex, cache=True, layer=args.layer)
        shuf = featurize(shuffled, path, pooling=args.pooling, max_tokens=base.max_tokens, batch_size=16,
                         execution=ex, cache=True, layer=args.layer)
        feat_s = time.perf_counter() - t0
        for n, buckets in [(n, b) for n in sizes for b in args.buckets]:
            cfg = dataclasses.replace(base, num_buckets=buckets)
            hh, hs = [], []
            gen = np.random.default_rng(n)
            for r in range(args.repeats):
                idx = gen.permutation(len(texts))[: 2 * n]
                hh.append(mauve(human[idx[:n]], human[idx[n:]], cfg))
                if r < args.shuffled_repeats:
                    hs.append(mauve(human[idx[:n]], shuf[idx[n:]], cfg))
            sd = float(np.std(hh, ddof=1))
            row = {"corpus": name, "n_per_side": n, "buckets": buckets or f"auto({max(1, n // 10)})", "repeats": len(hh), "hh_mean": round(float(np.mean(hh)), 4),
                   "hh_std": round(sd, 4), "hh_half_width_95": round(1.96 * sd, 4),
                   "shuffled_mean": round(float(np.mean(hs)), 4), "featurize_s_all": round(feat_s, 1),
                   "windows": counts["windows"]}
            rows.append(row)
            print(row, flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"\n{'corpus':<12} {'n/side':>6} {'buckets':>9} {'hh mean':>8} {'hh 95% hw':>9} {'shuffled':>8}")
    for r in rows:
        print(f"{r['corpus']:<12} {r['n_per_side']:>6} {r['buckets']:>9} {r['hh_mean']:>8.3f} "
              f"{r['hh_half_width_95']:>9.3f} {r['shuffled_mean']:>8.3f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
