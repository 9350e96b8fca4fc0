"""Evaluation throughput fp32 vs bf16 (``execution.dtype``) and the caches that skip repeated work.

Every stage is the real actor class (``Sampler``, ``Featurizer``, ``ContinuationNLL``,
``ICLScorer``) called in this process with one torch thread (one actor of ``configs/eval/quick.yaml``),
on SmolLM2-135M and the shipped data:

* sampling tokens/s: ancestral sampling of ``--gen-tokens`` tokens from ``--prompts`` WikiText-2
  prefixes, 2 seeds;
* MAUVE featurisation texts/s (SmolLM2 as featurizer, mean pooling, layer -8 as quick.yaml) and
  MAUVE of the *same* fp32 generations with fp32 vs bf16 features, against the seed std;
* oracle perplexity tokens/s (``ContinuationNLL``) and the oracle ppl in both dtypes;
* ICL seconds per item on ``--icl-items`` SST-2 items, 8 retrieved demonstrations, and the
  agreement of the fp32 and bf16 predictions;
* caches: retriever embeddings of SST-2's training split and the packed WikiText-2 corpus of
  ``configs/smollm2_wikitext2.yaml``, cold (empty cache folder) vs warm.

Stages are timed fp32 then bf16 back to back; each ratio comes from the same run.

    python benchmarks/benchmark_eval_throughput.py [--prompts 16 --gen-tokens 64 --icl-items 200]
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from _results import RESULTS, write_csv  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timed(fn, *a, **k):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*a, **k)
    return out, time.perf_counter() - t0, time.process_time() - c0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--gen-tokens", type=int, default=64)
    ap.add_argument("--icl-items", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip", default="", help="comma-separated stages to skip: sampling,mauve,oracle,icl,cache")
    ap.add_argument("--out", default=os.path.join(RESULTS, "eval_throughput.csv"))
    args = ap.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    torch.set_num_threads(args.threads)

    from emo_ray.evaluation.config import MauveConfig
    from emo_ray.evaluation.corpora import get_corpus
    from emo_ray.evaluation.featurize import Featurizer
    from emo_ray.evaluation.prompts import make_prompts
    from emo_ray.inference.sampler import Sampler
    from emo_ray.evaluation.mauve_score import mauve
    from emo_ray.evaluation.oracle_ppl import ContinuationNLL, corpus_perplexity
    from emo_ray.models import load_tokenizer, materialize

    path = materialize(args.model)
    tok = load_tokenizer(path)
    rows, quality = [], []
    print(f"{args.model}, {args.threads} thread(s); load average {os.getloadavg()[0]:.1f}", flush=True)

    def add(stage, unit, fp32, bf16, extra="", cpu=None):
        """``cpu``: (fp32, bf16) process CPU seconds of the same work; on a shared machine the
        CPU-time ratio is the one to read (wall clock also measures the other jobs)."""
        rows.append({"stage": stage, "unit": unit, "fp32": f"{fp32:.3f}", "bf16": f"{bf16:.3f}",
                     "speedup_wall": f"{(bf16 / fp32 if 'per_s' in unit else fp32 / bf16):.2f}",
                     "speedup_cpu": f"{cpu[0] / cpu[1]:.2f}" if cpu else "", "note": extra})
        print(rows[-1], flush=True)

    gens = {}
    # sampling alone (``--skip mauve,oracle``) or sampling for the MAUVE and oracle stages
    if "sampling" not in skip:
        corpus = get_corpus("wikitext-2")
        prompts, _ = make_prompts(corpus, tok, num_prompts=args.prompts, seed=0)
        srows = pd.DataFrame([{"prompt_id": p.prompt_id, "seed": s, "decoder": "ancestral", "prefix_ids": p.prefix_ids}
                              for s in (0, 1) for p in prompts])
        tps, cpu = {}, {}
        for dt in ("fp32", "bf16"):
            sampler = Sampler(path, gen_tokens=args.gen_tokens, threads=args.threads, dtype=dt)
            sampler(srows.iloc[:2])  # warm-up
            out, wall, cpu[dt] = timed(lambda: pd.concat([sampler(srows.iloc[i:i + 16]) for i in range(0, len(srows), 16)]))
            n = int(sum(len(g) for g in out["gen_ids"]))
            tps[dt] = n / wall
            gens[dt] = out
            del sampler
        add("sampling", "tokens_per_s", tps["fp32"], tps["bf16"], f"{len(srows)} rows x {args.gen_tokens} tokens, batch 16",
            (cpu["fp32"], cpu["bf16"]))

        texts_h = [p.prefix + p.reference for p in prompts]
        g32 = gens["fp32"]
        texts_m = [prompts[int(i)].prefix + g for i, g in zip(g32["prompt_id"], g32["generation"])]
        if "mauve" not in skip:
            mcfg = MauveConfig(featurizer=args.model, pooling="mean", layer=-8, max_tokens=256)
            feats, tps, cpu = {}, {}, {}
            for dt in ("fp32", "bf16"):
                f = Featurizer(path, "mean", 256, layer=-8, threads=args.threads, dtype=dt)
                f(pd.DataFrame({"text": texts_h[:2]}))
                allt = pd.DataFrame({"text": texts_h + texts_m})
                out, wall, cpu[dt] = timed(lambda: pd.concat([f(allt.iloc[i:i + 16]) for i in range(0, len(allt), 16)]))
                tps[dt] = len(allt) / wall
                feats[dt] = np.stack(out["features"].to_numpy())
            add("mauve_featurize", "texts_per_s", tps["fp32"], tps["bf16"], f"{len(texts_h) + len(texts_m)} texts, layer -8 mean",
                (cpu["fp32"], cpu["bf16"]))
            nh = len(texts_h)
            seeds = g32["seed"].to_numpy()
            m = {dt: [mauve(feats[dt][:nh], feats[dt][nh:][seeds == s], mcfg) for s in (0, 1)] for dt in feats}
            std = float(np.std(m["fp32"], ddof=1))
            diff = max(abs(a - b) for a, b in zip(m["fp32"], m["bf16"]))
            quality.append({"check": "MAUVE same generations, fp32 vs bf16 features",
                            "fp32": " / ".join(f"{v:.3f}" for v in m["fp32"]),
                            "bf16": " / ".join(f"{v:.3f}" for v in m["bf16"]),
                            "result": f"max |diff| {diff:.3f} vs seed std {std:.3f}: {'within' if diff <= std else 'OUTSIDE'} one std"})
            print(quality[-1], flush=True)
        if "oracle" not in skip:
            orows = pd.DataFrame([{"prefix": prompts[int(i)].prefix, "continuation": g}
                                  for i, g in zip(g32["prompt_id"], g32["generation"]) if g.strip()])
            tps, ppl, cpu = {}, {}, {}
            for dt in ("fp32", "bf16"):
                o = ContinuationNLL(path, threads=args.threads, dtype=dt)
                o(orows.iloc[:2])
                out, wall, cpu[dt] = timed(lambda: pd.concat([o(orows.iloc[i:i + 16]) for i in range(0, len(orows), 16)]))
                tps[dt] = float(out["n_tokens"].sum()) / wall
                ppl[dt] = corpus_perplexity(out["nll_sum"], out["n_tokens"])
            add("oracle_ppl", "tokens_per_s", tps["fp32"], tps["bf16"], f"ppl fp32 {ppl['fp32']:.3f} bf16 {ppl['bf16']:.3f}",
                (cpu["fp32"], cpu["bf16"]))
            quality.append({"check": "oracle perplexity of the same generations", "fp32": f"{ppl['fp32']:.4f}",
                            "bf16": f"{ppl['bf16']:.4f}", "result": f"rel diff {abs(ppl['bf16'] / ppl['fp32'] - 1):.2%}"})

    if "icl" not in skip:
        from emo_ray.evaluation.config import EvalConfig, ICLConfig
        from emo_ray.evaluation.icl.evaluate_task import ICLScorer, build_rows, demonstration_indices, select_items
        from emo_ray.evaluation.icl.predict import predict
        from emo_ray.evaluation.icl.tasks import load_task, load_task_data

        data = load_task_data(replace(load_task("sst2"), demonstrations=8))
        items = select_items(data, args.icl_items, 0)
        cfg = EvalConfig(icl=ICLConfig(retriever="all-minilm-l6-v2"))
        irows = pd.DataFrame(build_rows(data, items, demonstration_indices(data, items, cfg)))
        spi, preds, cpu = {}, {}, {}
        for dt in ("fp32", "bf16"):
            sc = ICLScorer(path, "shared_prefix", batch_items=4, threads=args.threads, dtype=dt)
            sc(irows.iloc[:1])
            out, wall, cpu[dt] = timed(lambda: pd.concat([sc(irows.iloc[i:i + 8]) for i in range(0, len(irows), 8)]))
            spi[dt] = wall / len(irows)
            from emo_ray.evaluation.icl.scorer import CandidateNLL

            preds[dt] = [predict(CandidateNLL(np.asarray(a), np.asarray(b)), data.label_prior)
                         for a, b in zip(out["nll_sum"], out["n_tokens"])]
        agree = float(np.mean(np.array(preds["fp32"]) == np.array(preds["bf16"])))
        add("icl_sst2", "s_per_item", spi["fp32"], spi["bf16"], f"{len(irows)} items, 8 demos, shared prefix",
            (cpu["fp32"], cpu["bf16"]))
        quality.append({"check": f"ICL SST-2 predictions, {len(irows)} items", "fp32": "", "bf16": "",
                        "result": f"agreement {agree:.1%}"})
        print(quality[-1], flush=True)

    if "cache" not in skip:
        from emo_ray.config import load_config
        from emo_ray.data import prepare_blocks
        from emo_ray.evaluation.icl import retriever
        from emo_ray.evaluation.icl.evaluate_task import input_text
        from emo_ray.evaluation.icl.tasks import load_task, load_task_data

        old = os.environ.get("EMO_RAY_CACHE")
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["EMO_RAY_CACHE"] = tmp  # cold: an empty cache folder (models resolved above)
            try:
                data = load_task_data(load_task("sst2"))
                texts = [input_text(data.task, r) for r in data.train]
                _, cold, _ = timed(retriever.embed, texts, "all-minilm-l6-v2")
                _, warm, _ = timed(retriever.embed, texts, "all-minilm-l6-v2")
                add("retriever_embeddings_sst2_train", "seconds", cold, warm,
                    f"{len(texts)} texts; cold vs cache hit ({retriever.CACHE_STATS})")
                dcfg = load_config(os.path.join(ROOT, "configs/smollm2_wikitext2.yaml")).data
                p1, cold, _ = timed(prepare_blocks, dcfg, tok)
                p2, warm, _ = timed(prepare_blocks, dcfg, tok)
                add("packed_corpus_wikitext2", "seconds", cold, warm, f"{p1.cache} then {p2.cache}; {p1.stats['train_tokens']} tokens")
            finally:
                if old is None:
                    os.environ.pop("EMO_RAY_CACHE", None)
                else:
                    os.environ["EMO_RAY_CACHE"] = old

    write_csv(args.out, rows, ["stage", "unit", "fp32", "bf16", "speedup_wall", "speedup_cpu", "note"])
    if quality:
        write_csv(args.out, quality, ["check", "fp32", "bf16", "result"], append=True)
    print("\n| stage | unit | fp32 (cache: cold) | bf16 (cache: warm) | speedup wall | speedup CPU | note |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['stage']} | {r['unit']} | {r['fp32']} | {r['bf16']} | {r['speedup_wall']}x | {r['speedup_cpu']}x | {r['note']} |")
    print("\n| quality check | fp32 | bf16 | result |\n|---|---|---|---|")
    for q in quality:
        print(f"| {q['check']} | {q['fp32']} | {q['bf16']} | {q['result']} |")
    print(f"wrote {args.out}; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
