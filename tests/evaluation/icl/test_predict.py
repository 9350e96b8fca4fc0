"""Lowest perplexity wins; exact ties go to the training label prior."""
from __future__ import annotations

import numpy as np
import pytest

from emo_ray.evaluation.icl.predict import predict, prior_baseline
from emo_ray.evaluation.icl.scorer import CandidateNLL


def nll(sums, lens):
    return CandidateNLL(np.array(sums, float), np.array(lens))


def test_lowest_normalised_nll_wins():
    s = nll([10.0, 12.0], [11, 21])  # per predicted token: 1.0 vs 0.6
    assert predict(s, [0.5, 0.5], "token_mean") == 1
    assert predict(s, [0.5, 0.5], "sum") == 0


def test_openicl_divides_by_all_tokens():
    s = nll([9.0, 9.5], [10, 11])  # token_mean: 1.0 vs 0.95; openicl: 0.9 vs 0.8636
    assert predict(s, [0.5, 0.5], "openicl") == 1


def test_ties_go_to_the_prior():
    s = nll([6.0, 6.0, 6.0], [7, 7, 7])
    assert predict(s, [0.2, 0.5, 0.3]) == 1
    assert predict(s, [0.4, 0.2, 0.4]) == 0


def test_non_finite_scores_fail():
    with pytest.raises(ValueError, match="non-finite"):
        predict(nll([np.nan, 1.0], [3, 3]), [0.5, 0.5])
    with pytest.raises(ValueError, match="valid: \\['openicl', 'sum', 'token_mean'\\]"):
        predict(nll([1.0, 1.0], [3, 3]), [0.5, 0.5], "mean")


def test_prior_baseline():
    assert prior_baseline([0, 1, 1, 1], [0.3, 0.7]) == 0.75
