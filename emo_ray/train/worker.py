"""The per-worker training loop that Ray Train runs on every rank: DeepSpeed, one objective,
checkpoints every N steps, resume from the last one, metrics to MLflow from rank 0."""
from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from emo_ray import tracking
from emo_ray.config import Config, from_flat
import emo_ray.train.best_model as best_model
import emo_ray.train.checkpoint_io as checkpoint_io
from emo_ray.train.checkpoint_io import checkpoint_due, rank0_decides
from emo_ray.train.deepspeed_setup import (cpu_autocast_dtype, deepspeed_config, prepare_deepspeed_env,
                                           train_precision, unscaled_grad_norm, use_bf16, use_fp16)
from emo_ray.train.lora import trainable_parameters
from emo_ray.train.schedule import lr_multiplier
from emo_ray.train.sink import ERRORS_METRIC, MlflowSink  # noqa: F401 (MlflowSink: its old home)
from emo_ray.train.safe_load import weights_only_torch_load

CLIENT_STATE = "emo_ray_state"
FINAL_STATE = "trainer_state.json"  # step, data position and final metrics of a finished run


class TrainingDiverged(RuntimeError):
    """A non-finite loss or gradient norm, or a dead model (gradient norm 0 step after step): the
    run stops, its weights are never exported."""


def divergence(step: int, loss: float, grad_norm: float | None, consecutive_skips: int = 0,
               zero_grad_steps: int = 0, *, overflow_patience: int = 10, dead_patience: int = 3) -> str | None:
    """Why the run must stop at this step (``TrainingDiverged: ...``), or None.

    * a non-finite loss, always;
    * a non-finite gradient norm, unless the step was one that fp16 dynamic loss scaling skipped
      on purpose (``consecutive_skips`` > 0, up to ``overflow_patience`` in a row; fp32 and bf16
      never skip steps);
    * a dead model: a gradient norm of exactly 0 for ``dead_patience`` steps in a row
      (``zero_grad_steps``). Seen with ``train.lr=1e6``: one step saturates the network, the loss
      sits at ln V and nothing can move it again, yet every number stays finite."""
    if not math.isfinite(float(loss)):
        return f"TrainingDiverged: non-finite loss ({loss}) at step {step}"
    if consecutive_skips > overflow_patience:
        return f"TrainingDiverged: {consecutive_skips} consecutive overflow-skipped steps at step {step}"
    if grad_norm is not None and not math.isfinite(float(grad_norm)) and not consecutive_skips:
        return f"TrainingDiverged: non-finite gradient norm ({grad_norm}) at step {step}"
    if zero_grad_steps >= dead_patience:
        return (f"TrainingDiverged: dead model, gradient norm 0 for {zero_grad_steps} steps in a row at step "
                f"{step} (loss {float(loss):.4g}); no further step can change it (learning rate too high?)")
    return None


@torch.no_grad()
def _grad_norm(module) -> float:
    """The L2 norm of the (already averaged) gradients, before clipping: at ZeRO stage 0 every
    rank holds all of them, and DeepSpeed's ``get_global_grad_norm`` returns None."""
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))) if grads else 0.0


def _lap(phase: dict[str, float], key: str, since: float) -> float:
    """Add the time since ``since`` to ``phase[key]``; the new mark."""
    now = time.perf_counter()
    phase[key] += now - since
    return now


MASK_COLUMN = "loss_mask"
"""The Ray Dataset column (and validation key) of instruction data: 1 = trained target, 0 = prompt."""


