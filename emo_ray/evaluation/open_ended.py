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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

import emo_ray.evaluation.mauve_features as mauve_features
import emo_ray.evaluation.precision_recall as precision_recall
from emo_ray.evaluation.config import EvalConfig
from emo_ray.evaluation.corpora import Corpus, corpus_label, get_corpus
from emo_ray.evaluation.featurize import featurize, featurizer_identity, resolved_dtype
from emo_ray.evaluation.mauve_features import CorpusFeatures, mean_std
from emo_ray.evaluation.mauve_score import mauve_settings
from emo_ray.evaluation.oracle_ppl import corpus_perplexity, score_continuations
from emo_ray.evaluation.prompts import make_prompts
from emo_ray.evaluation.rouge import rouge, rouge_settings
from emo_ray.inference.executor import map_rows
from emo_ray.inference.sampler import Sampler
from emo_ray.tracking import keys


@dataclass
class SectionResult:
    metrics: dict[str, float]
    params: dict[str, str]
    tables: dict[str, pd.DataFrame]
    files: dict[str, bytes] = field(default_factory=dict)
    """Other artifacts by MLflow artifact path (``features/<corpus>.npz``)."""


@dataclass
class Samples:
    """The sampling phase of one corpus: its prompts, what cutting them dropped, and one table row
    per (decoder, seed, prompt) with the generation, its length and whether it is empty."""
    prompts: list
    counts: dict
    table: pd.DataFrame
    ok: pd.DataFrame
    """The non-empty generations (a copy of those rows as sampled), the only ones scored."""
    max_new: int
    min_new: int


@dataclass
class Features:
    """MAUVE features of the human side, the generations and the disjoint human-vs-human windows."""
    path: str
    human: np.ndarray
    model: np.ndarray | None
    human2_prompts: list
    human2: np.ndarray
    ceiling_note: str


def evaluate_corpus(model_path: str, corpus_name: str, cfg: EvalConfig) -> SectionResult:
    """Sample, featurize, score with the oracle (and the precision-recall surrogate), then the
    per-seed scores and their mean / std; ``time/gen/<corpus>/*_s`` times each phase."""
    t0 = time.perf_counter()
    corpus, key, times = get_corpus(corpus_name), keys.gen_section(corpus_label(corpus_name)), {}
    with _timed(times, "sample_s"):
        samples = sample_continuations(model_path, corpus, cfg)
    with _timed(times, "featurize_s"):
        feats = featurize_sides(model_path, corpus, samples, cfg)
    oracle_path, human_nll = None, None
    if cfg.oracle.enabled:
        with _timed(times, "oracle_s"):
            oracle_path, human_nll = oracle_scores(samples, cfg)
    else:
        samples.table["oracle_nll_sum"], samples.table["oracle_tokens"] = np.nan, 0
    pr = None
    with _timed(times, "precision_recall_s"):
        if cfg.generation.precision_recall:
            pr = precision_recall.score_corpus(model_path, samples.prompts, samples.table, samples.ok, cfg, oracle_path)
    metrics: dict[str, float] = {keys.section_key(key, "n_prompts"): len(samples.prompts)}
    if human_nll is not None:
        metrics[keys.section_key(key, "oracle_ppl_human")] = corpus_perplexity(*zip(*human_nll))
    if pr is not None:
        metrics[keys.section_key(key, precision_recall.RECALL)] = pr.recall_ce  # no sampling involved: one number, no seed std
    metrics.update(seed_scores(corpus_name, key, samples.table, cfg, pr))
    # MAUVE, MAUVE* and frontier integral per sampling run, and the ceiling, from the features
    # exactly as logged: ``emo-ray rescore`` under unchanged settings reproduces these numbers.
    m = cfg.mauve
    features = CorpusFeatures.of(samples.ok, feats.model, samples.prompts, feats.human, feats.human2_prompts,
                                 feats.human2, m, featurizer_identity(feats.path, m.pooling, m.max_tokens, m.layer,
                                                                      resolved_dtype(cfg.execution)))
    with _timed(times, "mauve_s"):
        metrics.update(mauve_features.all_metrics(features, m, key))
    times["total_s"] = time.perf_counter() - t0
    order = ["mauve_s", "sample_s", "featurize_s", "total_s"] + ["oracle_s"] * cfg.oracle.enabled + (
        ["precision_recall_s"] if pr is not None else [])
    metrics.update({keys.time_key(key, name): times[name] for name in order})
    label = corpus_label(corpus_name)
    return SectionResult(metrics, section_params(key, corpus, samples, feats, cfg, pr),
                         {f"generations/{label}.json": samples.table}, {f"features/{label}.npz": features.to_bytes()})


