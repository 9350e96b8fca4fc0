"""Precision and recall of a model Q against the data distribution P through a surrogate
(EMO, Ren et al., ICLR 2024, arXiv 2310.04691, section 4 and Figure 2).

* ``recall_ce`` = forward cross-entropy ``E_{x~P}[-log Q(x)]``: the human continuations of the
  generation prompts scored by the evaluated model. Low = Q covers the data (recall-oriented).
* ``precision_ce`` = reverse cross-entropy ``E_{x~Q}[-log P_s(x)]``: the model's sampled
  continuations scored by a surrogate ``P_s`` of the data distribution (a larger / oracle model).
  Low = Q's samples look like data to the surrogate (precision-oriented).

Both are token-weighted mean NLLs (``sum NLL / sum tokens``, nats per token), each continuation
conditioned on the same prompt the generation section samples from, and both are computed by
``oracle_ppl.score_continuations`` (``ContinuationNLL`` on Ray Data), the oracle's own scorer.
``recall_ce`` involves no sampling, so it is one number per corpus; ``precision_ce`` is per
decoder and seed, reported as mean and std over seeds like every other generation score. When
the surrogate is the oracle, ``precision_ce`` reuses the oracle's NLLs: it is exactly
``log(oracle_ppl)`` of the same seed. ``recall_ce`` is in the evaluated model's tokens, so it
compares models that share a tokenizer (the objectives of one sweep); ``precision_ce`` is in the
surrogate's tokens, comparable across any models.

The cross-run plot (precision_ce against recall_ce, one point per run) is analysis across runs
and lives in ``emo_ray.report.precision_recall``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from emo_ray.evaluation.config import EvalConfig
from emo_ray.evaluation.oracle_ppl import mean_token_nll, score_continuations
from emo_ray.tracking import keys

PRECISION = "precision_ce"
RECALL = "recall_ce"


def recall_metric(corpus: str) -> str:
    """The MLflow name of a corpus's recall_ce: ``eval/gen/<corpus>/recall_ce``."""
    return keys.eval_name(keys.gen_corpus_key(corpus, RECALL))


def parse_precision_metric(name: str) -> tuple[str, str] | None:
    """``(corpus, decoder)`` of an MLflow name ``eval/gen/<corpus>/<decoder>/precision_ce_mean``,
    else None."""
    k = keys.parse_gen_stat_key(name)
    return (k.corpus, k.decoder) if k and k.metric == PRECISION and k.stat == "mean" else None


def surrogate_name(cfg: EvalConfig) -> str:
    """``generation.surrogate``, or the oracle model when it is empty."""
    return cfg.generation.surrogate or cfg.oracle.model


@dataclass
class CorpusScores:
    recall_ce: float
    """Mean token NLL of the human continuations under the evaluated model."""
    human_tokens: int
    nll_columns: tuple[str, str]
    """Columns of the generation table holding each generation's surrogate NLL sum and token count."""
    reused_oracle: bool
    surrogate: str


def score_corpus(model_path: str, prompts, table: pd.DataFrame, ok: pd.DataFrame, cfg: EvalConfig,
                 oracle_path: str) -> CorpusScores:
    """Recall (human continuations, evaluated model) for the corpus, and the surrogate NLL of every
    non-empty generation (``ok``, rows of ``table``) in ``table``'s columns (the oracle's columns
    when the surrogate is the oracle: nothing is scored twice)."""
    from emo_ray.models import materialize

    ex, bs = cfg.execution, cfg.oracle.batch_size
    human = score_continuations([{"prefix": p.prefix, "continuation": p.reference} for p in prompts], model_path,
                                execution=ex, batch_size=bs)
    sums, toks = [r["nll_sum"] for r in human], [r["n_tokens"] for r in human]
    name = surrogate_name(cfg)
    path = materialize(name)
    if path == oracle_path:
        return CorpusScores(mean_token_nll(sums, toks), int(np.sum(toks)), ("oracle_nll_sum", "oracle_tokens"), True, name)
    rows = [{"prefix": a, "continuation": b, "idx": i} for i, a, b in zip(ok.index, ok["prefix"], ok["generation"])]
    scored = {r["idx"]: (r["nll_sum"], r["n_tokens"]) for r in score_continuations(rows, path, execution=ex, batch_size=bs)}
    table["surrogate_nll_sum"] = [scored.get(i, (np.nan, 0))[0] for i in table.index]
    table["surrogate_tokens"] = [scored.get(i, (np.nan, 0))[1] for i in table.index]
    return CorpusScores(mean_token_nll(sums, toks), int(np.sum(toks)), ("surrogate_nll_sum", "surrogate_tokens"), False, name)


def precision_ce(good: pd.DataFrame, scores: CorpusScores) -> float:
    """Mean token NLL of one seed's non-empty generations under the surrogate."""
    return mean_token_nll(good[scores.nll_columns[0]], good[scores.nll_columns[1]])


def settings(scores: CorpusScores) -> str:
    return (f"surrogate={scores.surrogate} reused_oracle_nll={str(scores.reused_oracle).lower()} "
            f"recall_ce=human continuation|prompt under the evaluated model "
            f"precision_ce=non-empty generations|prompt under the surrogate "
            f"aggregate=sum_nll/sum_tokens (nats/token) human_tokens={scores.human_tokens}")
