"""Oracle NLL of a continuation given its prompt, against a naive per-text reference."""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from emo_ray.evaluation.oracle_ppl import ContinuationNLL, corpus_perplexity


def test_matches_naive_reference(tiny_path, tiny):
    model, tok = tiny
    batch = pd.DataFrame({"prefix": ["Hello there", "A"], "continuation": [" general Kenobi", " longer continuation here"]})
    out = ContinuationNLL(tiny_path, threads=1)(batch)
    for (_, row), nll, n in zip(batch.iterrows(), out["nll_sum"], out["n_tokens"]):
        p, c = tok(row["prefix"])["input_ids"], tok(row["continuation"], add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([p + c])).logits[0].double(), -1)
        ref = -sum(float(logp[len(p) - 1 + k, t]) for k, t in enumerate(c))
        assert n == len(c)
        assert math.isclose(nll, ref, rel_tol=1e-5)


def test_corpus_perplexity():
    assert math.isclose(corpus_perplexity([2.0, 4.0], [2, 4]), math.e)
    with pytest.raises(ValueError, match="no tokens"):
        corpus_perplexity([], [])
