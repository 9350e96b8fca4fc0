"""Read evaluation rows (dicts) from a local JSON Lines file or a Hugging Face dataset split."""
from __future__ import annotations

from pathlib import Path

from emo_ray.data.sources import HFSource, iter_jsonl, parse_hf
from emo_ray.typed_config import expand_path


class DataUnavailable(FileNotFoundError):
    """The data named by a spec cannot be had here (missing file, or a hub dataset offline)."""


def read_rows(spec: str) -> list[dict]:
    """``path/to/file.jsonl`` (``${EMO_RAY_DATA}`` expanded) or ``hf:NAME[:CONFIG]:SPLIT``."""
    source = parse_hf(spec)
    if source is not None:
        return _read_hf(source)
    path = Path(expand_path(spec))
    if not path.exists():
        raise DataUnavailable(f"data file {path} does not exist")
    return [row for _, row in iter_jsonl(path)]


def _read_hf(source: HFSource) -> list[dict]:
    try:
        ds = source.load()
    except Exception as e:  # offline, unknown dataset, gated: all mean "not here"
        raise DataUnavailable(f"{source}: cannot load the hub dataset ({type(e).__name__}: {str(e)[:200]})") from e
    return [dict(r) for r in ds]
