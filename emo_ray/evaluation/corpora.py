"""Open-ended generation corpora (paper 4.1) with the prefix / generation lengths of Table 4.

Lengths are in tokens of the evaluated model's tokenizer. A prompt is a window of
``prefix_tokens + gen_tokens`` tokens of a text unit (a document, or a paragraph for WikiText
whose test split has only 60 articles): the first ``prefix_tokens`` are the prompt, the rest is
the human continuation that MAUVE and ROUGE compare against.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from emo_ray.data.sources import parse_hf


@dataclass(frozen=True)
class Corpus:
    source: str
    """Local JSON Lines file (``${EMO_RAY_DATA}`` expanded) or ``hf:NAME[:CONFIG]:SPLIT``."""
    prefix_tokens: int
    gen_tokens: int
    text_field: str = "text"
    unit: Literal["document", "paragraph"] = "document"
    """``paragraph``: split documents at line breaks and drop WikiText headings (`` = Title = ``)."""
    newlines_to_spaces: bool = False
    """MixCE / EMO preprocessing of WebText: newlines become spaces."""
    windows_per_unit: int = 1
    """Consecutive non-overlapping windows taken from one unit (more prompts from few documents)."""

    def __post_init__(self) -> None:
        parse_hf(self.source)  # a malformed hf: spec fails where the corpus is defined


CORPORA: dict[str, Corpus] = {
    # Table 4: WikiText 20/80. 60 test articles -> paragraphs give ~1k windows.
    "wikitext-2": Corpus("${EMO_RAY_DATA}/wikitext-2/test.jsonl", 20, 80, unit="paragraph"),
    "wikitext-103": Corpus("hf:wikitext:wikitext-103-raw-v1:test", 20, 80, unit="paragraph"),
    # Table 4: WebText 20/80. Only 200 local test documents and some are shorter than 100
    # tokens: a second window from the long ones keeps >= 200 prompts.
    "webtext": Corpus("${EMO_RAY_DATA}/webtext/test.jsonl", 20, 80, newlines_to_spaces=True, windows_per_unit=2),
    # Table 4: PTB 5/25 (hub only; no local copy).
    "ptb": Corpus("hf:ptb_text_only:penn_treebank:test", 5, 25, text_field="sentence"),
    # Table 4: AG News 10/30.
    "ag_news": Corpus("${EMO_RAY_DATA}/ag_news/test.jsonl", 10, 30),
}


def get_corpus(name: str) -> Corpus:
    try:
        return CORPORA[name]
    except KeyError:
        raise ValueError(f"{name!r} is not a generation corpus; valid: {sorted(CORPORA)}") from None
