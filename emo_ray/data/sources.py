"""Read documents from local JSON Lines / text files, folders of them, or Hugging Face datasets.

Every malformed input fails here, before any process starts, naming the file and line.
"""
from __future__ import annotations

import json
from pathlib import Path

from emo_ray.config import expand_path


class DataError(ValueError):
    pass


TEXT_SUFFIXES = (".txt", ".raw", ".tokens")


def iter_jsonl(path: Path):
    """``(line number, object)`` for every non-blank line; a line that is not a JSON object
    fails naming the file and line (shared by training data and evaluation rows)."""
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: malformed JSON line ({e.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            yield lineno, row


def read_jsonl(path: Path, text_field: str) -> list[str]:
    docs = []
    for lineno, row in iter_jsonl(path):
        if text_field not in row:
            raise DataError(f"{path}:{lineno}: no text field {text_field!r} (found {sorted(row)})")
        text = row[text_field]
        if not isinstance(text, str):
            raise DataError(f"{path}:{lineno}: field {text_field!r} is {type(text).__name__}, not a string")
        if text.strip():
            docs.append(text)
    return docs


def read_text(path: Path) -> list[str]:
    """One document per non-blank line (the layout of wiki.*.raw / *.txt dumps)."""
    with path.open(encoding="utf-8") as fh:
        return [line.rstrip("\n") for line in fh if line.strip()]


def read_hf(spec: str, text_field: str) -> list[str]:
    """``hf:NAME[:CONFIG]:SPLIT``, e.g. ``hf:wikitext:wikitext-103-raw-v1:train``."""
    parts = spec[3:].split(":")
    if len(parts) not in (2, 3):
        raise DataError(f"{spec!r}: expected hf:NAME[:CONFIG]:SPLIT")
    name, config, split = (parts[0], None, parts[1]) if len(parts) == 2 else parts
    import datasets

    ds = datasets.load_dataset(name, config, split=split)
    if text_field not in ds.column_names:
        raise DataError(f"{spec}: no text field {text_field!r} (columns {ds.column_names})")
    return [t for t in ds[text_field] if isinstance(t, str) and t.strip()]


def check_sources(spec: str) -> None:
    """Fail fast on local sources that do not exist, without reading them: a sweep checks this
    in its driver before it schedules a single trial."""
    if not spec.strip():
        raise DataError("no data source given")
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        if not part.startswith("hf:") and not Path(expand_path(part)).exists():
            raise DataError(f"data file {expand_path(part)} does not exist (from {part!r}; set EMO_RAY_DATA?)")


def read_documents(spec: str, text_field: str = "text") -> list[str]:
    """All documents named by ``spec`` (comma-separated sources), in a stable order."""
    if not spec.strip():
        raise DataError("no data source given")
    docs: list[str] = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        if part.startswith("hf:"):
            docs.extend(read_hf(part, text_field))
            continue
        path = Path(expand_path(part))
        if path.is_dir():
            files = sorted(path.glob("*.jsonl")) or sorted(p for p in path.iterdir() if p.suffix in TEXT_SUFFIXES)
            if not files:
                raise DataError(f"{path}: folder holds no .jsonl or text files")
        elif path.exists():
            files = [path]
        else:
            raise DataError(f"data file {path} does not exist")
        for f in files:
            docs.extend(read_jsonl(f, text_field) if f.suffix == ".jsonl" else read_text(f))
    if not docs:
        raise DataError(f"{spec}: the corpus is empty (no non-blank documents)")
    return docs
