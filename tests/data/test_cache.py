"""On-disk caches that stop repeated work: packed corpora (keyed by tokenizer content, document
digest and packing parameters) and ICL retriever embeddings (keyed by retriever and texts).
A second call hits (the tokenizer / encoder is not called), changed data misses, writes are
atomic (unique temporary file, then ``os.replace``)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from emo_ray.config import DataConfig
from emo_ray import storage
from emo_ray.data.packing import prepare_blocks, tokenizer_digest
from emo_ray.models.tiny import byte_tokenizer


@pytest.fixture(autouse=True)
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EMO_RAY_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


class Counting:
    """Delegates to a real tokenizer and counts the tokenising calls."""

    def __init__(self, tok):
        self.tok, self.calls = tok, 0

    def __call__(self, *a, **k):
        self.calls += 1
        return self.tok(*a, **k)

    def __getattr__(self, name):
        return getattr(self.tok, name)


def corpus(path, n=40, seed=0):
    rng = np.random.default_rng(seed)
    rows = [{"text": " ".join(f"w{rng.integers(1000)}" for _ in range(25))} for _ in range(n)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_second_prepare_skips_tokenisation_and_returns_the_same_blocks(tmp_path, tmp_cache):
    cfg = DataConfig(train=str(corpus(tmp_path / "c.jsonl")), block_size=32, validation_fraction=0.1)
    tok = Counting(byte_tokenizer())
    first = prepare_blocks(cfg, tok)
    assert tok.calls > 0 and first.cache == "miss"
    tok.calls = 0
    second = prepare_blocks(cfg, tok)
    assert tok.calls == 0 and second.cache == "hit"
    np.testing.assert_array_equal(first.train, second.train)
    np.testing.assert_array_equal(first.validation, second.validation)
    assert first.stats == second.stats
    assert not list((tmp_cache / "packed").glob("*.partial"))  # nothing left half-written
    # without the cache: the same blocks, tokenised again
    tok.calls = 0
    plain = prepare_blocks(cfg, tok, cache=False)
    assert tok.calls > 0 and plain.cache == ""
    np.testing.assert_array_equal(plain.train, first.train)


def test_changed_data_parameters_or_tokenizer_miss(tmp_path):
    path = corpus(tmp_path / "c.jsonl")
    cfg = DataConfig(train=str(path), block_size=32, validation_fraction=0.1)
    tok = Counting(byte_tokenizer())
    prepare_blocks(cfg, tok)
    assert prepare_blocks(DataConfig(train=str(path), block_size=16, validation_fraction=0.1), tok).cache == "miss"
    assert prepare_blocks(DataConfig(train=str(path), block_size=32, validation_fraction=0.1, seed=7), tok).cache == "miss"
    corpus(path, seed=1)  # same file name, new content
    assert prepare_blocks(cfg, tok).cache == "miss"
    other = byte_tokenizer()
    other.eos_token = "a"  # a different tokenizer (its EOS id) packs differently
    assert tokenizer_digest(other) != tokenizer_digest(byte_tokenizer())
    assert tokenizer_digest(byte_tokenizer()) == tokenizer_digest(Counting(byte_tokenizer()))


def test_write_is_atomic(tmp_path, tmp_cache, monkeypatch):
    cfg = DataConfig(train=str(corpus(tmp_path / "c.jsonl")), block_size=32, validation_fraction=0.1)
    moves = []
    real = os.replace

    def spy(src, dst):
        assert os.path.getsize(src) > 0  # complete before it appears under its name
        assert moves or not os.path.exists(dst)
        moves.append((str(src), str(dst)))
        real(src, dst)

    monkeypatch.setattr(storage.os, "replace", spy)  # where the atomic write happens
    prepare_blocks(cfg, byte_tokenizer())
    assert len(moves) == 1 and moves[0][0].endswith(".partial") and moves[0][1].endswith(".npz")
    assert os.path.dirname(moves[0][0]) == os.path.dirname(moves[0][1])  # same filesystem: atomic
    # a damaged entry is recomputed, not trusted
    (path,) = (tmp_cache / "packed").glob("*.npz")
    path.write_bytes(b"garbage")
    again = prepare_blocks(cfg, byte_tokenizer())
    assert again.cache == "miss" and len(again.train) > 0 and len(moves) == 2


def test_retriever_embeddings_cached_by_retriever_and_texts(monkeypatch, tmp_cache):
    from emo_ray.evaluation.icl import retriever

    calls = []

    def fake_encode(texts, ref, batch_size):
        calls.append(len(texts))
        rng = np.random.default_rng(len(texts))
        e = rng.normal(size=(len(texts), 8)).astype(np.float32)
        return e / np.linalg.norm(e, axis=1, keepdims=True)

    monkeypatch.setattr(retriever, "_encode", fake_encode)
    texts = ["a great film", "dull", "fine"]
    first = retriever.embed(texts, "some/retriever")
    second = retriever.embed(texts, "some/retriever")
    assert calls == [3]  # the second call did not encode
    np.testing.assert_array_equal(first, second)
    retriever.embed(texts + ["new row"], "some/retriever")  # changed data
    retriever.embed(texts, "other/retriever")  # changed retriever
    assert calls == [3, 4, 3]
    assert not list((tmp_cache / "embeddings").glob("*.partial"))
    assert len(list((tmp_cache / "embeddings").glob("*.npy"))) == 3
