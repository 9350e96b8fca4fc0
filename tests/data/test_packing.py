import json

import numpy as np
import pytest

from emo_ray.config import DataConfig
from emo_ray.typed_config import default_data_dir
from emo_ray.data import DataError, prepare_blocks, read_documents
from emo_ray.models.tiny import byte_tokenizer

TOK = byte_tokenizer()


def write_jsonl(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def corpus(tmp_path, n=60, words=30):
    rng = np.random.default_rng(0)
    rows = [{"text": " ".join(f"w{rng.integers(1000)}" for _ in range(words))} for _ in range(n)]
    return write_jsonl(tmp_path / "c.jsonl", rows)


def test_malformed_line_names_file_and_line(tmp_path):
    p = write_jsonl(tmp_path / "bad.jsonl", [{"text": "ok"}, "{not json", {"text": "x"}])
    with pytest.raises(DataError, match=r"bad\.jsonl:2: malformed JSON"):
        read_documents(str(p))


def test_missing_text_field_names_line_and_keys(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [{"text": "ok"}, {"body": "no"}])
    with pytest.raises(DataError, match=r"d\.jsonl:2: no text field 'text' \(found \['body'\]\)"):
        read_documents(str(p))


def test_empty_corpus_and_missing_file(tmp_path):
    p = write_jsonl(tmp_path / "e.jsonl", [{"text": "  "}])
    with pytest.raises(DataError, match="corpus is empty"):
        read_documents(str(p))
    with pytest.raises(DataError, match="does not exist"):
        read_documents(str(tmp_path / "nope.jsonl"))


def test_block_larger_than_corpus(tmp_path):
    p = write_jsonl(tmp_path / "s.jsonl", [{"text": "tiny doc"}] * 5)
    with pytest.raises(DataError, match="block_size 4096 is larger than the whole training corpus"):
        prepare_blocks(DataConfig(train=str(p), block_size=4096, validation_fraction=0.0), TOK)


def test_blocks_are_full_and_validation_is_held_out(tmp_path):
    p = corpus(tmp_path)
    packed = prepare_blocks(DataConfig(train=str(p), block_size=32, validation_fraction=0.2, max_validation_blocks=0), TOK)
    assert packed.train.shape[1] == 32 and packed.train.dtype == np.int64
    assert packed.stats["train_tokens"] == packed.train.size
    train_rows = {tuple(r) for r in packed.train}
    assert not train_rows & {tuple(r) for r in packed.validation}


def test_volume_subsets_are_nested_and_seeded(tmp_path):
    p = corpus(tmp_path, n=200)
    small = prepare_blocks(DataConfig(train=str(p), block_size=16, max_train_tokens=160), TOK)
    large = prepare_blocks(DataConfig(train=str(p), block_size=16, max_train_tokens=640), TOK)
    other = prepare_blocks(DataConfig(train=str(p), block_size=16, max_train_tokens=640, seed=1), TOK)
    assert len(small.train) == 10 and len(large.train) == 40
    np.testing.assert_array_equal(large.train[:10], small.train)
    np.testing.assert_array_equal(small.validation, large.validation)  # hold-out independent of volume
    assert not np.array_equal(other.train, large.train)
    with pytest.raises(DataError, match="only yields"):
        prepare_blocks(DataConfig(train=str(p), block_size=16, max_train_tokens=10**9), TOK)


def test_reads_the_shared_wikitext(tmp_path):
    cfg = DataConfig(train=f"{default_data_dir()}/wikitext-2/train_partial.jsonl", block_size=64, max_train_tokens=6400)
    packed = prepare_blocks(cfg, TOK)
    assert packed.train.shape == (100, 64)
    text = TOK.decode(packed.train[0])
    assert sum(c.isalpha() for c in text) > 20
