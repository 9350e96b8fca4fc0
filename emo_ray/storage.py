"""Run storage that is either a local folder or a URI Ray understands (``s3://``, ``gs://``,
``abfs://``...). Local paths are made absolute (Ray Train refuses relative ones); URIs pass
through untouched, and the small files we keep next to Ray's (the sweep state) go through
pyarrow's filesystem layer, as Ray's own checkpoints do."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def is_uri(path: str) -> bool:
    return "://" in str(path)


def resolve(path: str) -> str:
    """Absolute local path, or the URI as given."""
    return str(path) if is_uri(path) else str(Path(path).expanduser().resolve())


def join(base: str, *parts: str) -> str:
    return "/".join([str(base).rstrip("/"), *parts]) if is_uri(base) else str(Path(base, *parts))


def _fs(path: str):
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(path) if is_uri(path) else (pyarrow.fs.LocalFileSystem(), path)


def exists(path: str, filesystem=None) -> bool:
    """Whether ``path`` exists. With ``filesystem`` (a ``pyarrow.fs.FileSystem``, e.g. a Ray
    ``Checkpoint``'s ``.filesystem`` with its ``.path``) the path is looked up there as given;
    otherwise on the filesystem its URI names, or the local one. Never ``os.path``."""
    import pyarrow.fs

    fs, p = (filesystem, path) if filesystem is not None else _fs(path)
    return fs.get_file_info(p).type != pyarrow.fs.FileType.NotFound


def read_text(path: str) -> str:
    fs, p = _fs(path)
    with fs.open_input_stream(p) as f:
        return f.read().decode()


def write_text(path: str, text: str) -> None:
    fs, p = _fs(path)
    fs.create_dir(p.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(p) as f:
        f.write(text.encode())


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb"):
    """Open a unique temporary file beside local ``path`` and rename it onto ``path`` when the block
    ends (``os.replace``, atomic on POSIX): readers see nothing or the whole file, and concurrent
    writers (trials filling one cache) never clobber each other's half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".partial")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


STORAGE_FAULT_MARK = "CheckpointWriteError:"
"""How a training worker's failed checkpoint write begins its one line (``emo_ray.train.checkpoint_io``):
the driver finds it in the error Ray Train wraps around it."""


class StorageFault(OSError):
    """The run's storage refused a write (a full disk, an unwritable folder): one line naming the
    path and the cause, raised by the driver once the run has been marked FAILED."""


def storage_fault_line(e: BaseException | None) -> str | None:
    """The ``CheckpointWriteError: ...`` line of an error raised in a training worker, if any
    (Ray Train wraps it in its own errors, with the worker's traceback as text)."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        for line in str(e).splitlines():
            if STORAGE_FAULT_MARK in line:
                return line[line.rindex(STORAGE_FAULT_MARK) + len(STORAGE_FAULT_MARK):].strip()
        e = e.__cause__ or e.__context__
    return None
