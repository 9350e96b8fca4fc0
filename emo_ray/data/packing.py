"""Tokenise, pack into fixed blocks, hold out validation, and take seeded nested subsets.

Packing follows the official scripts (run_clm ``group_texts``): documents are tokenised,
joined with EOS, and cut into ``block_size`` blocks; the remainder is dropped.

The packed result is cached on disk (``$EMO_RAY_CACHE/packed``, default ``~/.cache/emo_ray``),
keyed by the tokenizer's identity (its full serialisation, not its name), the digest of the
documents read (so an edited file misses) and every packing parameter: a sweep tokenises its
corpus once, not in every trial. Entries are written to a unique temporary file and moved in
place with ``os.replace``, so trials packing the same corpus at once never see a partial file.

``data.format=instruction`` (prompt/response rows, paper appendix C) packs the same way, with a
parallel ``loss_mask`` per block: 1 where the token is a trained target (response and EOS), 0 on
prompt tokens. Examples are joined as they are (each ends with its EOS), so every token keeps its
own example's mask across block boundaries; the worker turns the mask into labels with
``IGNORE_INDEX`` on the prompt. Its cache entries are keyed by the format too, so a text and an
instruction packing of the same file never share an entry (the text keys are those of before).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from emo_ray.config import DataConfig
import emo_ray.data.bounded as bounded
from emo_ray.data.sources import DataError, Example, InstructionFields, read_documents, read_examples


@dataclass
class PackedData:
    train: np.ndarray  # (n_train_blocks, block_size) int64
    validation: np.ndarray  # (n_val_blocks, block_size) int64
    stats: dict
    cache: str = ""  # 'hit' | 'miss' with the on-disk cache, '' without (kept out of stats: run params)
    train_mask: np.ndarray | None = None  # data.format=instruction: (n_train_blocks, block_size) uint8, 1 = trained
    validation_mask: np.ndarray | None = None  # the same for the validation blocks; None for text


def _pack(token_lists, block_size: int, max_blocks: int = 0) -> tuple[np.ndarray, int]:
    """Concatenate whole documents' ids and cut; stops as soon as ``max_blocks`` blocks exist."""
    blocks, _, used = bounded.pack(((i, np.asarray(ids, dtype=np.int64), None) for i, ids in enumerate(token_lists)),
                                   block_size, max_blocks)
    return blocks, used


def _pack_masked(pairs, block_size: int, max_blocks: int = 0) -> tuple[np.ndarray, np.ndarray, int]:
    """:func:`_pack` for ``(ids, mask)`` pairs: ids and mask are cut at the same offsets."""
    items = ((i, np.asarray(ids, dtype=np.int64), np.asarray(mask, dtype=np.uint8)) for i, (ids, mask) in enumerate(pairs))
    return bounded.pack(items, block_size, max_blocks, masked=True)


def _tokenize_stream(docs: list[str], tokenizer):
    """``(document index, ids, None)`` pieces, EOS after each document, lazily: a small data
    volume only tokenises the documents (and, of a huge one, the pieces) it needs."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise DataError("the tokenizer has no EOS token to separate documents")
    end = np.array([eos], dtype=np.int64)
    prev = None
    for i, ids in bounded.encode(docs, tokenizer):
        if prev is not None and i != prev:
            yield prev, end, None
        prev = i
        yield i, ids, None
    if prev is not None:
        yield prev, end, None


def tokenize_example(prompt_ids, response_ids, eos: int) -> tuple[list[int], list[int]]:
    """``prompt + response + [EOS]`` and its mask: 0 on every prompt token, 1 on the response and EOS."""
    ids = list(prompt_ids) + list(response_ids) + [eos]
    return ids, [0] * len(prompt_ids) + [1] * (len(response_ids) + 1)


def _tokenize_examples(examples: list[Example], tokenizer):
    """``(example index, ids, mask)`` pieces, lazily: prompt (mask 0), response and EOS (mask 1).
    Prompt and response are tokenised separately, so the mask's boundary is exact (no token
    straddles prompt and response)."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise DataError("the tokenizer has no EOS token to end each response")
    end, one = np.array([eos], dtype=np.int64), np.ones(1, dtype=np.uint8)
    texts = (t for e in examples for t in (e.prompt, e.response))
    prev = None
    for j, ids in bounded.encode(texts, tokenizer):
        i, is_response = divmod(j, 2)
        if prev is not None and i != prev:
            yield prev, end, one
        prev = i
        yield i, ids, np.full(len(ids), is_response, dtype=np.uint8)
    if prev is not None:
        yield prev, end, one


CACHE_VERSION = 1  # bump when packing changes what it produces


def tokenizer_digest(tokenizer) -> str:
    """Identity of a tokenizer by content: a fast tokenizer's full JSON serialisation (vocab,
    merges, normaliser, pre-tokeniser), else its vocabulary, plus the EOS id packing appends."""
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
    else:
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    h.update(json.dumps([tokenizer.eos_token_id]).encode())
    return h.hexdigest()


def documents_digest(docs: list[str]) -> str:
    h = hashlib.sha256()
    for d in docs:
        h.update(hashlib.sha256(d.encode()).digest())
    return h.hexdigest()