@contextmanager
def _timed(times: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    times[name] = time.perf_counter() - start


def sample_continuations(model_path: str, corpus: Corpus, cfg: EvalConfig) -> Samples:
    """The seeded prompts of ``corpus`` and every decoder x seed x prompt sample of the model."""
    from emo_ray.models import load_tokenizer

    g = cfg.generation
    prompts, counts = make_prompts(corpus, load_tokenizer(model_path), num_prompts=g.num_prompts, seed=g.prompt_seed,
                                   window_unit=g.window_unit)
    rows = [
        {"prompt_id": p.prompt_id, "seed": s, "decoder": d, "prefix_ids": p.prefix_ids}
        for d in g.decoders for s in g.seeds for p in prompts
    ]
    if g.window_unit == "words":  # a prompt's seeds side by side: longer equal-length runs per sampling batch
        rows.sort(key=lambda r: (g.decoders.index(r["decoder"]), r["prompt_id"]))
    max_new, min_new = corpus.gen_tokens + g.extra_tokens, 0 if g.stop_at_eos else corpus.gen_tokens
    gens = map_rows(rows, Sampler, {"model_path": model_path, "gen_tokens": max_new, "min_tokens": min_new,
                                    "pad_prefixes": g.pad_prefixes},
                    execution=cfg.execution, batch_size=g.batch_size)
    table = pd.DataFrame(gens).drop(columns=["prefix_ids", "gen_ids"])
    table["prefix"] = [prompts[i].prefix for i in table["prompt_id"]]
    table["reference"] = [prompts[i].reference for i in table["prompt_id"]]
    table["empty"] = [not t.strip() for t in table["generation"]]
    table["n_gen_tokens"] = [len(r["gen_ids"]) for r in gens]
    return Samples(prompts, counts, table, table[~table["empty"]], max_new, min_new)


def featurize_sides(model_path: str, corpus: Corpus, samples: Samples, cfg: EvalConfig) -> Features:
    """Featurize the human side once (cached across runs), every non-empty generation, and the
    human-vs-human ceiling's second, disjoint set of as many windows (cached like the first)."""
    from emo_ray.models import load_tokenizer, materialize

    m, g, ok = cfg.mauve, cfg.generation, samples.ok

    def side_text(prefix: str, cont: str) -> str:
        return prefix + cont if m.include_prefix else cont

    path = materialize(m.featurizer)
    fkw = {"pooling": m.pooling, "layer": m.layer, "max_tokens": m.max_tokens, "batch_size": m.batch_size,
           "execution": cfg.execution}
    human = featurize([side_text(p.prefix, p.reference) for p in samples.prompts], path, cache=m.cache, **fkw)
    model = featurize([side_text(a, b) for a, b in zip(ok["prefix"], ok["generation"])], path, **fkw) if len(ok) else None
    human2_prompts, note = mauve_features.disjoint_windows(corpus, load_tokenizer(model_path), samples.prompts,
                                                           seed=g.prompt_seed, window_unit=g.window_unit)
    human2 = (featurize([side_text(p.prefix, p.reference) for p in human2_prompts], path, cache=m.cache, **fkw)
              if human2_prompts else np.zeros((0, human.shape[1]), np.float32))
    return Features(path, human, model, human2_prompts, human2, note)


def oracle_scores(samples: Samples, cfg: EvalConfig) -> tuple[str, list[tuple[float, int]]]:
    """Oracle NLL of every non-empty generation (into ``samples.table``: ``oracle_nll_sum``,
    ``oracle_tokens``, NaN / 0 for the empty ones) and of the human continuations (returned)."""
    from emo_ray.models import materialize

    ok, table = samples.ok, samples.table
    rows = [{"prefix": a, "continuation": b, "kind": "model", "idx": i} for i, a, b in zip(ok.index, ok["prefix"], ok["generation"])]
    rows += [{"prefix": p.prefix, "continuation": p.reference, "kind": "human", "idx": p.prompt_id} for p in samples.prompts]
    oracle_path = materialize(cfg.oracle.model)
    scored = score_continuations(rows, oracle_path, execution=cfg.execution, batch_size=cfg.oracle.batch_size,
                                 fp32_head=cfg.oracle.fp32_head)
    model_nll = {r["idx"]: (r["nll_sum"], r["n_tokens"]) for r in scored if r["kind"] == "model"}
    table["oracle_nll_sum"] = [model_nll.get(i, (np.nan, 0))[0] for i in table.index]
    table["oracle_tokens"] = [model_nll.get(i, (np.nan, 0))[1] for i in table.index]
    return oracle_path, [(r["nll_sum"], r["n_tokens"]) for r in scored if r["kind"] == "human"]


def seed_scores(corpus_name: str, key: str, table: pd.DataFrame, cfg: EvalConfig, pr) -> dict[str, float]:
    """Oracle perplexity, ROUGE-1/L, empty count, length (and reverse cross-entropy) of each
    decoder and sampling seed, then their mean and std over the seeds. A seed with fewer than two
    non-empty generations fails loudly: its scores would mean nothing."""
    metrics: dict[str, float] = {}
    for dec in cfg.generation.decoders:
        per_seed: dict[str, list[float]] = {"rouge1": [], "rougeL": [], "n_empty": [], "gen_tokens": []}
        if cfg.oracle.enabled:
            per_seed["oracle_ppl"] = []
        if pr is not None:
            per_seed[precision_recall.PRECISION] = []
        for s in cfg.generation.seeds:
            sel = table[(table["decoder"] == dec) & (table["seed"] == s)]
            good = sel[~sel["empty"]]
            if len(good) < 2:
                raise ValueError(f"{corpus_name} decoder={dec} seed={s}: {len(good)} non-empty generations of {len(sel)}")
            r = rouge(list(good["generation"]), list(good["reference"]), use_stemmer=cfg.rouge.use_stemmer)
            vals = {
                "rouge1": r["rouge1"],
                "rougeL": r["rougeL"],
                "n_empty": float(sel["empty"].sum()),
                "gen_tokens": float(sel["n_gen_tokens"].mean()),
            }
            if cfg.oracle.enabled:
                vals["oracle_ppl"] = corpus_perplexity(good["oracle_nll_sum"], good["oracle_tokens"])
            if pr is not None:
                vals[precision_recall.PRECISION] = precision_recall.precision_ce(good, pr)
            for name, v in vals.items():
                per_seed[name].append(v)
                metrics[keys.seed_key(key, dec, s, name)] = v
        for name, vs in per_seed.items():
            mu, sd = mean_std(vs)
            metrics[keys.stat_key(key, dec, name, "mean")] = mu
            metrics[keys.stat_key(key, dec, name, "std")] = sd
    return metrics


def section_params(key: str, corpus: Corpus, samples: Samples, feats: Features, cfg: EvalConfig, pr) -> dict[str, str]:
    """How the prompts were cut, sampled and scored, one MLflow param per step."""
    g = cfg.generation
    params = {
        keys.section_key(key, "prompts"): (
            f"protocol={cfg.protocol} window_unit={g.window_unit} source={corpus.source} unit={corpus.unit} "
            f"prefix_len={corpus.prefix_tokens} continuation_len={corpus.gen_tokens} "
            f"windows_per_unit={corpus.windows_per_unit} scan_rows={corpus.scan_rows or 'all'} "
            f"newlines_to_spaces={corpus.newlines_to_spaces} num_prompts={len(samples.prompts)} prompt_seed={g.prompt_seed} "
            + " ".join(f"{k}={v}" for k, v in samples.counts.items())
        ),
        keys.section_key(key, "sampling"): (
            f"protocol={cfg.protocol} decoders={','.join(g.decoders)} seeds={','.join(map(str, g.seeds))} std=ddof1 "
            f"max_new_tokens={samples.max_new} min_new_tokens={samples.min_new} stop_at_eos={g.stop_at_eos}"
        ),
        keys.section_key(key, "mauve"): f"protocol={cfg.protocol} " + mauve_settings(cfg.mauve),
        keys.section_key(key, "human_mauve"): feats.ceiling_note,
        keys.section_key(key, "oracle_ppl"): (f"oracle={cfg.oracle.model} scored=continuation|prompt "
                                              "aggregate=exp(sum_nll/sum_tokens)" if cfg.oracle.enabled else "off"),
        keys.section_key(key, "rouge"): rouge_settings(cfg.rouge.use_stemmer),
    }
    if pr is not None:
        params[keys.section_key(key, "precision_recall")] = precision_recall.settings(pr)
    return params
