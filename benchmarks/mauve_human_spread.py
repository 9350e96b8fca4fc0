"""Human-vs-human MAUVE spread: how many texts and k-means buckets give a stable MAUVE.

Two disjoint random halves of a corpus' test windows (prefix + continuation, as the evaluation
featurizes the human side) are scored against each other; the 95% half-width is 1.96 x the std over
``--reps`` random splits. Used to choose configs/eval/table1_cpu.yaml's prompts and buckets
(results/mauve_human_vs_human.json).

    python benchmarks/mauve_human_spread.py --corpora wikitext-2 webtext --n 250 --buckets 0 10
"""
from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np
import torch

from emo_ray.evaluation.config import ExecutionConfig, MauveConfig
from emo_ray.evaluation.corpora import get_corpus
from emo_ray.evaluation.featurize import featurize
from emo_ray.evaluation.generation import make_prompts
from emo_ray.evaluation.mauve_score import mauve
from emo_ray.models.loading import load_tokenizer, materialize


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpora", nargs="+", default=["wikitext-2", "webtext"])
    ap.add_argument("--n", nargs="+", type=int, default=[250], help="texts per side")
    ap.add_argument("--buckets", nargs="+", type=int, default=[0, 10], help="k-means buckets (0 = auto, n/10)")
    ap.add_argument("--reps", type=int, default=8)
    ap.add_argument("--max-windows", type=int, default=1000)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    torch.set_num_threads(1)
    base = MauveConfig(featurizer="smollm2-135m", pooling="mean", layer=-8)  # configs/eval/table1_cpu.yaml
    path = materialize(base.featurizer)
    tok = load_tokenizer(path)
    ex = ExecutionConfig(executor="local", cpus_per_actor=1, dtype="bf16", progress_bar=False)
    out = {}
    for name in args.corpora:
        prompts, info = make_prompts(get_corpus(name), tok, num_prompts=0, seed=0)
        prompts = prompts[: args.max_windows]
        feats = featurize([p.prefix + p.reference for p in prompts], path, pooling=base.pooling, layer=base.layer,
                          max_tokens=base.max_tokens, batch_size=16, execution=ex, cache=True)
        for n in args.n:
            if 2 * n > len(feats):
                print(f"{name}: {len(feats)} windows, too few for 2 x {n}")
                continue
            for nb in args.buckets:
                cfg = dataclasses.replace(base, num_buckets=nb)
                rng = np.random.default_rng(0)
                vals = []
                for _ in range(args.reps):
                    idx = rng.permutation(len(feats))
                    vals.append(mauve(feats[idx[:n]], feats[idx[n:2 * n]], cfg))
                v = np.asarray(vals)
                key = f"{name}/n={n}/buckets={nb or 'auto'}"
                out[key] = {"mean": round(float(v.mean()), 4), "std": round(float(v.std(ddof=1)), 4),
                            "half_width_95": round(float(1.96 * v.std(ddof=1)), 4)}
                print(key, out[key], flush=True)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(out, fh, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
