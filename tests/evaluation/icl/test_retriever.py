"""Top-k retrieval order and fixed k-shot selection."""
from __future__ import annotations

import numpy as np
import pytest

from emo_ray.evaluation.icl.retriever import RETRIEVERS, embed, fixed_shots, resolve_retriever, topk
from tests.evaluation.conftest import needs_minilm


def test_topk_is_most_similar_first():
    pool = np.eye(4, dtype=np.float32)
    q = np.array([[0.1, 0.7, 0.0, 0.5]], dtype=np.float32)
    q /= np.linalg.norm(q)
    assert topk(q, pool, 3).tolist() == [[1, 3, 0]]
    with pytest.raises(ValueError, match="5 demonstrations asked for but the pool has only 4"):
        topk(q, pool, 5)


def test_fixed_shots_by_group():
    train = [{"s": "a"}, {"s": "b"}, {"s": "a"}, {"s": "a"}]
    assert fixed_shots([{"s": "a"}], train, 2, "s") == [[0, 2]]
    with pytest.raises(ValueError, match="s='b' has only 1 training rows"):
        fixed_shots([{"s": "b"}], train, 2, "s")


def test_paper_default_retriever_stays_available():
    assert resolve_retriever("all-mpnet-base-v2") == "sentence-transformers/all-mpnet-base-v2"
    assert "all-minilm-l6-v2" in RETRIEVERS
    assert resolve_retriever("some/hub-id") == "some/hub-id"


@needs_minilm
def test_offline_minilm_retrieves_by_meaning(tmp_path, monkeypatch):
    monkeypatch.setenv("EMO_RAY_CACHE", str(tmp_path))
    pool = ["the stock market fell sharply today", "the team won the football match", "a new smartphone was released"]
    emb = embed(pool, "all-minilm-l6-v2")
    q = embed(["shares dropped on wall street"], "all-minilm-l6-v2")
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    assert topk(q, emb, 1).tolist() == [[0]]
    assert len(list((tmp_path / "embeddings").glob("*.npy"))) == 2  # cached
