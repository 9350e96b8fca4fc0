"""Tokenise, pack into fixed blocks, hold out validation, and take seeded nested subsets.

Packing follows the official scripts (run_clm ``group_texts``): documents are tokenised,
joined with EOS, and cut into ``block_size`` blocks; the remainder is dropped.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emo_ray.config import DataConfig
from emo_ray.data.sources import DataError, read_documents


@dataclass
class PackedData:
    train: np.ndarray  # (n_train_blocks, block_size) int64
    validation: np.ndarray  # (n_val_blocks, block_size) int64
    stats: dict


def _pack(token_lists, block_size: int, max_blocks: int = 0) -> tuple[np.ndarray, int]:
    """Concatenate and cut; stops as soon as ``max_blocks`` blocks exist (0 = no limit)."""
    buf: list[int] = []
    blocks: list[np.ndarray] = []
    used = 0
    for ids in token_lists:
        buf.extend(ids)
        used += 1
        while len(buf) >= block_size:
            blocks.append(np.asarray(buf[:block_size], dtype=np.int64))
            buf = buf[block_size:]
            if max_blocks and len(blocks) >= max_blocks:
                return np.stack(blocks), used
    if not blocks:
        return np.zeros((0, block_size), dtype=np.int64), used
    return np.stack(blocks), used


def _tokenize_stream(docs: list[str], tokenizer, batch: int = 256):
    """Yield token ids per document (EOS appended) lazily, so a small data volume only
    tokenises the documents it needs."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise DataError("the tokenizer has no EOS token to separate documents")
    for i in range(0, len(docs), batch):
        for ids in tokenizer(docs[i : i + batch], add_special_tokens=False)["input_ids"]:
            yield list(ids) + [eos]


def prepare_blocks(cfg: DataConfig, tokenizer) -> PackedData:
    """Documents -> seeded order -> validation hold-out -> volume subset -> packed blocks.

    The order depends only on ``cfg.seed`` and the corpus, so the training subset for a smaller
    ``max_train_tokens`` / ``max_train_documents`` is a prefix of the one for a larger value.
    """
    docs = read_documents(cfg.train, cfg.text_field)
    order = np.random.default_rng(cfg.seed).permutation(len(docs))
    docs = [docs[i] for i in order]
    if cfg.validation:
        val_docs = read_documents(cfg.validation, cfg.text_field)
    elif cfg.validation_fraction > 0:
        n_val = max(1, int(round(cfg.validation_fraction * len(docs))))
        if n_val >= len(docs):
            raise DataError(f"{cfg.train}: {len(docs)} document(s) are too few to hold out a validation split")
        val_docs, docs = docs[:n_val], docs[n_val:]
    else:
        val_docs = []
    if cfg.max_train_documents:
        docs = docs[: cfg.max_train_documents]
    max_blocks = -(-cfg.max_train_tokens // cfg.block_size) if cfg.max_train_tokens else 0
    train, used_docs = _pack(_tokenize_stream(docs, tokenizer), cfg.block_size, max_blocks)
    if len(train) == 0:
        raise DataError(
            f"block_size {cfg.block_size} is larger than the whole training corpus "
            f"({len(docs)} documents from {cfg.train}): no training block can be formed"
        )
    if cfg.max_train_tokens and len(train) < max_blocks:
        raise DataError(
            f"data.max_train_tokens={cfg.max_train_tokens} asks for {max_blocks} blocks but "
            f"{cfg.train} only yields {len(train)} blocks of {cfg.block_size} tokens"
        )
    val, _ = _pack(_tokenize_stream(val_docs, tokenizer), cfg.block_size, cfg.max_validation_blocks)
    if val_docs and len(val) == 0:
        raise DataError(f"block_size {cfg.block_size} is larger than the whole validation split: no validation block")
    stats = {
        "train_blocks": int(len(train)),
        "train_tokens": int(train.size),
        "train_documents_used": int(used_docs),
        "validation_blocks": int(len(val)),
        "validation_tokens": int(val.size),
    }
    return PackedData(train, val, stats)
