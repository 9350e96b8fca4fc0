"""The features artifact round-trips; the human-vs-human ceiling is high for one distribution and
low for clearly different text; the second set of human windows is disjoint from the first, of the
same size, or skipped with the reason when the corpus is too small."""
from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest

from emo_ray.evaluation.config import MauveConfig
from emo_ray.evaluation.mauve_features import (
    HUMAN_SEEDS, CorpusFeatures, all_metrics, disjoint_windows, human_metrics, sampling_runs, texts_array,
)
from emo_ray.evaluation.mauve_score import mauve_scores
from tests.evaluation.conftest import write_jsonl

N, D = 120, 8


def features(human2_loc: float | None = 0.0, seed: int = 0) -> CorpusFeatures:
    """Gaussian stand-ins: human ~ N(0, 1); the model's two sampling runs of N(0.3, 1);
    the second human set ~ N(human2_loc, 1), or absent."""
    g = np.random.default_rng(seed)
    model = g.normal(loc=0.3, size=(2 * N, D)).astype(np.float32)
    human2 = g.normal(loc=human2_loc, size=(N, D)) if human2_loc is not None else np.zeros((0, D))
    return CorpusFeatures(
        model=model, model_row=np.arange(2 * N), model_seed=np.repeat([3, 7], N),
        model_decoder=texts_array(["ancestral"] * 2 * N),
        human=g.normal(size=(N, D)).astype(np.float32),
        human_prefix=texts_array(f"prefix {i} " for i in range(N)), human_reference=texts_array(f"ref {i}" for i in range(N)),
        human2=human2.astype(np.float32), human2_prefix=texts_array(f"p2 {i}" for i in range(len(human2))),
        human2_reference=texts_array(f"r2 {i}" for i in range(len(human2))),
        featurizer='["tiny-llama", "mean", 64, []]', mauve_config=json.dumps(asdict(MauveConfig(num_buckets=6))),
    )


def test_features_round_trip(tmp_path):
    f = features()
    path = tmp_path / "f.npz"
    path.write_bytes(f.to_bytes())
    back = CorpusFeatures.load(path)
    for k, v in asdict(f).items():
        if isinstance(v, np.ndarray):
            np.testing.assert_array_equal(getattr(back, k), v, err_msg=k)
            assert getattr(back, k).dtype == v.dtype, k
        else:
            assert getattr(back, k) == v, k
    assert back.config() == MauveConfig(num_buckets=6)
    # Identical features give identical scores: the basis of re-scoring from the artifact.
    cfg = back.config()
    assert all_metrics(back, cfg, "gen/x") == all_metrics(f, cfg, "gen/x")


def test_load_rejects_another_npz(tmp_path):
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="not a features artifact"):
        CorpusFeatures.load(tmp_path / "other.npz")


def test_per_run_keys_and_mean_over_seeds():
    f, cfg = features(), MauveConfig(num_buckets=6)
    m = all_metrics(f, cfg, "gen/x")
    assert sampling_runs(f) == [("ancestral", 3), ("ancestral", 7)]
    seeds = [mauve_scores(f.human, f.model[f.model_seed == s], cfg) for s in (3, 7)]
    for name in ("mauve", "mauve_star", "frontier_integral"):
        per = [getattr(s, name) for s in seeds]
        assert [m[f"gen/x/ancestral/seed{s}/{name}"] for s in (3, 7)] == per
        assert m[f"gen/x/ancestral/{name}_mean"] == pytest.approx(np.mean(per))
        assert m[f"gen/x/ancestral/{name}_std"] == pytest.approx(np.std(per, ddof=1))


def test_human_ceiling_high_for_one_distribution_low_for_different_text():
    cfg = MauveConfig(num_buckets=6)
    same, shifted = human_metrics(features(0.0), cfg, "gen/x"), human_metrics(features(3.0), cfg, "gen/x")
    assert same["gen/x/human_mauve"] > 0.9 and shifted["gen/x/human_mauve"] < 0.1
    assert same["gen/x/human_frontier_integral"] < 0.1 < 0.5 < shifted["gen/x/human_frontier_integral"]
    assert set(same) == {f"gen/x/{k}" for k in ("human_mauve", "human_mauve_std", "human_mauve_star", "human_frontier_integral")}
    # The mean over k-means seeds, each scored like a sampling run against the reference windows.
    f = features(0.0)
    per_seed = [mauve_scores(f.human, f.human2, MauveConfig(num_buckets=6, seed=25 + k)).mauve for k in range(HUMAN_SEEDS)]
    assert same["gen/x/human_mauve"] == pytest.approx(np.mean(per_seed))
    f = features(None)  # no second set: the split-half ceiling of the reference windows
    half = [mauve_scores(f.human[0::2], f.human[1::2], MauveConfig(num_buckets=6, seed=25 + k)).mauve for k in range(HUMAN_SEEDS)]
    assert human_metrics(f, cfg, "gen/x")["gen/x/human_mauve"] == pytest.approx(np.mean(half))


def test_second_human_set_is_disjoint_and_the_same_size(tmp_path, tiny):
    from emo_ray.evaluation.corpora import Corpus
    from emo_ray.evaluation.prompts import make_prompts

    _, tok = tiny
    words = "the cat sat on a mat while it rained over hills and rivers".split()
    docs = [{"text": f"doc{i:02d} " + " ".join(words[(i + k) % len(words)] for k in range(60))} for i in range(30)]
    corpus = Corpus(write_jsonl(tmp_path / "c.jsonl", docs), 5, 10)
    prompts, _ = make_prompts(corpus, tok, num_prompts=10, seed=4)
    second, note = disjoint_windows(corpus, tok, prompts, seed=4)
    key = lambda p: (tuple(p.prefix_ids), tuple(p.reference_ids))  # noqa: E731
    assert len(second) == 10 and not {key(p) for p in second} & {key(p) for p in prompts}
    assert "texts_per_side=10" in note
    many, _ = make_prompts(corpus, tok, num_prompts=20, seed=4)
    none, why = disjoint_windows(corpus, tok, many, seed=4)  # 30 windows: 10 left, 20 needed
    assert none == [] and why.startswith("no second set") and "30 windows" in why and "split-half" in why


def test_ceiling_without_a_second_set_is_split_half_of_the_reference_windows():
    """The official protocol scores every window, so nothing is left for a second set: the ceiling
    then compares the reference windows' halves (and still separates same from different text)."""
    from emo_ray.evaluation.config import MauveConfig
    from emo_ray.evaluation.mauve_features import CorpusFeatures, human_metrics, texts_array

    rng = np.random.default_rng(0)
    same = rng.normal(size=(80, 8)).astype(np.float32)
    far = np.concatenate([same[0::2], same[1::2] + 6.0])  # the odd half shifted far away
    empty = np.zeros((0, 8), np.float32)
    cfg = MauveConfig(num_buckets=4)

    def feats(human):
        t = texts_array(["x"] * len(human))
        return CorpusFeatures(model=empty, model_row=np.zeros(0, np.int64), model_seed=np.zeros(0, np.int64),
                              model_decoder=texts_array([]), human=human, human_prefix=t, human_reference=t,
                              human2=empty, human2_prefix=texts_array([]), human2_reference=texts_array([]),
                              featurizer="f", mauve_config="{}")

    high = human_metrics(feats(same), cfg, "k")["k/human_mauve"]
    low = human_metrics(feats(far[np.argsort(np.r_[np.arange(0, 80, 2), np.arange(1, 80, 2)])]), cfg, "k")["k/human_mauve"]
    assert high > 0.8 and low < 0.3
