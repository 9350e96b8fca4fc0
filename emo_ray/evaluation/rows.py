"""Read evaluation rows (dicts) from a local JSON Lines file or a Hugging Face dataset split."""
from __future__ import annotations

from pathlib import Path

from emo_ray.data.sources import iter_jsonl
from emo_ray.evaluation.config import expand


class DataUnavailable(FileNotFoundError):
    """The data named by a spec cannot be had here (missing file, or a hub dataset offline)."""


def read_rows(spec: str) -> list[dict]:
    """``path/to/file.jsonl`` (``${EMO_RAY_DATA}`` expanded) or ``hf:NAME[:CONFIG]:SPLIT``."""
    if spec.startswith("hf:"):
        return _read_hf(spec)
    path = Path(expand(spec))
    if not path.exists():
        raise DataUnavailable(f"data file {path} does not exist")
    return [row for _, row in iter_jsonl(path)]


def _read_hf(spec: str) -> list[dict]:
    parts = spec[3:].split(":")
    if len(parts) not in (2, 3):
        raise ValueError(f"{spec!r}: expected hf:NAME[:CONFIG]:SPLIT")
    name, config, split = (parts[0], None, parts[1]) if len(parts) == 2 else parts
    import datasets

    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as e:  # offline, unknown dataset, gated: all mean "not here"
        raise DataUnavailable(f"{spec}: cannot load the hub dataset ({type(e).__name__}: {str(e)[:200]})") from e
    return [dict(r) for r in ds]
