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


def initial_best(dest: str, resumed: bool, rank: int, device) -> tuple[float, int]:
    """``(best validation loss, its step)`` the run starts from, the same on every rank (rank 0
    reads, then broadcasts). A resumed attempt continues the candidate an earlier attempt stored
    (the best so far survives a restart; a step it stored after the restored checkpoint is
    replayed with the same data and reached again); a fresh start drops any stale one."""
    import torch
    import torch.distributed as dist

    state = torch.tensor([math.inf, 0.0], dtype=torch.float64)
    if rank == 0:
        if not dest:
            raise RuntimeError("train.select_checkpoint=best_val_loss needs the driver's best_model_dir")
        if resumed:
            state = torch.tensor(read_best(dest), dtype=torch.float64)
        else:
            remove(dest)
    state = state.to(device)
    if dist.is_available() and dist.is_initialized():
        dist.broadcast(state, src=0)
    loss, step = state.cpu().tolist()
    return loss, int(step)


class BestCheckpointKeeper:
    """``train.select_checkpoint=best_val_loss`` in a worker: the lowest validation loss so far and
    its step, the same on every rank, and its weights as the candidate at ``dest``. Disabled
    (``select_checkpoint=last``) it keeps nothing and the run exports its last weights."""

    def __init__(self, dest: str, rank: int, *, enabled: bool, loss: float = math.inf, step: int = 0):
        self.dest, self.rank, self.enabled = dest, rank, enabled
        self.loss, self.step = loss, step

    @classmethod
    def start(cls, enabled: bool, dest: str, *, resumed: bool, rank: int, device) -> "BestCheckpointKeeper":
        if not enabled:
            return cls(dest, rank, enabled=False)
        loss, step = initial_best(dest, resumed, rank, device)
        return cls(dest, rank, enabled=True, loss=loss, step=step)

    def offer(self, val: dict, step: int, save_hf) -> None:
        """A validation at ``step`` (``validation.validate``'s dict): with tokens and a lower loss,
        its weights become the candidate. val_loss is all-reduced and the best broadcast, so every
        rank decides alike (and every rank takes part in the export, collective under ZeRO-3)."""
        if self.enabled and val["val_tokens"] > 0 and val["val_loss"] < self.loss:
            self.loss, self.step = val["val_loss"], step
            export_candidate(save_hf, self.dest, self.loss, self.step, self.rank)

    def export_final(self, out: Path, save_hf) -> None:
        """The run's exported model into ``out``: the best validated weights, not the last ones (no
        finite validation loss at all, step 0: there is no best, the last weights it is)."""
        if self.enabled and self.step:
            if self.rank == 0:
                fetch(self.dest, out)
        else:
            save_hf(out)

    def metrics(self) -> dict:
        """``val_best_loss`` and ``val_best_step`` for the final report; nothing when disabled."""
        return {"val_best_loss": self.loss, "val_best_step": self.step} if self.enabled else {}