def examples_digest(examples: list[Example]) -> str:
    h = hashlib.sha256()
    for e in examples:
        h.update(hashlib.sha256(e.prompt.encode()).digest())
        h.update(hashlib.sha256(e.response.encode()).digest())
    return h.hexdigest()


INSTRUCTION_KEYS = ("format", "instruction_field", "input_field", "output_field", "prompt_template")
"""``DataConfig`` fields of the instruction format: left out of a text packing's cache key, so
text keys are exactly those from before the format existed."""


def packed_cache_dir() -> Path:
    from emo_ray.models.loading import cache_dir

    return cache_dir().parent / "packed"


def _cache_key(cfg: DataConfig, tokenizer, train_docs: list, val_docs: list | None) -> str:
    skip = ("train", "validation") + (INSTRUCTION_KEYS if cfg.format == "text" else ())  # paths: by content
    params = {k: v for k, v in asdict(cfg).items() if k not in skip}
    digest = documents_digest if cfg.format == "text" else examples_digest
    blob = json.dumps([CACHE_VERSION, tokenizer_digest(tokenizer), digest(train_docs),
                       None if val_docs is None else digest(val_docs), params], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:40]


def atomic_save_npz(path: Path, **arrays) -> None:
    """Write ``path`` so that readers see either nothing or the whole file: a unique temporary
    file in the same folder, then ``os.replace`` (atomic on POSIX)."""
    from emo_ray.storage import atomic_write

    with atomic_write(path) as f:
        np.savez(f, **arrays)


def prepare_blocks(cfg: DataConfig, tokenizer, *, cache: bool = True) -> PackedData:
    """Documents -> seeded order -> validation hold-out -> volume subset -> packed blocks.

    The order depends only on ``cfg.seed`` and the corpus, so the training subset for a smaller
    ``max_train_tokens`` / ``max_train_documents`` is a prefix of the one for a larger value.
    With ``cache`` a repeated call on the same documents, tokenizer and parameters loads the
    blocks from disk instead of tokenising (``PackedData.cache`` says 'hit' or 'miss').
    """
    docs = _read(cfg, cfg.train)
    path = None
    masked = cfg.format == "instruction"
    if cache:
        val_src = _read(cfg, cfg.validation) if cfg.validation else None
        path = packed_cache_dir() / f"{_cache_key(cfg, tokenizer, docs, val_src)}.npz"
        if path.exists():
            try:
                with np.load(path) as z:
                    if masked:
                        return PackedData(z["train"], z["validation"], json.loads(str(z["stats"])), "hit",
                                          z["train_mask"], z["validation_mask"])
                    return PackedData(z["train"], z["validation"], json.loads(str(z["stats"])), "hit")
            except Exception:  # noqa: BLE001 - a damaged entry is recomputed and replaced
                pass
    packed = _prepare(cfg, tokenizer, docs, val_src if cache else None)
    if path is not None:
        masks = {"train_mask": packed.train_mask, "validation_mask": packed.validation_mask} if masked else {}
        atomic_save_npz(path, train=packed.train, validation=packed.validation, stats=np.array(json.dumps(packed.stats)),
                        **masks)
        packed.cache = "miss"
    return packed


def _read(cfg: DataConfig, spec: str) -> list:
    """Documents (``str``) of a text source, :class:`Example` rows of an instruction source."""
    if cfg.format == "instruction":
        return read_examples(spec, InstructionFields.of(cfg))
    return read_documents(spec, cfg.text_field)


def _pack_for(cfg: DataConfig, items: list, tokenizer, max_blocks: int):
    """``(blocks, mask or None, items used)`` for text documents or instruction examples."""
    if cfg.format == "instruction":
        return bounded.pack(_tokenize_examples(items, tokenizer), cfg.block_size, max_blocks, masked=True)
    return bounded.pack(_tokenize_stream(items, tokenizer), cfg.block_size, max_blocks)


def _prepare(cfg: DataConfig, tokenizer, docs: list, val_docs_read: list | None = None) -> PackedData:
    order = np.random.default_rng(cfg.seed).permutation(len(docs))
    docs = [docs[i] for i in order]
    if cfg.validation:
        val_docs = val_docs_read if val_docs_read is not None else _read(cfg, cfg.validation)
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
    train, train_mask, used_docs = _pack_for(cfg, docs, tokenizer, max_blocks)
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
    val, val_mask, _ = _pack_for(cfg, val_docs, tokenizer, cfg.max_validation_blocks)
    if val_docs and len(val) == 0:
        raise DataError(f"block_size {cfg.block_size} is larger than the whole validation split: no validation block")
    stats = {
        "train_blocks": int(len(train)),
        "train_tokens": int(train.size),
        "train_documents_used": int(used_docs),
        "validation_blocks": int(len(val)),
        "validation_tokens": int(val.size),
    }
    if train_mask is None:
        return PackedData(train, val, stats)
    # Targets the loss trains on: mask 1 at a position that has a predecessor in its block.
    stats["train_target_tokens"] = int(train_mask[:, 1:].sum())
    stats["validation_target_tokens"] = int(val_mask[:, 1:].sum())
    return PackedData(train, val, stats, train_mask=train_mask, validation_mask=val_mask)