def masked_labels(ids: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Labels for the losses: the ids, with ``IGNORE_INDEX`` where ``loss_mask`` is 0 (the prompt
    tokens of instruction data). The losses shift them (position t predicts label t+1)."""
    from emo_ray.losses.common import IGNORE_INDEX

    return ids.masked_fill(loss_mask.to(ids.device) == 0, IGNORE_INDEX)


@dataclass
class MaskedBatch:
    """An instruction micro-batch: ``input_ids`` and their ``labels``; ``.to`` moves both (the
    step loop moves a batch as it moves a text batch's ids tensor)."""

    input_ids: torch.Tensor
    labels: torch.Tensor

    def to(self, device) -> "MaskedBatch":
        return MaskedBatch(self.input_ids.to(device), self.labels.to(device))


def _compute_args(batch) -> tuple:
    """The positional arguments after ``engine`` of ``objective.compute``: ``(ids,)`` for text
    (every token a target), ``(ids, labels)`` for instruction data."""
    return (batch.input_ids, batch.labels) if isinstance(batch, MaskedBatch) else (batch,)


def _batches(shard, micro_batch: int, skip: int):
    """Endless micro-batches over the worker's shard, epoch after epoch; the first ``skip``
    are dropped (resume in the middle of an epoch). A shard with a ``loss_mask`` column
    (instruction data) yields :class:`MaskedBatch` es, a text shard the ids tensor."""
    epoch = 0
    while True:
        n = 0
        for batch in shard.iter_torch_batches(batch_size=micro_batch, drop_last=True, dtypes=torch.long):
            if skip:
                skip -= 1
                continue
            n += 1
            if MASK_COLUMN in batch:
                yield epoch, MaskedBatch(batch["data"], masked_labels(batch["data"], batch[MASK_COLUMN]))
                continue
            yield epoch, batch["data"]
        if n == 0 and epoch > 0 and not skip:
            raise RuntimeError("the training shard is smaller than one micro-batch")
        epoch += 1


def _load_model(cfg: Config, model_path: str, ds_cfg: dict):
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if use_bf16(cfg) else torch.float16 if use_fp16(cfg) else torch.float32
    # bf16 on CPU (autocast): eager attention. PyTorch's CPU flash-attention *backward* in bf16 ran
    # 7x slower than in fp32 here (118 vs 16 ms per layer, SmolLM2 8x128), eating the whole gain;
    # eager attention is bf16 bmm + an fp32 softmax, and equal to SDPA for unpadded causal blocks.
    attn = {"attn_implementation": "eager"} if cpu_autocast_dtype(cfg) is not None else {}
    keep_alive = None
    if cfg.train.zero_stage == 3:
        # Partition parameters while loading instead of materialising the full model per rank.
        from transformers.integrations import HfDeepSpeedConfig

        keep_alive = HfDeepSpeedConfig(ds_cfg)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype, **attn)
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    model.config.use_cache = False
    from emo_ray.train.lora import apply_lora

    return apply_lora(model, cfg.train.lora), keep_alive  # train.lora.rank=0: unchanged


@torch.no_grad()
def _validate(engine, val_blocks, rank: int, world: int, micro_batch: int) -> dict:
    """Token-level NLL on the validation blocks, split across ranks. Every rank runs the same
    number of forwards (ZeRO-3 gathers parameters collectively); padding rows weigh zero.

    ``val_blocks``: the ``(n, T)`` ids, or for instruction data ``{"data": ids, "loss_mask":
    mask}``, whose prompt tokens are then no targets (the training loss's mask)."""
    import torch.distributed as dist

    from emo_ray.losses.common import shift_and_flatten, token_logprobs

    val_mask = None
    if isinstance(val_blocks, dict):
        val_blocks, val_mask = val_blocks["data"], val_blocks[MASK_COLUMN]
    engine.eval()
    n = len(val_blocks)
    per_rank = -(-n // world) if n else 0
    idx = list(range(rank, n, world))
    nll_sum = torch.zeros((), dtype=torch.float64)
    tok_sum = torch.zeros((), dtype=torch.float64)
    for i in range(0, per_rank, micro_batch):
        rows = idx[i : i + micro_batch]
        real = len(rows)
        rows = rows + [0] * (min(micro_batch, per_rank - i) - real)  # pad with a dummy block
        if not rows:
            rows, real = [0], 0
        ids = torch.as_tensor(val_blocks[rows], dtype=torch.long, device=engine.device)
        logits = engine(input_ids=ids).logits
        targets = ids if val_mask is None else masked_labels(ids, torch.as_tensor(val_mask[rows]))
        flat, labels, mask = shift_and_flatten(logits[:real], targets[:real]) if real else (None, None, None)
        if real:
            _, logp_y = token_logprobs(flat, labels)
            nll_sum += (-logp_y[mask]).double().sum().cpu()
            tok_sum += mask.sum().double().cpu()
    stats = torch.stack([nll_sum, tok_sum]).to(engine.device)  # NCCL on GPU reduces device tensors only
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(stats)
    stats = stats.cpu()
    engine.train()
    nll = (stats[0] / stats[1].clamp_min(1)).item()
    return {"val_loss": nll, "val_ppl": math.exp(min(nll, 50.0)), "val_tokens": stats[1].item()}


def train_loop_per_worker(loop_config: dict) -> None:
    import ray.train

    cfg = from_flat(loop_config["config"])  # first line: back to the typed config
    from emo_ray import console

    console.quiet_libraries()  # per-rank report dumps and known warnings off unless EMO_RAY_VERBOSE
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    prepare_deepspeed_env(cfg.ray.use_gpu)
    import deepspeed

    from emo_ray.train.objective import build_objective

    torch.manual_seed(cfg.train.seed)
    np.random.seed(cfg.train.seed)
    restored = ray.train.get_checkpoint()
    if restored is not None and _report_finished(restored, rank):
        return  # a weights-only final checkpoint: training is over, nothing to load
    ds_cfg = deepspeed_config(cfg)
    model, _hf_ds = _load_model(cfg, loop_config["model_path"], ds_cfg)
    # fixed cost embedding copied before any update (or read once from train.cost_embedding_model)
    objective = build_objective(cfg, model, cost_model_path=loop_config.get("cost_embedding_model_path"))

    t = cfg.train

    def schedule(opt):
        return torch.optim.lr_scheduler.LambdaLR(
            opt,
            lambda s: lr_multiplier(s, warmup_steps=t.warmup_steps, max_steps=t.max_steps,
                                    schedule=t.schedule, min_lr_ratio=t.min_lr_ratio),
        )

    engine, _, _, _ = deepspeed.initialize(
        model=model, model_parameters=[p for p in model.parameters() if p.requires_grad],
        config=ds_cfg, lr_scheduler=schedule,
    )

    # Precision (said once, recorded on the run) and the MFU denominator: the measured matmul peak
    # of one worker in the compute dtype (emo_ray.perf, cached per machine) times the workers.
    precision = train_precision(cfg)
    amp = cpu_autocast_dtype(cfg)  # CPU bf16: autocast around forward + loss, fp32 weights
    n_params = sum(getattr(p, "ds_numel", p.numel()) for p in engine.module.parameters())
    peak = _peak_flops(cfg, precision) if rank == 0 else None
    if rank == 0:
        how = "autocast, fp32 master weights" if amp is not None else "DeepSpeed bf16/fp16 mode" if precision != "fp32" else ""
        print(f"emo-ray: train.precision={cfg.train.precision} -> {precision}" + (f" ({how})" if how else ""), flush=True)

    step, consumed = 0, 0
    if restored is not None:
        with restored.as_directory() as ckpt_dir, weights_only_torch_load():
            _, client = engine.load_checkpoint(ckpt_dir, load_module_strict=True)
        state = client[CLIENT_STATE]
        step, consumed = state["step"], state["micro_batches"]

    sink = MlflowSink(loop_config["tracking_uri"], loop_config["mlflow_run_id"], rank == 0)
    if rank == 0:
        sink.describe({"train.precision_resolved": precision},
                      {tracking.tags.PEAK_FLOPS_PER_WORKER: f"{peak:.4g}" if peak else "unmeasured"})
    if rank == 0:
        sink.describe({"train.chunked_loss": bool(objective.chunked),
                       "train.trainable_params": trainable_parameters(engine.module)},
                      {tracking.tags.RESUMED_FROM_STEP: step})
        sink.resume()  # an earlier attempt (worker restart, restarted driver) may have logged steps
        if t.cost_embedding_model and objective.cost_embedding_shape:
            sink.describe({"train.cost_embedding_shape": list(objective.cost_embedding_shape)}, {})
    select_best = t.select_checkpoint == "best_val_loss"
    best_dir = loop_config.get("best_model_dir") or ""
    best_loss, best_step = _initial_best(best_dir, restored is not None, rank, engine.device) if select_best else (math.inf, 0)

    shard = ray.train.get_dataset_shard("train")
    blocks_per_epoch = loop_config["train_blocks_per_worker"] // t.micro_batch_size
    if blocks_per_epoch == 0:
        raise RuntimeError("each worker's training shard is smaller than one micro-batch")
    batches = _batches(shard, t.micro_batch_size, consumed % blocks_per_epoch)

    def save_hf(out: Path) -> None:
        _save_hf(engine, cfg, out, loop_config["model_path"], rank)

    def save(step_: int, metrics: dict, final: bool = False) -> None:
        state = {"step": step_, "micro_batches": consumed}
        weights_only = final and t.final_checkpoint == "weights"
        name = f"checkpoint_step_{step_:07d}" + ("_final" if final else "")
        # written in place in the run's storage and committed whole, or a clean one-line failure
        with checkpoint_io.writing(name, step_, rank) as (tmp, direct):
            if not weights_only:
                engine.save_checkpoint(tmp, tag=f"step_{step_}", client_state={CLIENT_STATE: state})
            if final:
                # the exported model is the best validated one, not the last weights (no finite
                # validation loss at all, best_step 0: there is no best, the last weights it is)
                if select_best and best_step:
                    if rank == 0:
                        best_model.fetch(best_dir, Path(tmp) / "hf")
                else:
                    save_hf(Path(tmp) / "hf")
            if final and rank == 0:
                (Path(tmp) / FINAL_STATE).write_text(json.dumps({**state, "metrics": metrics}))
        checkpoint_io.report(metrics, tmp, name, direct=direct)

    engine.train()
    metrics: dict = {}
    last_save = time.monotonic()  # the time basis of train.checkpoint_every_minutes
    skips, skipped_before = 0, int(getattr(engine, "skipped_steps", 0) or 0)  # fp16 overflow skips in a row
    zero_grads = 0  # steps in a row with a gradient norm of exactly 0 (a dead model)
    stage0_norm = loss_scale = None
    while step < t.max_steps:
        t0 = time.perf_counter()
        parts: dict[str, float] = {}
        loss_sum, tokens = 0.0, 0
        lr = engine.get_lr()[0]  # the rate this step uses (the scheduler advances in step())
        phase = dict.fromkeys(("data", "forward", "backward", "optimizer"), 0.0)  # where the step's time goes
        for _ in range(t.grad_accum):
            tp = time.perf_counter()
            epoch, ids = next(batches)
            ids = ids.to(engine.device)
            tp = _lap(phase, "data", tp)
            with torch.autocast("cpu", dtype=amp) if amp is not None else contextlib.nullcontext():
                out = objective.compute(engine, *_compute_args(ids))  # forward + loss (matmuls bf16 under autocast)
            tp = _lap(phase, "forward", tp)
            engine.backward(out.loss)  # outside autocast, as torch recommends (ZeRO's gradient reduce runs in here)
            tp = _lap(phase, "backward", tp)
            if engine.is_gradient_accumulation_boundary() and t.zero_stage == 0:
                stage0_norm = _grad_norm(engine.module)  # DeepSpeed records no global norm without ZeRO
                loss_scale = getattr(engine.optimizer, "loss_scale", None)  # before step() changes it
            engine.step()  # optimizer on this rank's partition + gather of the updated weights
            _lap(phase, "optimizer", tp)
            consumed += 1
            loss_sum += out.loss.item()
            tokens += out.n_tokens
            for k, v in out.metrics.items():
                parts[k] = parts.get(k, 0.0) + v / t.grad_accum
        step += 1
        if t.debug_fail_at_step and step == t.debug_fail_at_step and restored is None and rank == 0:
            os._exit(1)  # simulated worker death (fault-injection knob, tests only)
        dt = time.perf_counter() - t0
        # Loss and its parts averaged over the ranks, tokens summed: what rank 0 logs and every
        # rank reports is the step's, not one shard's.
        mean = _mean_over_ranks({"loss": loss_sum / t.grad_accum, **parts}, world, engine.device, tokens)
        metrics = {
            "step": step,
            "epoch": epoch,
            **{k: v for k, v in mean.items() if k != "tokens"},
            "lr": lr,
            "tokens_per_s": mean["tokens"] / dt,
            "step_time_s": dt,
            **{f"time_{k}_s": v for k, v in phase.items()},
        }
        if peak:  # 6 N FLOPs per trained token over the workers' measured peak
            metrics["mfu"] = 6.0 * n_params * metrics["tokens_per_s"] / (world * peak)
        gn = engine.get_global_grad_norm()
        if gn is None and t.zero_stage == 0:
            gn = stage0_norm
        gn = unscaled_grad_norm(gn, loss_scale, cfg)
        if gn is not None:
            metrics["grad_norm"] = float(gn)
        if sink.errors:  # MLflow calls that failed so far: counted, never raised (emo_ray/train/sink.py)
            metrics[ERRORS_METRIC] = float(sink.errors)
        if rank == 0 and (step % t.log_every == 0 or step == t.max_steps):
            sink.log({k: v for k, v in metrics.items() if k not in ("step", "epoch")}, step, prefix="train/")
        # Loss is averaged over ranks and the grad norm is global: every rank decides alike.
        skipped_now = int(getattr(engine, "skipped_steps", 0) or 0)
        skips = skips + 1 if skipped_now > skipped_before else 0
        skipped_before = skipped_now
        gn_now = metrics.get("grad_norm")
        # a step that trained no token (all targets masked, e.g. prompt-only instruction blocks)
        # has a zero gradient by construction: it neither counts as dead nor resets the count
        if mean["tokens"] > 0:
            zero_grads = zero_grads + 1 if gn_now is not None and float(gn_now) == 0.0 and not skips else 0
        diverged = divergence(step, metrics["loss"], gn_now, skips, zero_grads,
                              overflow_patience=t.overflow_patience, dead_patience=t.dead_patience)
        if diverged:
            if rank == 0:
                sink.describe({}, {tracking.tags.FAILURE: diverged})
                sink.close()
            raise TrainingDiverged(diverged)  # no checkpoint, no validation, no export
        if t.eval_every and step % t.eval_every == 0 and step < t.max_steps:
            val = _validate(engine, loop_config["validation_blocks"], rank, world, t.micro_batch_size)
            if val["val_tokens"] > 0:
                metrics.update(val)
                if rank == 0:
                    sink.log({k.removeprefix("val_"): v for k, v in val.items()}, step, prefix="val/")
                # val_loss is all-reduced and best_loss broadcast: every rank decides alike (and
                # every rank must take part in the export, collective under ZeRO-3)
                if select_best and val["val_loss"] < best_loss:
                    best_loss, best_step = val["val_loss"], step
                    best_model.export_candidate(save_hf, best_dir, best_loss, best_step, rank)
        due = checkpoint_due(step, t.max_steps, every_steps=t.checkpoint_every, every_minutes=t.checkpoint_every_minutes,
                             since_last_s=time.monotonic() - last_save)
        if t.checkpoint_every_minutes > 0:  # only then can the ranks disagree (their clocks)
            due = rank0_decides(due, engine.device)
        if due:
            save(step, metrics)
            last_save = time.monotonic()
        elif step % t.log_every == 0 and step < t.max_steps:
            ray.train.report(metrics)

    val = _validate(engine, loop_config["validation_blocks"], rank, world, t.micro_batch_size)
    if val["val_tokens"] > 0:  # no validation tokens: no val metrics at all (never a perfect 0 loss)
        metrics.update(val)
        if rank == 0:
            sink.log({k.removeprefix("val_"): v for k, v in val.items()}, step, prefix="val/")
    else:
        metrics["val_tokens"] = 0.0
    if select_best:
        if val["val_tokens"] > 0 and val["val_loss"] < best_loss:
            best_loss, best_step = val["val_loss"], step
            best_model.export_candidate(save_hf, best_dir, best_loss, best_step, rank)
        metrics.update(val_best_loss=best_loss, val_best_step=best_step)
        if rank == 0:
            sink.log({"best_loss": best_loss, "best_step": best_step}, step, prefix="val/")
    sink.close()  # the queued metrics reach MLflow before the final report ends the run
    save(step, metrics, final=True)
    if select_best and t.final_checkpoint == "weights" and rank == 0:
        # the final checkpoint holds the best export and cannot be trained further: one copy is enough
        best_model.remove(best_dir)


def _initial_best(best_dir: str, resumed: bool, rank: int, device) -> tuple[float, int]:
    """``(best validation loss, its step)`` the run starts from, the same on every rank (rank 0
    reads, then broadcasts). A resumed attempt continues the candidate an earlier attempt stored
    (the best so far survives a restart; a step it stored after the restored checkpoint is
    replayed with the same data and reached again); a fresh start drops any stale one."""
    import torch.distributed as dist

    state = torch.tensor([math.inf, 0.0], dtype=torch.float64)
    if rank == 0:
        if not best_dir:
            raise RuntimeError("train.select_checkpoint=best_val_loss needs the driver's best_model_dir")
        if resumed:
            state = torch.tensor(best_model.read_best(best_dir), dtype=torch.float64)
        else:
            best_model.remove(best_dir)
    state = state.to(device)
    if dist.is_available() and dist.is_initialized():
        dist.broadcast(state, src=0)
    loss, step = state.cpu().tolist()
    return loss, int(step)


def _mean_over_ranks(values: dict[str, float], world: int, device, tokens: int) -> dict[str, float]:
    """``values`` averaged over the ranks and ``tokens`` summed, in one all-reduce (every rank
    calls it at every step, with the same keys: the objective is the same everywhere)."""
    import torch.distributed as dist

    if world == 1 or not (dist.is_available() and dist.is_initialized()):
        return {**values, "tokens": float(tokens)}
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys] + [float(tokens)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    out = t.tolist()
    return {**{k: v / world for k, v in zip(keys, out)}, "tokens": out[-1]}


def _peak_flops(cfg: Config, precision: str) -> float | None:
    """One worker's measured matmul peak (FLOP/s) in its compute dtype with its thread count,
    measured once per machine and cached (``emo_ray.perf.peak_flops``); None if it cannot be."""
    from emo_ray.perf import peak_flops

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    try:
        return peak_flops(dtype, "cuda" if cfg.ray.use_gpu else "cpu", threads=torch.get_num_threads())
    except Exception:  # noqa: BLE001 - a missing denominator must never stop training
        return None


def _report_finished(restored, rank: int) -> bool:
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


def _save_hf(engine, cfg: Config, out: Path, model_path: str, rank: int) -> None:
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
