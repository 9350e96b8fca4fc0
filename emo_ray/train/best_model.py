"""The candidate export of ``train.select_checkpoint=best_val_loss``: one Hugging Face folder in
the run's storage (``<storage>/<ray.run_name>/best_model``, local or ``s3://``...), overwritten
whenever validation loss improves, with ``best.json`` (its loss and step) beside the weights.

It lives next to Ray's checkpoints, not in one of them, so that a restarted attempt finds the
best weights of the earlier attempt (paper Table 1 protocol: "keep the checkpoint with the lowest
validation loss") and only one copy is ever kept, whatever ``keep_checkpoints`` says.
"""
from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

from emo_ray import storage as storage_lib

BEST_DIR = "best_model"
BEST_STATE = "best.json"


def _fs(path: str):
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(path) if storage_lib.is_uri(path) else (pyarrow.fs.LocalFileSystem(), path)


def read_best(dest: str) -> tuple[float, int]:
    """``(loss, step)`` of the stored candidate, or ``(inf, 0)`` when there is none."""
    path = storage_lib.join(dest, BEST_STATE)
    if not storage_lib.exists(path):
        return math.inf, 0
    state = json.loads(storage_lib.read_text(path))
    return float(state["val_loss"]), int(state["step"])


def remove(dest: str) -> None:
    import pyarrow.fs

    fs, p = _fs(dest)
    if fs.get_file_info(p).type != pyarrow.fs.FileType.NotFound:
        fs.delete_dir(p)


def store(local: Path, dest: str, val_loss: float, step: int) -> None:
    """Replace the candidate at ``dest`` with the export folder ``local``. Written beside it
    first and swapped in: a crash mid-upload leaves the previous candidate (and its state) whole.
    ``best.json`` is written last, so its loss and step always describe the weights beside it."""
    import pyarrow.fs

    (local / BEST_STATE).unlink(missing_ok=True)
    staged = dest.rstrip("/") + ".partial"
    remove(staged)
    fs, p = _fs(staged)
    fs.create_dir(p, recursive=True)
    pyarrow.fs.copy_files(str(local), p, source_filesystem=pyarrow.fs.LocalFileSystem(), destination_filesystem=fs)
    storage_lib.write_text(storage_lib.join(staged, BEST_STATE), json.dumps({"val_loss": val_loss, "step": step}))
    remove(dest)
    fs.move(p, _fs(dest)[1])


def fetch(dest: str, local: Path) -> None:
    """Copy the candidate's weights and tokenizer (not ``best.json``) into the folder ``local``."""
    import pyarrow.fs

    fs, p = _fs(dest)
    local.mkdir(parents=True, exist_ok=True)
    pyarrow.fs.copy_files(p, str(local), source_filesystem=fs, destination_filesystem=pyarrow.fs.LocalFileSystem())
    (local / BEST_STATE).unlink(missing_ok=True)


def export_candidate(save_hf, dest: str, val_loss: float, step: int, rank: int) -> None:
    """Export the current weights with ``save_hf(folder)`` (collective under ZeRO-3: call on
    every rank) and, on rank 0, make them the candidate."""
    with tempfile.TemporaryDirectory() as tmp:
        save_hf(Path(tmp) / "hf")
        if rank == 0:
            store(Path(tmp) / "hf", dest, val_loss, step)
