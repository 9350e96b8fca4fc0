"""Open-ended generation (paper 4.1): the prompts cut from a corpus (the sampler that continues
them is ``emo_ray.inference.sampler``).

Two ways to cut prompts (``generation.window_unit``, Table 4 lengths, see ``corpora.py``):

* ``tokens`` (project protocol): windows of the evaluated model's tokenizer over every unit, so
  every prompt of a corpus has the same length;
* ``words`` (official protocol, DRSY/EMO ``language_modeling/test_utils.py:test_batch``): one
  window per dataset row that passes the official row filters, prefix and human continuation
  counted in space-separated words. Prefixes then differ in token length: prompts are sorted by
  it and the sampler batches equal lengths together, so a batch still needs no padding.
"""
from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass

from emo_ray.data.sources import parse_hf
from emo_ray.evaluation.corpora import Corpus
from emo_ray.evaluation.rows import DataUnavailable, read_rows

WIKITEXT_HEADING = re.compile(r"^\s*=( =)* .* =( =)*\s*$")
WINDOW_UNITS = ("tokens", "words")

# The official row filters (test_utils.py:test_batch): a row is skipped when
#   len(text) < 100 or len(text.split(" ")) < prefix_len + continuation_len + 10 or "==" in text
MIN_ROW_CHARS = 100
EXTRA_ROW_WORDS = 10
SKIP_MARKER = "=="
SKIP_REASONS = ("too_few_chars", "too_few_words", "has_marker")


@dataclass(frozen=True)
class Prompt:
    prompt_id: int
    prefix_ids: list[int]
    reference_ids: list[int]
    prefix: str
    reference: str


def _texts(corpus: Corpus):
    for row in read_rows(corpus.source):
        text = row.get(corpus.text_field)
        if not isinstance(text, str):
            raise ValueError(f"{corpus.source}: row without a string field {corpus.text_field!r} (keys {sorted(row)})")
        yield text


def text_units(corpus: Corpus) -> list[str]:
    """Documents, or paragraphs (non-heading lines) for ``unit='paragraph'``."""
    units = []
    for text in _texts(corpus):
        if corpus.unit == "paragraph":
            units.extend(p.strip() for p in text.split("\n") if p.strip() and not WIKITEXT_HEADING.match(p))
        else:
            units.append(" ".join(text.split("\n")) if corpus.newlines_to_spaces else text)
    return [u for u in units if u.strip()]


def official_rows(corpus: Corpus) -> list[str]:
    """The rows the official ``test_batch`` iterates over, the first ``scan_rows``: Hugging Face
    dataset rows. For ``unit='paragraph'`` (WikiText) a row is one line with its newline, as in
    HF's ``wikitext`` (`` Robert Boulter is ... . \\n``): its leading space makes an empty first
    "word" and its end a ``"\\n"`` word, exactly as ``text.split(" ")`` sees them there."""
    rows = []
    for text in _texts(corpus):
        if corpus.unit == "paragraph":
            lines = text.split("\n")
            rows.extend(line + "\n" for line in (lines[:-1] if text.endswith("\n") else lines))
        else:
            rows.append(" ".join(text.split("\n")) if corpus.newlines_to_spaces else text)
    return rows[: corpus.scan_rows or None]


def skip_reason(text: str, prefix_words: int, continuation_words: int) -> str | None:
    """Why the official ``test_batch`` skips a row (the first filter that fires), None to keep it."""
    if len(text) < MIN_ROW_CHARS:
        return "too_few_chars"
    if len(text.split(" ")) < prefix_words + continuation_words + EXTRA_ROW_WORDS:
        return "too_few_words"
    if SKIP_MARKER in text:
        return "has_marker"
    return None


def word_windows(corpus: Corpus) -> tuple[list[tuple[str, str]], dict]:
    """``(prefix, human continuation)`` texts of every kept row, as ``test_batch`` builds them:
    the first ``prefix_tokens`` words joined by spaces, then the next ``gen_tokens`` words; the
    continuation starts with the joining space so that ``prefix + continuation`` is the official
    gold text ``prefix + " " + gold_continuation``."""
    rows, windows, skipped = official_rows(corpus), [], Counter()
    k, m = corpus.prefix_tokens, corpus.gen_tokens
    for text in rows:
        why = skip_reason(text, k, m)
        if why:
            skipped[why] += 1
            continue
        words = text.split(" ")
        windows.append((" ".join(words[:k]), " " + " ".join(words[k : k + m])))
    return windows, {"units": len(rows), **{f"skipped_{r}": skipped[r] for r in SKIP_REASONS}, "windows": len(windows)}


