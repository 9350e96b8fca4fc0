"""Evaluation stages before / after a change, in one process on the same rows (issue 26).

The ``table1-cpu`` evaluation's MAUVE featurisation and oracle scoring (Gemma-3-270M, bf16 body,
one thread, ``configs/eval/table1_cpu.yaml``'s settings) run twice, interleaved: with the stage
modules as they are at ``--before`` (a git revision, read with ``git show``) and as they are in the
working tree. Same WikiText-2 word-window prompts (the official protocol's), same batches:

* featurize: three ``featurize`` calls as ``open_ended.featurize_sides`` makes them (human windows,
  the "generations", the ceiling's disjoint windows; stand-ins: other windows of the corpus, two
  per prompt as two sampling seeds would give), model loads counted, features compared bit for bit;
* sample: the ``Sampler`` over ``--prompts`` prompts x 2 seeds (``--gen-tokens`` 80, EOS masked, batch 125), and
  the opt-in ``generation.pad_prefixes`` (one left-padded decode per batch); samples compared token by token;
* oracle: ``score_continuations`` over the same 4 x ``--prompts`` continuations, perplexity compared;
  ``--bf16-head`` adds the opt-in bf16 output head (``oracle.fp32_head: false``) and its ppl shift.

Prints wall and process-CPU seconds, the stage's peak resident memory (``VmHWM`` after resetting it) and the CPU-time ratio (on a shared box the one to read) and
writes ``results/eval_stages.csv``.

    python benchmarks/benchmark_eval_stages.py [--prompts 50] [--before main] [--bf16-head]
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # no spinning threads on a shared box (before torch)

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from _results import RESULTS, write_csv  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def module_at(revision: str, relpath: str, name: str):
    """The module ``relpath`` as it was at git ``revision`` (its imports resolve to today's tree)."""
    source = subprocess.run(["git", "-C", ROOT, "show", f"{revision}:{relpath}"], check=True, capture_output=True,
                            text=True).stdout
    spec = importlib.util.spec_from_loader(name, loader=None)
    module = importlib.util.module_from_spec(spec)
    exec(compile(source, f"{revision}:{relpath}", "exec"), module.__dict__)
    return module


def timed(fn):
    """``fn()``, its wall and process-CPU seconds and its peak RSS in GB (the high-water mark reset
    first: ``echo 5 > /proc/self/clear_refs``)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    with open("/proc/self/status") as f:
        hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
    return out, wall, cpu, hwm / 2**20


def texts_and_rows(n: int):
    """``n`` prompts' human windows, ``2n`` stand-in generations, ``n`` disjoint windows."""
    from emo_ray.evaluation.corpora import get_corpus
    from emo_ray.evaluation.prompts import make_prompts
    from emo_ray.models import load_tokenizer, materialize

    prompts, _ = make_prompts(get_corpus("wikitext-2"), load_tokenizer(materialize("smollm2-135m")), num_prompts=4 * n,
                              seed=0, window_unit="words")
    sets = {"human": prompts[:n], "model": prompts[n : 3 * n], "human2": prompts[3 * n :]}
    texts = {k: [p.prefix + p.reference for p in v] for k, v in sets.items()}
    rows = [{"prefix": p.prefix, "continuation": p.reference} for p in prompts]
    return texts, rows


def sample_stage(args, ex, batch_size: int, record, loads) -> None:
    """The sampler before, after (default) and with ``pad_prefixes``, on the same rows."""
    from emo_ray.evaluation.corpora import get_corpus
    from emo_ray.evaluation.prompts import make_prompts
    from emo_ray.inference.executor import map_rows
    from emo_ray.models import load_tokenizer, materialize

    smol = materialize("smollm2-135m")
    prompts, _ = make_prompts(get_corpus("wikitext-2"), load_tokenizer(smol), num_prompts=args.prompts, seed=0,
                              window_unit="words")
    rows = sorted(({"prompt_id": p.prompt_id, "seed": s, "decoder": "ancestral", "prefix_ids": p.prefix_ids}
                   for s in (0, 1) for p in prompts), key=lambda r: r["prompt_id"])  # as open_ended orders them
    gens = {}
    for version in ("before", "after", "after-pad-prefixes"):
        mod = (module_at(args.before, "emo_ray/inference/sampler.py", "sampler_before") if version == "before"
               else importlib.import_module("emo_ray.inference.sampler"))
        kw = {"model_path": smol, "gen_tokens": args.gen_tokens, "min_tokens": args.gen_tokens}
        if version == "after-pad-prefixes":
            kw["pad_prefixes"] = True
        loads["n"] = 0
        out, wall, cpu, peak = timed(lambda: map_rows(rows, mod.Sampler, kw, execution=ex, batch_size=batch_size))
        gens[version] = [list(r["gen_ids"]) for r in out]
        n_tok = sum(map(len, gens[version]))
        note = f"{len(rows)} rows, {n_tok} tokens, {n_tok / cpu:.0f} tokens per CPU-s"
        if version != "before":
            same = sum(a == b for a, b in zip(gens["before"], gens[version]))
            note += f"; samples identical to before: {same} / {len(rows)}"
        record("sample", version, wall, cpu, peak, loads["n"], note)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=50)
    ap.add_argument("--before", default="main", help="git revision of the 'before' stage modules")
    ap.add_argument("--gen-tokens", type=int, default=80, help="tokens sampled per row (EOS masked)")
    ap.add_argument("--skip", default="", help="comma-separated: sample,featurize,oracle")
    ap.add_argument("--bf16-head", action="store_true", help="also the oracle with its head in bf16 (opt-in)")
    ap.add_argument("--oracle-batch", type=int, default=8,
                    help="oracle rows per batch (table1_cpu: 16; the 'before' head then holds 2 x 1.5 GB of logits)")
    ap.add_argument("--out", default=os.path.join(RESULTS, "eval_stages.csv"))
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    from emo_ray.evaluation.config import load_eval_config
    from emo_ray.inference.executor import release_local_actors
    from emo_ray.models import loading, materialize

    cfg = load_eval_config(os.path.join(ROOT, "configs", "eval", "table1_cpu.yaml"))
    ex = cfg.execution.__class__(**{**cfg.execution.__dict__, "progress_bar": False})
    m = cfg.mauve
    gemma = materialize(m.featurizer)
    texts, rows = texts_and_rows(args.prompts)
    loads = {"n": 0}
    real = loading.load_for_eval

    def counted(*a, **k):
        loads["n"] += 1
        return real(*a, **k)

    loading.load_for_eval = counted
    results = []

    def record(stage, version, wall, cpu, peak, n_loads, note=""):
        results.append({"stage": stage, "version": version, "wall_s": f"{wall:.1f}", "cpu_s": f"{cpu:.1f}",
                        "peak_rss_gb": f"{peak:.2f}",
                        "model_loads": n_loads, "load_average": f"{os.getloadavg()[0]:.1f}", "note": note})
        print(results[-1], flush=True)

    skip = set(filter(None, args.skip.split(",")))
    if "sample" not in skip:
        sample_stage(args, ex, cfg.generation.batch_size, record, loads)
    if "featurize" not in skip:
        feats = {}
        for version in ("before", "after"):
            mod = (module_at(args.before, "emo_ray/evaluation/featurize.py", "featurize_before") if version == "before"
                   else importlib.import_module("emo_ray.evaluation.featurize"))
            loads["n"] = 0
            kw = {"pooling": m.pooling, "layer": m.layer, "max_tokens": m.max_tokens, "batch_size": m.batch_size,
                  "execution": ex}
            feats[version], wall, cpu, peak = timed(lambda: [mod.featurize(texts[k], gemma, **kw) for k in texts])
            release_local_actors()
            record("featurize", version, wall, cpu, peak, loads["n"], f"{sum(map(len, texts.values()))} texts, layer {m.layer}")
        same = all(np.array_equal(a, b) for a, b in zip(feats["before"], feats["after"]))
        print(f"features bit-identical: {same}")
        results[-1]["note"] += f"; features bit-identical to before: {same}"
    if "oracle" not in skip:
        out = {}
        versions = ["before", "after"] + (["after-bf16-head"] if args.bf16_head else [])
        for version in versions:
            mod = (module_at(args.before, "emo_ray/evaluation/oracle_ppl.py", "oracle_before") if version == "before"
                   else importlib.import_module("emo_ray.evaluation.oracle_ppl"))
            extra = {"fp32_head": False} if version == "after-bf16-head" else {}
            loads["n"] = 0
            scored, wall, cpu, peak = timed(lambda: mod.score_continuations(rows, gemma, execution=ex,
                                                                        batch_size=args.oracle_batch, **extra))
            nll = np.array([r["nll_sum"] for r in scored])
            n_tok = np.array([r["n_tokens"] for r in scored])
            out[version] = (nll, n_tok)
            ppl = float(np.exp(nll.sum() / n_tok.sum()))
            note = f"{len(rows)} continuations, {n_tok.sum()} tokens, ppl {ppl:.4f}"
            if version != "before":
                base = out["before"][0]
                note += (f"; ppl / before - 1 = {ppl / np.exp(base.sum() / n_tok.sum()) - 1:.2e}; "
                         f"max per-text |nll diff| / nll {np.max(np.abs(nll - base) / base):.2e}")
            record("oracle", version, wall, cpu, peak, loads["n"], note)
    write_csv(args.out, results)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
