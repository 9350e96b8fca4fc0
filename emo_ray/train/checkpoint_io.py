"""Where a training checkpoint is written, when, and how it becomes one Ray Train knows.

* When (issue 27.4): every ``train.checkpoint_every`` steps and/or every
  ``train.checkpoint_every_minutes`` of rank 0's wall clock, broadcast so that every rank takes
  part in the collective save.
* Where (issue 27.4): a local ``ray.storage_path`` (EFS on the cluster, shared by every node) is
  written in place, once, instead of to the container's /tmp and then again to storage while
  every rank waits; a URI storage keeps Ray Train's upload from a local temporary folder.
* How (issue 25.3): into a hidden sibling ``.<name>.partial`` that rank 0 renames onto
  ``<name>`` only once every rank's shards are in (``os.replace``: atomic on POSIX), so a folder
  named like a checkpoint is always a complete one. A write that fails (a full disk, an
  unwritable folder) removes the partial folder and raises one :class:`CheckpointWriteError`
  line naming the path and the cause; the driver turns it into the run's failure.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch

from emo_ray.storage import STORAGE_FAULT_MARK

PARTIAL_SUFFIX = ".partial"
FAULT_ENV = "EMO_RAY_TEST_CHECKPOINT_FAULT"
"""Test hook: ``ENOSPC@4`` makes rank 0's checkpoint write of step 4 fail with that errno after
DeepSpeed wrote its files (a disk that fills mid-write). Tests only; unset in real runs."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written to the run's storage (no space, no permission...)."""


def checkpoint_due(step: int, max_steps: int, *, every_steps: int, every_minutes: float, since_last_s: float) -> bool:
    """A mid-run checkpoint at ``step``: every ``every_steps`` steps, or once ``every_minutes`` of
    wall clock passed since the last one; never at the last step (the final save follows)."""
    if step >= max_steps:
        return False
    if every_steps and step % every_steps == 0:
        return True
    return every_minutes > 0 and since_last_s >= every_minutes * 60.0


def rank0_decides(flag: bool, device) -> bool:
    """Rank 0's ``flag`` on every rank: a checkpoint is a collective save, and each rank's clock
    would otherwise make its own decision."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _injected_fault(step: int, rank: int, path: Path) -> None:
    """The ``EMO_RAY_TEST_CHECKPOINT_FAULT`` hook (``<ERRNO name>@<step>``), on rank 0."""
    spec = os.environ.get(FAULT_ENV, "")
    if not spec or rank != 0:
        return
    name, _, at = spec.partition("@")
    if at and int(at) != step:
        return
    code = getattr(errno, name)
    raise OSError(code, os.strerror(code), str(path))


def is_write_fault(e: BaseException) -> bool:
    """An error of the storage, not of the program: any OSError, and torch's zip writer's
    RuntimeError for a failed write (it reports a full disk as ``file write failed``)."""
    return isinstance(e, OSError) or (isinstance(e, RuntimeError) and "write failed" in str(e))


def describe_fault(step: int, e: BaseException, path: Path) -> str:
    """One line: ``CheckpointWriteError: checkpoint of step N not written to PATH: CAUSE``; PATH is
    the checkpoint's folder (the one a user looks for), or the file the error names outside it."""
    where = str(getattr(e, "filename", None) or path)
    # inside the folder (or its staging sibling), or relative (shutil.rmtree names entries so)
    if not os.path.isabs(where) or where.startswith((str(path), str(path.with_name(f".{path.name}")))):
        where = str(path)
    if isinstance(e, OSError) and e.errno:
        cause = f"{e.strerror or os.strerror(e.errno)} ({errno.errorcode.get(e.errno, e.errno)})"
    else:
        cause = " ".join(str(e).split())[:300]
    return f"{STORAGE_FAULT_MARK} checkpoint of step {step} not written to {where}: {cause}"


class _DropFaultTraceback(logging.Filter):
    """Ray Train logs every exception of the training function with its traceback on the worker
    (forwarded to the driver's console). A storage fault is said in one line by the driver
    instead; the traceback stays available with EMO_RAY_VERBOSE=1."""

    def filter(self, record: logging.LogRecord) -> bool:
        return STORAGE_FAULT_MARK not in record.getMessage()


def _fault(step: int, e: BaseException, path: Path) -> CheckpointWriteError:
    from emo_ray import console

    if not console.verbose():
        logging.getLogger("ray.train.v2._internal.util").addFilter(_DropFaultTraceback())
    return CheckpointWriteError(describe_fault(step, e, path))


@contextlib.contextmanager
def writing(name: str, step: int, rank: int) -> Iterator[tuple[Path, bool]]:
    """The folder to write checkpoint ``name`` into, and whether it is in the run's storage
    (``direct``, report it with :func:`report`). Every rank enters; on a clean exit a direct
    folder has been committed under ``name``."""
    import pyarrow.fs
    import ray.train

    storage = ray.train.get_context().get_storage()
    if not isinstance(storage.storage_filesystem, pyarrow.fs.LocalFileSystem):
        tmp = Path(tempfile.mkdtemp(prefix=f"{name}-"))
        try:
            yield tmp, False
            _injected_fault(step, rank, tmp)
        except Exception as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if is_write_fault(e):
                raise _fault(step, e, tmp) from e
            raise
        return  # the caller reports it (Ray Train uploads it), then removes it
    final = Path(storage.build_checkpoint_path_from_name(name))
    partial = final.with_name(f".{name}{PARTIAL_SUFFIX}")
    try:
        if rank == 0:
            shutil.rmtree(partial, ignore_errors=True)  # a dead attempt's leftovers
        _barrier()
        partial.mkdir(parents=True, exist_ok=True)
        yield partial, True
        _injected_fault(step, rank, partial)
        _barrier()  # every rank's shards are in
        if rank == 0:
            if final.exists():  # committed by an attempt that died before reporting it
                shutil.rmtree(final)
            os.replace(partial, final)
        _barrier()
    except Exception as e:
        shutil.rmtree(partial, ignore_errors=True)
        if is_write_fault(e):
            raise _fault(step, e, final) from e
        raise


def report(metrics: dict, folder: Path, name: str, *, direct: bool) -> None:
    """Report a checkpoint: one already committed in the run's storage (``NO_UPLOAD``, Ray 2.60's
    way for checkpoints the workers wrote to storage), or a local folder Ray Train uploads."""
    import ray.train

    if direct:
        storage = ray.train.get_context().get_storage()
        final = str(folder.with_name(name))
        ckpt = ray.train.Checkpoint(final, filesystem=storage.storage_filesystem)
        ray.train.report(metrics, checkpoint=ckpt, checkpoint_dir_name=name,
                         checkpoint_upload_mode=ray.train.CheckpointUploadMode.NO_UPLOAD)
        return
    try:
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(folder)))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def remove_partial(run_dir: str) -> list[str]:
    """Delete the ``.<name>.partial`` folders a failed attempt left in a local run folder (its
    workers are gone: nothing writes there any more). Returns what was removed."""
    root = Path(run_dir)
    if "://" in run_dir or not root.is_dir():
        return []
    gone = [p for p in root.glob(f".checkpoint_*{PARTIAL_SUFFIX}") if p.is_dir()]
    for p in gone:
        shutil.rmtree(p, ignore_errors=True)
    return [str(p) for p in gone]
