"""Open-ended generation corpora (paper 4.1) with the prefix / generation lengths of Table 4.

Corpus definitions are data: one YAML file per corpus in ``emo_ray/evaluation/corpus_defs/``
(the file name is the corpus name). Add a corpus by writing a YAML file, and pass its path (or
drop it in the folder and pass its name):

    source: ${EMO_RAY_DATA}/my_corpus/test.jsonl   # or hf:NAME[:CONFIG]:SPLIT
    prefix_tokens: 20
    gen_tokens: 80
    text_field: text            # optional; unit, newlines_to_spaces, windows_per_unit, scan_rows too

``generation.window_unit`` says what the lengths count. ``tokens`` (project protocol): a prompt
is a window of ``prefix_tokens + gen_tokens`` tokens of the evaluated model's tokenizer in a
text unit (a document, or a paragraph for WikiText whose test split has only 60 articles): the
first ``prefix_tokens`` are the prompt, the rest is the human continuation that MAUVE and ROUGE
compare against. ``words`` (official protocol, DRSY/EMO ``test_utils.py:test_batch``): the same
two numbers count space-separated words of one row (prefix, then human continuation) and
``gen_tokens`` new tokens are sampled; see ``prompts.word_prompts``.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Literal

import yaml

from emo_ray import typed_config
from emo_ray.bounds import Bounds
from emo_ray.data.sources import DataError, parse_hf
from emo_ray.typed_config import ConfigError, expand_path

CORPUS_DIR = Path(__file__).resolve().parent / "corpus_defs"


class CorpusError(ValueError):
    pass


@dataclass(frozen=True)
class Corpus:
    source: str
    """Local JSON Lines file (``${EMO_RAY_DATA}`` expanded) or ``hf:NAME[:CONFIG]:SPLIT``."""
    prefix_tokens: Annotated[int, Bounds(gt=0)]
    gen_tokens: Annotated[int, Bounds(gt=0)]
    text_field: str = "text"
    unit: Literal["document", "paragraph"] = "document"
    """``paragraph``: split documents at line breaks and drop WikiText headings (`` = Title = ``)."""
    newlines_to_spaces: bool = False
    """MixCE / EMO preprocessing of WebText: newlines become spaces."""
    windows_per_unit: Annotated[int, Bounds(gt=0)] = 1
    """Consecutive non-overlapping windows taken from one unit (more prompts from few documents)."""
    scan_rows: Annotated[int, Bounds(ge=0, note="0 = all rows")] = 0
    """Word windows only: read just the first ``scan_rows`` rows of the split (0 = all), as the
    official ``test_batch`` reads ``eval_num`` rows (4000 for the hub datasets WikiText, PTB and
    AG News; 5000, i.e. all, for the WebText / WritingPrompts files) in slices of 64, which
    rounds 4000 up to 4032 rows."""

    def __post_init__(self) -> None:
        parse_hf(self.source)  # a malformed hf: spec fails where the corpus is defined


def load_corpus_file(path: str | Path) -> Corpus:
    """A corpus from a YAML file whose keys are the :class:`Corpus` fields, checked as every typed
    config is (``typed_config.build``: keys, types, ranges); every mistake raises
    :class:`CorpusError` naming the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise CorpusError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    if not isinstance(data, dict):
        keys = [f.name for f in fields(Corpus)]
        raise CorpusError(f"{path}: expected a mapping of corpus keys {keys}, got {type(data).__name__}")
    try:
        return typed_config.build(Corpus, data, "")
    except DataError as e:
        raise CorpusError(f"{path}: source: {e}") from None
    except ConfigError as e:
        raise CorpusError(f"{path}: {e}") from None


def _load_shipped() -> dict[str, Corpus]:
    return {p.stem: load_corpus_file(p) for p in sorted(CORPUS_DIR.glob("*.yaml"))}


CORPORA: dict[str, Corpus] = _load_shipped()
"""The shipped corpora (every paper Table 4 domain), by file name."""


def corpus_names() -> list[str]:
    return sorted(CORPORA)


def corpus_label(name_or_path: str) -> str:
    """The name a corpus goes by in metric keys and artifact names: a shipped name as is, a
    file by its stem (``~/data/my_ptb.yaml`` -> ``my_ptb``), since MLflow keys take no ``~``/``$``."""
    return name_or_path if name_or_path in CORPORA else Path(str(name_or_path)).stem


def get_corpus(name_or_path: str) -> Corpus:
    """A shipped corpus by name, or a corpus YAML file by path (``~`` and ``${EMO_RAY_DATA}``
    expanded; relative to the working directory)."""
    if name_or_path in CORPORA:
        return CORPORA[name_or_path]
    try:
        path = Path(expand_path(name_or_path))
    except ValueError as e:  # an unset variable, or a stray '$'
        raise CorpusError(f"corpus {name_or_path!r}: {e}") from None
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise CorpusError(f"corpus file {path} does not exist")
        return load_corpus_file(path)
    raise CorpusError(
        f"{name_or_path!r} is not a generation corpus; valid: {corpus_names()} (or a path to a corpus YAML file)"
    )
