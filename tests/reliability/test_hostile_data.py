"""Bounded memory on hostile data (issue 25.6): one 60 MB JSON Lines line peaked at 12.7 GB RSS
and 75 s in data preparation for a run that used 8,192 of its tokens. A line over the stated
limit (``MAX_LINE_BYTES``, 16 MB) is refused naming ``file:line``; a long document under it is
tokenised in bounded pieces, only as far as the run needs, with the same tokens as a whole-text
encoding. Peak RSS is measured in a child of a small wrapper process (a child forked from this
pytest process would start with, and be charged for, the parent's resident pages)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from emo_ray.config import DataConfig
from emo_ray.data import DataError, bounded, prepare_blocks
from emo_ray.data.sources import MAX_LINE_BYTES, iter_lines
from emo_ray.models.tiny import byte_tokenizer
from tests.conftest import requires_smollm2

ROOT = Path(__file__).resolve().parents[2]
TOK = byte_tokenizer()
GB = 2**30


def one_line_document(path: Path, n_bytes: int) -> Path:
    """A JSON Lines file holding one document of about ``n_bytes``, written in 1 MB chunks (this
    process never holds it)."""
    chunk = " ".join(f"w{i % 1000:03d}" for i in range(2**20 // 5))
    with path.open("w") as f:
        f.write('{"text": "')
        written = 0
        while written < n_bytes:
            f.write(chunk + " ")
            written += len(chunk) + 1
        f.write('end"}\n')
    return path


PREPARE = """
import resource, subprocess, sys
child = '''
import json, sys
from emo_ray.config import DataConfig
from emo_ray.data import DataError, prepare_blocks
from emo_ray.models.tiny import byte_tokenizer
cfg = DataConfig(train=sys.argv[1], validation_fraction=0.0, block_size=256, max_train_tokens=int(sys.argv[2]))
try:
    print(json.dumps(prepare_blocks(cfg, byte_tokenizer(), cache=False).stats))
except DataError as e:
    print(json.dumps({"error": str(e)}))
'''
out = subprocess.run([sys.executable, "-c", child, *sys.argv[1:]], capture_output=True, text=True)
print(out.stdout.strip() or out.stderr.strip()[-2000:])
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)  # Linux: kilobytes
"""


def prepare_in_child(path: Path, max_train_tokens: int) -> tuple[dict, int]:
    """``(stats or {"error": ...}, peak RSS in bytes)`` of ``prepare_blocks`` in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", PREPARE, str(path), str(max_train_tokens)], env=env,
                         capture_output=True, text=True, timeout=600)
    *lines, rss = out.stdout.strip().splitlines()
    return json.loads(lines[-1]), int(rss)


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss in kilobytes is Linux's unit")
def test_a_60_mb_line_is_refused_naming_file_and_line_in_bounded_memory(tmp_path):
    path = tmp_path / "hostile.jsonl"
    path.write_text(json.dumps({"text": "a normal first document"}) + "\n")
    with path.open("a") as f:
        f.write(one_line_document(tmp_path / "big.jsonl", 60 * 2**20).read_text())
    result, peak = prepare_in_child(path, 8192)
    assert result.get("error", "").startswith(f"{path}:2: line longer than 16 MB"), result
    assert peak < 1 * GB, f"peak RSS {peak / GB:.2f} GB"


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss in kilobytes is Linux's unit")
def test_a_long_document_under_the_limit_is_prepared_in_bounded_memory(tmp_path):
    path = one_line_document(tmp_path / "long.jsonl", 15 * 2**20)
    stats, peak = prepare_in_child(path, 8192)
    assert stats["train_tokens"] == 8192 and stats["train_documents_used"] == 1, stats
    assert peak < 1 * GB, f"peak RSS {peak / GB:.2f} GB"


def test_the_line_limit_names_file_and_line_and_admits_a_line_of_exactly_the_limit(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes(b"short\n" + b"x" * 100 + b"\n" + b"y" * 101 + b"\nlast\n")
    lines = iter_lines(path, max_bytes=100)
    assert [next(lines)[1], next(lines)[1]] == ["short\n", "x" * 100 + "\n"]
    with pytest.raises(DataError, match=r"t\.txt:3: line longer than"):
        next(lines)
    assert MAX_LINE_BYTES == 16 * 2**20  # the documented limit (docs/reliability.md)


def test_pieces_cut_only_before_a_lone_space_and_rejoin_to_the_text():
    text = "alpha  beta gamma\tdelta epsilon " * 50
    parts = list(bounded.pieces(text, size=64))
    assert "".join(parts) == text and all(len(p) <= 64 for p in parts) and len(parts) > 1
    for p in parts[1:]:
        assert p[0] == " " and not p[1].isspace()
    blob = "x" * 200  # no space at all: cut at the size
    assert [len(p) for p in bounded.pieces(blob, size=64)] == [64, 64, 64, 8]


def test_piecewise_encoding_equals_whole_text_encoding(monkeypatch):
    monkeypatch.setattr(bounded, "PIECE_CHARS", 50)  # force pieces on short texts
    docs = ["one two three " * 20, "short", "", "x" * 130, "four  five\nsix " * 9]
    got = {}
    for i, ids in bounded.encode(docs, TOK):
        got.setdefault(i, []).extend(ids.tolist())
    assert got == {i: TOK(d, add_special_tokens=False)["input_ids"] for i, d in enumerate(docs)}


def test_packing_with_pieces_equals_packing_whole_documents(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    rows = [{"text": " ".join(f"w{rng.integers(1000)}" for _ in range(rng.integers(5, 400)))} for _ in range(40)]
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    cfg = DataConfig(train=str(path), validation_fraction=0.1, block_size=37, max_train_tokens=37 * 60)
    whole = prepare_blocks(cfg, TOK, cache=False)
    monkeypatch.setattr(bounded, "PIECE_CHARS", 64)
    monkeypatch.setattr(bounded, "BATCH_TEXTS", 3)
    cut = prepare_blocks(cfg, TOK, cache=False)
    assert np.array_equal(whole.train, cut.train) and np.array_equal(whole.validation, cut.validation)
    assert whole.stats == cut.stats and whole.stats["train_blocks"] == 60


def test_only_the_pieces_a_small_volume_needs_are_tokenised(tmp_path, monkeypatch):
    calls = []
    real = bounded._ids
    monkeypatch.setattr(bounded, "_ids", lambda ids: calls.append(len(ids)) or real(ids))
    path = one_line_document(tmp_path / "long.jsonl", 4 * 2**20)
    packed = prepare_blocks(DataConfig(train=str(path), validation_fraction=0.0, block_size=256,
                                       max_train_tokens=8192), TOK, cache=False)
    assert packed.train.size == 8192 and sum(calls) < 8192 + bounded.PIECE_CHARS


@requires_smollm2
def test_piecewise_encoding_is_exact_for_a_real_bpe_tokenizer():
    from emo_ray.models import load_tokenizer

    tok = load_tokenizer("smollm2-135m")
    line = "The tower is 324 metres ( 1 @,@ 063 ft ) tall , about the same height as an 81 @-@ storey building .\n"
    text = "".join(f" = = Section {i} = = \n\n {line}  {line}\t{i} don't ' s" for i in range(2000))
    ids = np.concatenate([i for _, i in bounded.encode([text], tok)]).tolist()
    assert len(text) > 3 * bounded.PIECE_CHARS and ids == tok(text, add_special_tokens=False)["input_ids"]
