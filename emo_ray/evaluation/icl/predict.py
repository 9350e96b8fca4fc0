"""From candidate NLLs to a predicted label (paper 4.2: the label whose filled prompt has the
lowest perplexity), and the label-prior baseline it is compared against."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from emo_ray.evaluation.icl.scorer import CandidateNLL

NORMALIZATIONS = {
    # log perplexity of the whole filled prompt: mean NLL over its predicted tokens.
    "token_mean": lambda s: s.nll_sum / s.n_predicted,
    # OpenICL PPLInferencer's arithmetic (what the paper ran): the same sum divided by the number
    # of tokens *including* the first, unpredicted one. Differs from token_mean only when label
    # words have different token counts.
    "openicl": lambda s: s.nll_sum / s.n_tokens,
    # total NLL: favours short label words.
    "sum": lambda s: s.nll_sum,
}


def get_normalization(name: str):
    try:
        return NORMALIZATIONS[name]
    except KeyError:
        raise ValueError(f"{name!r} is not a normalization; valid: {sorted(NORMALIZATIONS)}") from None


def predict(scores: CandidateNLL, prior: Sequence[float], normalization: str = "token_mean", rtol: float = 1e-9) -> int:
    """Index of the lowest normalised NLL; exact ties (a model without information, e.g. uniform
    logits) go to the label most frequent in the training split, then to the lowest index, so
    that such a model scores exactly the label-prior baseline."""
    s = np.asarray(get_normalization(normalization)(scores), dtype=float)
    if not np.all(np.isfinite(s)):
        raise ValueError(f"non-finite candidate scores {s.tolist()}")
    best = s.min()
    tied = np.flatnonzero(s <= best + rtol * max(abs(best), 1.0))
    return int(max(tied, key=lambda i: (prior[i], -i)))


def prior_label(prior: Sequence[float]) -> int:
    return int(max(range(len(prior)), key=lambda i: (prior[i], -i)))


def prior_baseline(gold: Sequence[int], prior: Sequence[float]) -> float:
    """Accuracy of always answering the most frequent training label."""
    lab = prior_label(prior)
    return float(np.mean([g == lab for g in gold])) if len(gold) else float("nan")
