"""Open-ended generation evaluation of one corpus (paper 4.1): sample, then MAUVE, oracle
perplexity and ROUGE per seed, reported as mean and std over the seeds, next to the
human-vs-human MAUVE ceiling (``mauve_features.py``, whose ``features/<corpus>.npz`` artifact lets
``emo-ray rescore`` re-score MAUVE under other settings without resampling); with
``generation.precision_recall`` also the section-4 / Figure 2 cross-entropies on the same prompts
and samples (``precision_recall.py``).

Empty generations (EOS first, or only whitespace) are recorded and counted
(``n_empty``) and left out of every score; if a seed has fewer than two non-empty generations
the corpus fails loudly instead of reporting a meaningless number.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from emo_ray.evaluation import mauve_features, precision_recall
from emo_ray.evaluation.config import EvalConfig
from emo_ray.evaluation.corpora import corpus_label, get_corpus
from emo_ray.evaluation.executor import map_rows
from emo_ray.evaluation.featurize import featurize, featurizer_identity, resolved_dtype
from emo_ray.evaluation.generation import Sampler, make_prompts
from emo_ray.evaluation.mauve_features import CorpusFeatures, mean_std
from emo_ray.evaluation.mauve_score import mauve_settings
from emo_ray.evaluation.oracle_ppl import corpus_perplexity, score_continuations
from emo_ray.evaluation.rouge import rouge, rouge_settings


@dataclass
class SectionResult:
    metrics: dict[str, float]
    params: dict[str, str]
    tables: dict[str, pd.DataFrame]
    files: dict[str, bytes] = field(default_factory=dict)
    """Other artifacts by MLflow artifact path (``features/<corpus>.npz``)."""


def evaluate_corpus(model_path: str, corpus_name: str, cfg: EvalConfig) -> SectionResult:
    from emo_ray.models import load_tokenizer, materialize

    t0 = time.perf_counter()
    g, ex = cfg.generation, cfg.execution
    corpus = get_corpus(corpus_name)
    prompts, counts = make_prompts(corpus, load_tokenizer(model_path), num_prompts=g.num_prompts, seed=g.prompt_seed,
                                   window_unit=g.window_unit)
    rows = [
        {"prompt_id": p.prompt_id, "seed": s, "decoder": d, "prefix_ids": p.prefix_ids}
        for d in g.decoders for s in g.seeds for p in prompts
    ]
    if g.window_unit == "words":  # a prompt's seeds side by side: longer equal-length runs per sampling batch
        rows.sort(key=lambda r: (g.decoders.index(r["decoder"]), r["prompt_id"]))
    t_gen = time.perf_counter()
    max_new, min_new = corpus.gen_tokens + g.extra_tokens, 0 if g.stop_at_eos else corpus.gen_tokens
    gens = map_rows(rows, Sampler, {"model_path": model_path, "gen_tokens": max_new, "min_tokens": min_new},
                    execution=ex, batch_size=g.batch_size)
    t_gen = time.perf_counter() - t_gen
    table = pd.DataFrame(gens).drop(columns=["prefix_ids", "gen_ids"])
    table["prefix"] = [prompts[i].prefix for i in table["prompt_id"]]
    table["reference"] = [prompts[i].reference for i in table["prompt_id"]]
    table["empty"] = [not t.strip() for t in table["generation"]]
    table["n_gen_tokens"] = [len(r["gen_ids"]) for r in gens]
    ok = table[~table["empty"]]

    def side_text(prefix: str, cont: str) -> str:
        return prefix + cont if cfg.mauve.include_prefix else cont

    # Featurize the human side once (cached across runs) and every non-empty generation.
    m = cfg.mauve
    feat_path = materialize(m.featurizer)
    fkw = {"pooling": m.pooling, "layer": m.layer, "max_tokens": m.max_tokens, "batch_size": m.batch_size, "execution": ex}
    t_feat = time.perf_counter()
    human = featurize([side_text(p.prefix, p.reference) for p in prompts], feat_path, cache=m.cache, **fkw)
    model_feats = featurize([side_text(a, b) for a, b in zip(ok["prefix"], ok["generation"])], feat_path, **fkw) if len(ok) else None
    # The human-vs-human ceiling: a second, disjoint set of as many windows (cached like the first).
    human2_prompts, ceiling_note = mauve_features.disjoint_windows(corpus, load_tokenizer(model_path), prompts,
                                                                   seed=g.prompt_seed, window_unit=g.window_unit)
    human2 = (featurize([side_text(p.prefix, p.reference) for p in human2_prompts], feat_path, cache=m.cache, **fkw)
              if human2_prompts else np.zeros((0, human.shape[1]), np.float32))
    t_feat = time.perf_counter() - t_feat

    # Oracle NLL of every non-empty generation and of the human continuations.
    t_orc = time.perf_counter()
    oracle_rows = [{"prefix": a, "continuation": b, "kind": "model", "idx": i} for i, a, b in zip(ok.index, ok["prefix"], ok["generation"])]
    oracle_rows += [{"prefix": p.prefix, "continuation": p.reference, "kind": "human", "idx": p.prompt_id} for p in prompts]
    oracle_path = materialize(cfg.oracle.model)
    scored = score_continuations(oracle_rows, oracle_path, execution=ex, batch_size=cfg.oracle.batch_size)
    t_orc = time.perf_counter() - t_orc
    model_nll = {r["idx"]: (r["nll_sum"], r["n_tokens"]) for r in scored if r["kind"] == "model"}
    human_nll = [(r["nll_sum"], r["n_tokens"]) for r in scored if r["kind"] == "human"]
    table["oracle_nll_sum"] = [model_nll.get(i, (np.nan, 0))[0] for i in table.index]
    table["oracle_tokens"] = [model_nll.get(i, (np.nan, 0))[1] for i in table.index]

    # Forward / reverse cross-entropy (recall / precision): the same prompts and samples; the
    # surrogate's NLLs are the oracle's when the surrogate is the oracle.
    pr = None
    t_pr = time.perf_counter()
    if g.precision_recall:
        pr = precision_recall.score_corpus(model_path, prompts, table, ok, cfg, oracle_path)
    t_pr = time.perf_counter() - t_pr

    key = f"gen/{corpus_label(corpus_name)}"
    metrics: dict[str, float] = {
        f"{key}/n_prompts": len(prompts),
        f"{key}/oracle_ppl_human": corpus_perplexity(*zip(*human_nll)),
    }
    if pr is not None:
        metrics[f"{key}/recall_ce"] = pr.recall_ce  # no sampling involved: one number, no seed std
    for dec in g.decoders:
        per_seed: dict[str, list[float]] = {"oracle_ppl": [], "rouge1": [], "rougeL": [], "n_empty": [], "gen_tokens": []}
        if pr is not None:
            per_seed["precision_ce"] = []
        for s in g.seeds:
            sel = table[(table["decoder"] == dec) & (table["seed"] == s)]
            good = sel[~sel["empty"]]
            if len(good) < 2:
                raise ValueError(f"{corpus_name} decoder={dec} seed={s}: {len(good)} non-empty generations of {len(sel)}")
            r = rouge(list(good["generation"]), list(good["reference"]), use_stemmer=cfg.rouge.use_stemmer)
            vals = {
                "oracle_ppl": corpus_perplexity(good["oracle_nll_sum"], good["oracle_tokens"]),
                "rouge1": r["rouge1"],
                "rougeL": r["rougeL"],
                "n_empty": float(sel["empty"].sum()),
                "gen_tokens": float(sel["n_gen_tokens"].mean()),
            }
            if pr is not None:
                vals["precision_ce"] = precision_recall.precision_ce(good, pr)
            for name, v in vals.items():
                per_seed[name].append(v)
                metrics[f"{key}/{dec}/seed{s}/{name}"] = v
        for name, vs in per_seed.items():
            mu, sd = mean_std(vs)
            metrics[f"{key}/{dec}/{name}_mean"] = mu
            metrics[f"{key}/{dec}/{name}_std"] = sd
    # MAUVE, MAUVE* and frontier integral per sampling run, and the ceiling, from the features
    # exactly as logged: ``emo-ray rescore`` under unchanged settings reproduces these numbers.
    features = CorpusFeatures.of(ok, model_feats, prompts, human, human2_prompts, human2, m,
                                 featurizer_identity(feat_path, m.pooling, m.max_tokens, m.layer, resolved_dtype(ex)))
    t_mauve = time.perf_counter()
    metrics.update(mauve_features.all_metrics(features, m, key))
    t_mauve = time.perf_counter() - t_mauve
    metrics.update({
        f"time/{key}/mauve_s": t_mauve,
        f"time/{key}/sample_s": t_gen, f"time/{key}/featurize_s": t_feat,
        f"time/{key}/oracle_s": t_orc, f"time/{key}/total_s": time.perf_counter() - t0,
    })
    if pr is not None:
        metrics[f"time/{key}/precision_recall_s"] = t_pr
    params = {
        f"{key}/prompts": (
            f"protocol={cfg.protocol} window_unit={g.window_unit} source={corpus.source} unit={corpus.unit} "
            f"prefix_len={corpus.prefix_tokens} continuation_len={corpus.gen_tokens} "
            f"windows_per_unit={corpus.windows_per_unit} scan_rows={corpus.scan_rows or 'all'} "
            f"newlines_to_spaces={corpus.newlines_to_spaces} num_prompts={len(prompts)} prompt_seed={g.prompt_seed} "
            + " ".join(f"{k}={v}" for k, v in counts.items())
        ),
        f"{key}/sampling": (
            f"protocol={cfg.protocol} decoders={','.join(g.decoders)} seeds={','.join(map(str, g.seeds))} std=ddof1 "
            f"max_new_tokens={max_new} min_new_tokens={min_new} stop_at_eos={g.stop_at_eos}"
        ),
        f"{key}/mauve": f"protocol={cfg.protocol} " + mauve_settings(m),
        f"{key}/human_mauve": ceiling_note,
        f"{key}/oracle_ppl": f"oracle={cfg.oracle.model} scored=continuation|prompt aggregate=exp(sum_nll/sum_tokens)",
        f"{key}/rouge": rouge_settings(cfg.rouge.use_stemmer),
    }
    if pr is not None:
        params[f"{key}/precision_recall"] = precision_recall.settings(pr)
    label = corpus_label(corpus_name)
    return SectionResult(metrics, params, {f"generations/{label}.json": table},
                         {f"features/{label}.npz": features.to_bytes()})
