"""Tokenise and pack in bounded memory, whatever the size of one document.

A fast tokenizer holds about 200 bytes per input character while it encodes (offsets, word
ids, the pre-tokenised string): one 60 MB JSON Lines document peaked at 12.7 GB RSS in data
preparation, for a run that used 8,192 of its tokens (issue 25.6). Here a text longer than
``PIECE_CHARS`` is encoded piece by piece, short texts in batches of at most ``BATCH_CHARS``,
and packing pulls pieces lazily, so it stops at the blocks the run needs.

Pieces are cut just before a space that follows and precedes a non-space character. Byte-level
BPE pre-tokenisers (GPT-2, SmolLM2: a space always starts a new pre-token) and the byte-level
tokenizer of the tests split there anyway, so the tokens equal those of the whole text; a
tokenizer whose merges cross spaces may differ at the cut only, once per ``PIECE_CHARS``
characters. Texts up to ``PIECE_CHARS`` are encoded whole, exactly as before.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

PIECE_CHARS = 1 << 16
"""Longest text encoded in one tokenizer call (~13 MB of tokenizer memory at the rate above)."""
BATCH_CHARS = 1 << 20
"""Short texts are encoded together up to this many characters (and ``BATCH_TEXTS`` texts)."""
BATCH_TEXTS = 256


def pieces(text: str, size: int = PIECE_CHARS) -> Iterator[str]:
    """``text`` in pieces of at most ``size`` characters, each cut before a lone space (see the
    module doc); a stretch without one in its second half is cut at ``size``."""
    start = 0
    while len(text) - start > size:
        cut = min(start + size, len(text) - 2)  # text[cut + 1] exists
        lo = start + size // 2
        while cut > lo and not (text[cut] == " " and not text[cut - 1].isspace() and not text[cut + 1].isspace()):
            cut -= 1
        if cut == lo:
            cut = start + size
        yield text[start:cut]
        start = cut
    yield text[start:]


def _ids(ids) -> np.ndarray:
    return np.asarray(ids, dtype=np.int64)


def encode(texts: Iterable[str], tokenizer) -> Iterator[tuple[int, np.ndarray]]:
    """``(index of the text, token ids)`` in order: one item per short text, one per piece of a
    long one (every text yields at least one item, possibly empty); no special tokens added."""
    batch: list[tuple[int, str]] = []
    chars = 0

    def flush():
        if batch:
            out = tokenizer([t for _, t in batch], add_special_tokens=False)["input_ids"]
            yield from ((i, _ids(ids)) for (i, _), ids in zip(batch, out))
        batch.clear()

    for i, text in enumerate(texts):
        if len(text) > PIECE_CHARS:
            yield from flush()
            chars = 0
            for piece in pieces(text, PIECE_CHARS):
                yield i, _ids(tokenizer([piece], add_special_tokens=False)["input_ids"][0])
            continue
        batch.append((i, text))
        chars += len(text)
        if len(batch) >= BATCH_TEXTS or chars >= BATCH_CHARS:
            yield from flush()
            chars = 0
    yield from flush()


class Packer:
    """Concatenate token pieces and cut ``block_size`` blocks (the remainder is dropped, as in
    the official ``group_texts``); with ``max_blocks`` it reports full as soon as that many exist.
    Memory: the blocks plus one piece."""

    def __init__(self, block_size: int, max_blocks: int = 0, masked: bool = False):
        self.block_size, self.max_blocks, self.masked = block_size, max_blocks, masked
        self.pending: list[np.ndarray] = []
        self.pending_mask: list[np.ndarray] = []
        self.pending_len = 0
        self.blocks: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []
        self.n_blocks = 0

    def add(self, ids: np.ndarray, mask: np.ndarray | None = None) -> bool:
        """Append a piece; True once ``max_blocks`` blocks exist (stop feeding then)."""
        self.pending.append(ids)
        if self.masked:
            self.pending_mask.append(mask)
        self.pending_len += len(ids)
        if self.pending_len >= self.block_size:
            self._cut()
        return bool(self.max_blocks) and self.n_blocks >= self.max_blocks

    def _cut(self) -> None:
        ids = np.concatenate(self.pending)
        k = len(ids) // self.block_size
        if self.max_blocks:
            k = min(k, self.max_blocks - self.n_blocks)
        end = k * self.block_size
        self.blocks.append(ids[:end].reshape(k, self.block_size))
        self.pending, self.pending_len = [ids[end:]], len(ids) - end
        if self.masked:
            mask = np.concatenate(self.pending_mask)
            self.masks.append(mask[:end].reshape(k, self.block_size))
            self.pending_mask = [mask[end:]]
        self.n_blocks += k

    def result(self) -> tuple[np.ndarray, np.ndarray | None]:
        empty = np.zeros((0, self.block_size), dtype=np.int64)
        blocks = np.concatenate(self.blocks) if self.blocks else empty
        if not self.masked:
            return blocks, None
        return blocks, (np.concatenate(self.masks) if self.masks else empty).astype(np.uint8)


def pack(items: Iterable[tuple[int, np.ndarray, np.ndarray | None]], block_size: int, max_blocks: int = 0,
         masked: bool = False) -> tuple[np.ndarray, np.ndarray | None, int]:
    """``(blocks, masks or None, items used)`` from ``(item index, ids, mask)`` pieces in order;
    "used" counts the items (documents, examples) up to the one that completed the last block."""
    packer = Packer(block_size, max_blocks, masked)
    used = 0
    for index, ids, mask in items:
        used = index + 1
        if packer.add(ids, mask):
            break
    blocks, masks = packer.result()
    return blocks, masks, used
