"""ROUGE-1 and ROUGE-L F1 of each generation against its human continuation (rouge-score,
``split_summaries`` off: it needs an NLTK download), averaged over prompts."""
from __future__ import annotations

import numpy as np

ROUGE_TYPES = ("rouge1", "rougeL")


def rouge_settings(use_stemmer: bool) -> str:
    return f"types={','.join(ROUGE_TYPES)} measure=f1 use_stemmer={use_stemmer} split_summaries=False"


def rouge(generations: list[str], references: list[str], *, use_stemmer: bool = True) -> dict[str, float]:
    """Mean F1 per ROUGE type over the (generation, reference) pairs."""
    from rouge_score import rouge_scorer

    if len(generations) != len(references):
        raise ValueError(f"{len(generations)} generations but {len(references)} references")
    if not generations:
        raise ValueError("no generations to score")
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=use_stemmer, split_summaries=False)
    scores = [scorer.score(ref, gen) for gen, ref in zip(generations, references)]
    return {t: float(np.mean([s[t].fmeasure for s in scores])) for t in ROUGE_TYPES}
