"""Resume without unpickling arbitrary objects.

DeepSpeed loads its checkpoints with ``torch.load(weights_only=False)``: full unpickling, so a
checkpoint file can run code in every worker that resumes from it. On a cluster the checkpoint
storage (EFS, s3) is shared and writable by every job, so that is code execution for anyone who
can write there. ``weights_only_torch_load`` turns every ``torch.load`` made inside it into
``torch.load(weights_only=True)``: tensors, containers and primitive types, plus the few
DeepSpeed classes its own checkpoints hold (found by
``torch.serialization.get_unsafe_globals_in_checkpoint`` on ZeRO-1/2/3 checkpoints). A file
holding anything else is refused with the file and the object named, before it is built.

What stays trusted: ``trainer_state.json`` and ``emo_ray_run.json`` are JSON, the Hugging Face
export is safetensors; the DeepSpeed classes below are rebuilt from their fields (no code of
the file's choosing runs).
"""
from __future__ import annotations

import contextlib
import pickle
from collections.abc import Iterator

import torch


class UnsafeCheckpoint(RuntimeError):
    """A checkpoint file holds a pickled object outside the allow-list."""


def trusted_globals() -> list:
    """The non-tensor classes DeepSpeed's own ZeRO-0..3 checkpoints pickle (fp32, bf16, fp16)."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [ZeroStageEnum, LossScaler, DynamicLossScaler, fragment_address]


@contextlib.contextmanager
def weights_only_torch_load() -> Iterator[None]:
    """Inside the block every ``torch.load`` is ``weights_only=True`` with ``trusted_globals``
    allowed, whatever its caller asked for; a refused file raises ``UnsafeCheckpoint``."""
    original = torch.load
    allowed = trusted_globals()

    def load(f, *args, **kwargs):
        kwargs["weights_only"] = True
        try:
            with torch.serialization.safe_globals(allowed):
                return original(f, *args, **kwargs)
        except pickle.UnpicklingError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UnsafeCheckpoint(
                f"refusing to resume from {f}: it holds a pickled object outside the allow-list "
                f"({first}). emo_ray loads checkpoints with torch.load(weights_only=True); a file "
                "that needs full unpickling was not written by emo_ray's DeepSpeed or was tampered with"
            ) from None

    torch.load = load
    try:
        yield
    finally:
        torch.load = original
