"""What a worker's checkpoints hold and how a worker resumes from one: the DeepSpeed state with
the step and the data position; in the final one also the Hugging Face export and the final
metrics (``train.final_checkpoint=weights``: only those)."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import emo_ray.train.checkpoint_io as checkpoint_io
from emo_ray.config import Config
from emo_ray.train.safe_load import weights_only_torch_load

CLIENT_STATE = "emo_ray_state"
FINAL_STATE = "trainer_state.json"  # step, data position and final metrics of a finished run


def restore(engine, restored) -> tuple[int, int]:
    """``(step, micro-batches consumed)`` of the checkpoint Ray Train restored into ``engine``, or
    ``(0, 0)`` for a fresh start."""
    if restored is None:
        return 0, 0
    with restored.as_directory() as ckpt_dir, weights_only_torch_load():
        _, client = engine.load_checkpoint(ckpt_dir, load_module_strict=True)
    state = client[CLIENT_STATE]
    return state["step"], state["micro_batches"]


def save_checkpoint(engine, step: int, consumed: int, metrics: dict, rank: int, *, final: bool = False,
                    weights_only: bool = False, export=None) -> None:
    """Checkpoint ``step`` (every rank calls it) and report it to Ray Train with ``metrics``. The
    final one also holds the exported model (``export(folder)``, collective under ZeRO-3) and the
    final metrics; ``weights_only``: no DeepSpeed state, training cannot continue from it."""
    state = {"step": step, "micro_batches": consumed}
    name = f"checkpoint_step_{step:07d}" + ("_final" if final else "")
    # written in place in the run's storage and committed whole, or a clean one-line failure
    with checkpoint_io.writing(name, step, rank) as (tmp, direct):
        if not weights_only:
            engine.save_checkpoint(tmp, tag=f"step_{step}", client_state={CLIENT_STATE: state})
        if final:
            export(Path(tmp) / "hf")
        if final and rank == 0:
            (Path(tmp) / FINAL_STATE).write_text(json.dumps({**state, "metrics": metrics}))
    checkpoint_io.report(metrics, tmp, name, direct=direct)


def report_finished(restored, rank: int) -> bool:
    """Restored from a final checkpoint without DeepSpeed state (``final_checkpoint=weights``):
    the run already finished (a sweep re-runs a trial whose evaluation was interrupted). Report
    that checkpoint and its metrics again, so the run ends with them, and skip training."""
    import pyarrow.fs
    import ray.train

    fs, root = restored.filesystem, restored.path

    def exists(name: str) -> bool:
        return fs.get_file_info(f"{root}/{name}").type != pyarrow.fs.FileType.NotFound

    if exists("latest") or not exists(FINAL_STATE):
        return False  # DeepSpeed state present (or an older checkpoint): the normal resume path
    with fs.open_input_stream(f"{root}/{FINAL_STATE}") as f:
        metrics = json.loads(f.read())["metrics"]
    with tempfile.TemporaryDirectory() as tmp:
        keep = None
        if rank == 0:  # one copy of the export is enough; the other ranks report metrics only
            restored.to_directory(tmp)
            keep = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=keep)
    return True


def save_hf(engine, cfg: Config, out: Path, model_path: str, rank: int) -> None:
    """A plain Hugging Face folder of the fine-tuned weights, for evaluation and sharing, written
    by rank 0 alone. Call on every rank.

    ZeRO-3: DeepSpeed's 16-bit consolidation (what ``engine.save_16bit_model`` saves, switched on
    by ``stage3_gather_16bit_weights_on_model_save`` in ``deepspeed_setup.py``; the same call
    accelerate's ``get_state_dict`` makes) walks the modules and gathers one module's own
    parameters at a time onto rank 0, which copies them to host memory before the next: no rank
    ever holds more than one module's parameters gathered, and only rank 0 keeps the copy (for
    LLaMA-13B in bf16, 26 GB of host RAM on rank 0; the GPUs of every rank never see the whole
    model). ZeRO 0-2 keep the whole model on every rank anyway; rank 0 saves its own.

    Dtype: the weights as the module trained them (DeepSpeed's model weights, not the fp32
    master copy): bf16 on GPUs, fp32 on CPU, which is what the run validated and what
    ``save_pretrained`` records as the config's dtype.
    """
    from transformers import AutoTokenizer

    module = engine.module
    state = None
    if cfg.train.zero_stage == 3:
        if not engine.zero_gather_16bit_weights_on_model_save():
            raise RuntimeError("the ZeRO-3 export needs zero_optimization.stage3_gather_16bit_weights_on_model_save")
        state = engine._zero3_consolidated_16bit_state_dict()  # collective; the dict on rank 0, None elsewhere
    if rank == 0:
        if cfg.train.lora.rank:  # adapter alone to out/adapter, then the merged plain model below
            from emo_ray.train.lora import export_merged

            export_merged(module, cfg.train.lora, out, model_path)
        module.save_pretrained(out, state_dict=state)
        AutoTokenizer.from_pretrained(model_path).save_pretrained(out)
