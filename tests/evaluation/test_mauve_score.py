"""MAUVE is high for samples of one distribution and low for different ones (MAUVE* alike; the
frontier integral the other way round); with SmolLM2 mean-pooled features human text scores high
against human text and low against shuffled text."""
from __future__ import annotations

import random

import numpy as np
import pytest

from emo_ray.evaluation.config import MauveConfig
from emo_ray.evaluation.mauve_score import MauveScores, mauve, mauve_scores, mauve_settings
from tests.evaluation.conftest import LOCAL, needs_data, needs_smollm2


def test_same_distribution_high_shifted_low():
    g = np.random.default_rng(0)
    p, q = g.normal(size=(300, 16)), g.normal(size=(300, 16))
    far = g.normal(loc=3.0, size=(300, 16))
    cfg = MauveConfig()
    assert mauve(p, q, cfg) > 0.9
    assert mauve(p, far, cfg) < 0.1


def test_three_scores_in_range_and_ordered():
    g = np.random.default_rng(1)
    p = g.normal(size=(200, 8))
    cfg = MauveConfig()
    same, far = mauve_scores(p, g.normal(size=(200, 8)), cfg), mauve_scores(p, g.normal(loc=3.0, size=(200, 8)), cfg)
    for s in (same, far):
        assert isinstance(s, MauveScores) and all(0 <= v <= 1 for v in s.as_dict().values()), s
    assert same.mauve_star > 0.9 and far.mauve_star < 0.1
    # The frontier integral is a divergence: near 0 for one distribution, near 1 for disjoint ones.
    assert same.frontier_integral < 0.1 < 0.9 < far.frontier_integral
    assert mauve(p, p[::-1], cfg) == mauve_scores(p, p[::-1], cfg).mauve


def test_settings_are_stamped():
    s = mauve_settings(MauveConfig(featurizer="smollm2-135m", pooling="mean"))
    assert "featurizer=smollm2-135m pooling=mean layer=-1" in s and "num_buckets=auto" in s and "scaling_factor=5.0" in s


def test_too_few_texts():
    with pytest.raises(ValueError, match="at least 2 texts"):
        mauve(np.zeros((1, 4)), np.zeros((5, 4)), MauveConfig())


N = 100  # texts per side: enough for MAUVE's n/10 buckets to separate, small for CPU


@pytest.mark.realmodel
@needs_smollm2
@needs_data
def test_human_vs_human_high_human_vs_shuffled_low():
    from emo_ray.evaluation.corpora import get_corpus
    from emo_ray.evaluation.featurize import featurize
    from emo_ray.evaluation.prompts import make_prompts
    from emo_ray.models import load_tokenizer, materialize

    path = materialize("smollm2-135m")
    prompts, _ = make_prompts(get_corpus("wikitext-2"), load_tokenizer(path), num_prompts=2 * N, seed=1)
    texts = [p.prefix + p.reference for p in prompts]
    a, b = texts[:N], texts[N:]
    rng = random.Random(0)
    shuffled = [" ".join(rng.sample(t.split(), len(t.split()))) for t in b]
    cfg = MauveConfig(featurizer="smollm2-135m", pooling="mean", layer=-8)
    feats = featurize(a + b + shuffled, path, pooling="mean", layer=-8, max_tokens=256, batch_size=16, execution=LOCAL)
    fa, fb, fs = feats[:N], feats[N : 2 * N], feats[2 * N :]
    same, shuf = mauve(fa, fb, cfg), mauve(fa, fs, cfg)
    assert same > 0.8, same
    assert shuf < 0.3, shuf


def test_kmeans_seeds_average_the_quantizations():
    """``kmeans_seeds: k`` is the mean of the k single-seed scores (seed, seed + 1, ...), and it
    shrinks the quantization noise: the spread over starting seeds falls."""
    rng = np.random.default_rng(3)
    p, q = rng.normal(size=(120, 6)), rng.normal(0.4, 1.0, size=(120, 6))
    one = [mauve_scores(p, q, MauveConfig(num_buckets=12, seed=s)) for s in (7, 8, 9)]
    avg = mauve_scores(p, q, MauveConfig(num_buckets=12, seed=7, kmeans_seeds=3))
    for name in ("mauve", "mauve_star", "frontier_integral"):
        assert getattr(avg, name) == pytest.approx(np.mean([getattr(s, name) for s in one]))
    singles = [mauve(p, q, MauveConfig(num_buckets=12, seed=s)) for s in range(10, 22)]
    averaged = [mauve(p, q, MauveConfig(num_buckets=12, seed=s, kmeans_seeds=4)) for s in range(10, 58, 4)]
    assert np.std(averaged) < np.std(singles)
    assert "kmeans_seeds=3" in mauve_settings(MauveConfig(kmeans_seeds=3))


def test_faiss_few_points_warning_is_dropped_and_other_stderr_kept(capfd):
    """Auto buckets (n/10 centroids) put 10 points per centroid, below faiss's 39: its C++ k-means
    warns on every redo. Those lines go; anything else written to fd 2 meanwhile stays, in order."""
    import os

    from emo_ray.evaluation.mauve_score import without_faiss_few_points_warning

    rng = np.random.default_rng(0)
    p, q = rng.normal(size=(60, 8)), rng.normal(size=(60, 8))
    with without_faiss_few_points_warning():
        os.write(2, b"first line kept\n")
        os.write(2, b"WARNING clustering 120 points to 12 centroids: please provide at least 468 training points\n")
        os.write(2, b"last line kept\n")
    score = mauve(p, q, MauveConfig(num_buckets=0, kmeans_num_redo=2))
    err = capfd.readouterr().err
    assert 0.0 < score <= 1.0
    assert "please provide at least" not in err
    assert err.index("first line kept") < err.index("last line kept")
