from __future__ import annotations

import pytest

from emo_ray.evaluation.rouge import rouge, rouge_settings


def test_identical_and_disjoint():
    assert rouge(["the cat sat"], ["the cat sat"]) == {"rouge1": 1.0, "rougeL": 1.0}
    assert rouge(["dogs bark"], ["the cat sat"]) == {"rouge1": 0.0, "rougeL": 0.0}
    r = rouge(["the cat sat on a mat", "x"], ["the cat sat", "x"])
    assert r["rouge1"] == pytest.approx((2 * 0.5 * 1.0 / 1.5 + 1.0) / 2)


def test_settings_and_errors():
    assert "split_summaries=False" in rouge_settings(True)
    with pytest.raises(ValueError, match="2 generations but 1 references"):
        rouge(["a", "b"], ["a"])