def check_word_windows(corpus: Corpus, num_prompts: int) -> None:
    """Config-time check that a local corpus has ``num_prompts`` word windows (0 = all: nothing to
    check). Hub sources and absent files are left to the run, which reports them itself."""
    if not num_prompts or parse_hf(corpus.source) is not None:
        return
    try:
        n = word_windows(corpus)[1]["windows"]
    except DataUnavailable:
        return
    if n < num_prompts:
        raise ValueError(
            f"{corpus.source}: only {n} rows pass the official filters ({corpus.prefix_tokens} + {corpus.gen_tokens} "
            f"words), generation.num_prompts={num_prompts}; use at most {n} (or 0 = all)"
        )


def _seeded_take(windows: list, num_prompts: int, seed: int, source: str, what: str) -> list:
    random.Random(seed).shuffle(windows)
    if num_prompts and len(windows) < num_prompts:
        raise ValueError(f"{source}: only {len(windows)} {what}, {num_prompts} prompts asked for")
    return windows[:num_prompts] if num_prompts else windows


def word_prompts(corpus: Corpus, tokenizer, *, num_prompts: int, seed: int) -> tuple[list[Prompt], dict]:
    """Official-protocol prompts: the prefix text is tokenised by the evaluated model's tokenizer
    (with its special tokens, as ``tokenizer(prefixs)`` in ``test_batch``); sorted by prefix
    token length so that the sampler's batches hold equal lengths."""
    windows, counts = word_windows(corpus)
    what = f"rows pass the official filters ({corpus.prefix_tokens} + {corpus.gen_tokens} words)"
    chosen = _seeded_take(windows, num_prompts, seed, corpus.source, what)
    specials = tokenizer("")["input_ids"]
    ids = [(specials + tokenizer(p, add_special_tokens=False)["input_ids"], p, c) for p, c in chosen]
    ids.sort(key=lambda t: len(t[0]))  # stable: ties keep the seeded order
    prompts = [Prompt(i, pid, tokenizer(c, add_special_tokens=False)["input_ids"], p, c) for i, (pid, p, c) in enumerate(ids)]
    return prompts, counts


def make_prompts(corpus: Corpus, tokenizer, *, num_prompts: int, seed: int,
                 window_unit: str = "tokens") -> tuple[list[Prompt], dict]:
    """A seeded sample of ``num_prompts`` windows (all if 0) and counts of what was dropped;
    ``window_unit='words'``: the official protocol's word windows (``word_prompts``)."""
    if window_unit not in WINDOW_UNITS:
        raise ValueError(f"window_unit {window_unit!r} is not one of {list(WINDOW_UNITS)}")
    if window_unit == "words":
        return word_prompts(corpus, tokenizer, num_prompts=num_prompts, seed=seed)
    window = corpus.prefix_tokens + corpus.gen_tokens
    specials = tokenizer("")["input_ids"]  # e.g. a BOS the model expects in front of every prompt
    windows, too_short = [], 0
    units = text_units(corpus)
    for unit in units:
        ids = tokenizer(unit, add_special_tokens=False)["input_ids"]
        n = min(corpus.windows_per_unit, len(ids) // window)
        too_short += n == 0
        windows.extend(ids[k * window : (k + 1) * window] for k in range(n))
    available = len(windows)
    windows = _seeded_take(windows, num_prompts, seed, corpus.source, f"windows of {window} tokens")
    prompts = [
        Prompt(
            i,
            specials + w[: corpus.prefix_tokens],
            w[corpus.prefix_tokens :],
            tokenizer.decode(w[: corpus.prefix_tokens]),
            tokenizer.decode(w[corpus.prefix_tokens :]),
        )
        for i, w in enumerate(windows)
    ]
    return prompts, {"units": len(units), "units_too_short": too_short, "windows": available}
