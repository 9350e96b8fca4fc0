"""The per-worker training loop that Ray Train runs on every rank: DeepSpeed, one objective,
checkpoints every N steps, resume from the last one, metrics to MLflow from rank 0."""
from __future__ import annotations

import json
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from emo_ray.config import Config, from_flat
from emo_ray.train.deepspeed_setup import deepspeed_config, prepare_deepspeed_env, use_bf16
from emo_ray.train.schedule import lr_multiplier

CLIENT_STATE = "emo_ray_state"
FINAL_STATE = "trainer_state.json"  # step, data position and final metrics of a finished run


class MlflowSink:
    """Rank 0 writes metrics into the run the driver opened, through the client API, so the
    worker never changes the run's status (the driver ends it FINISHED or FAILED)."""

    def __init__(self, uri: str, run_id: str, enabled: bool):
        self.enabled = enabled and bool(run_id)
        if self.enabled:
            from mlflow import MlflowClient

            self.client, self.run_id = MlflowClient(uri), run_id

    def log(self, metrics: dict, step: int) -> None:
        if not self.enabled:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None and math.isfinite(float(v))]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)


def _batches(shard, micro_batch: int, skip: int):
    """Endless micro-batches over the worker's shard, epoch after epoch; the first ``skip``
    are dropped (resume in the middle of an epoch)."""
    epoch = 0
    while True:
        n = 0
        for batch in shard.iter_torch_batches(batch_size=micro_batch, drop_last=True, dtypes=torch.long):
            if skip:
                skip -= 1
                continue
            n += 1
            yield epoch, batch["data"]
        if n == 0 and epoch > 0 and not skip:
            raise RuntimeError("the training shard is smaller than one micro-batch")
        epoch += 1


def _load_model(cfg: Config, model_path: str, ds_cfg: dict):
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if use_bf16(cfg) else torch.float32
    keep_alive = None
    if cfg.train.zero_stage == 3:
        # Partition parameters while loading instead of materialising the full model per rank.
        from transformers.integrations import HfDeepSpeedConfig

        keep_alive = HfDeepSpeedConfig(ds_cfg)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    model.config.use_cache = False
    return model, keep_alive


@torch.no_grad()
def _validate(engine, val_blocks: np.ndarray, rank: int, world: int, micro_batch: int) -> dict:
    """Token-level NLL on the validation blocks, split across ranks. Every rank runs the same
    number of forwards (ZeRO-3 gathers parameters collectively); padding rows weigh zero."""
    import torch.distributed as dist

    from emo_ray.losses.common import shift_and_flatten, token_logprobs

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
        flat, labels, mask = shift_and_flatten(logits[:real], ids[:real]) if real else (None, None, None)
        if real:
            _, logp_y = token_logprobs(flat, labels)
            nll_sum += (-logp_y[mask]).double().sum().cpu()
            tok_sum += mask.sum().double().cpu()
    stats = torch.stack([nll_sum, tok_sum])
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(stats)
    engine.train()
    nll = (stats[0] / stats[1].clamp_min(1)).item()
    return {"val_loss": nll, "val_ppl": math.exp(min(nll, 50.0)), "val_tokens": stats[1].item()}


def train_loop_per_worker(loop_config: dict) -> None:
    import ray.train

    cfg = from_flat(loop_config["config"])  # first line: back to the typed config
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
    objective = build_objective(cfg, model)  # fixed cost embedding copied before any update

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

    step, consumed = 0, 0
    if restored is not None:
        with restored.as_directory() as ckpt_dir:
            _, client = engine.load_checkpoint(ckpt_dir, load_module_strict=True)
        state = client[CLIENT_STATE]
        step, consumed = state["step"], state["micro_batches"]

    sink = MlflowSink(loop_config["tracking_uri"], loop_config["mlflow_run_id"], rank == 0)
    if rank == 0:
        sink.log({"chunked_loss": float(objective.chunked), "resumed_from_step": float(step)}, step)

    shard = ray.train.get_dataset_shard("train")
    blocks_per_epoch = loop_config["train_blocks_per_worker"] // t.micro_batch_size
    if blocks_per_epoch == 0:
        raise RuntimeError("each worker's training shard is smaller than one micro-batch")
    batches = _batches(shard, t.micro_batch_size, consumed % blocks_per_epoch)

    def save(step_: int, metrics: dict, final: bool = False) -> None:
        state = {"step": step_, "micro_batches": consumed}
        weights_only = final and t.final_checkpoint == "weights"
        with tempfile.TemporaryDirectory() as tmp:
            if not weights_only:
                engine.save_checkpoint(tmp, tag=f"step_{step_}", client_state={CLIENT_STATE: state})
            if final and (weights_only or loop_config.get("save_hf_model")):
                _save_hf(engine, cfg, Path(tmp) / "hf", loop_config["model_path"], rank)
            if final and rank == 0:
                (Path(tmp) / FINAL_STATE).write_text(json.dumps({**state, "metrics": metrics}))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))

    engine.train()
    metrics: dict = {}
    while step < t.max_steps:
        t0 = time.perf_counter()
        parts: dict[str, float] = {}
        loss_sum, tokens = 0.0, 0
        lr = engine.get_lr()[0]  # the rate this step uses (the scheduler advances in step())
        for _ in range(t.grad_accum):
            epoch, ids = next(batches)
            ids = ids.to(engine.device)
            out = objective.compute(engine, ids)
            engine.backward(out.loss)
            engine.step()
            consumed += 1
            loss_sum += out.loss.item()
            tokens += out.n_tokens
            for k, v in out.metrics.items():
                parts[k] = parts.get(k, 0.0) + v / t.grad_accum
        step += 1
        if t.debug_fail_at_step and step == t.debug_fail_at_step and restored is None and rank == 0:
            os._exit(1)  # simulated worker death (fault-injection knob, tests only)
        dt = time.perf_counter() - t0
        metrics = {
            "step": step,
            "epoch": epoch,
            "loss": loss_sum / t.grad_accum,
            **parts,
            "lr": lr,
            "tokens_per_s": tokens * world / dt,
            "step_time_s": dt,
        }
        gn = engine.get_global_grad_norm()
        if gn is not None:
            metrics["grad_norm"] = float(gn)
        if rank == 0 and (step % t.log_every == 0 or step == t.max_steps):
            sink.log({k: v for k, v in metrics.items() if k != "step"}, step)
        if t.checkpoint_every and step % t.checkpoint_every == 0 and step < t.max_steps:
            save(step, metrics)
        elif step % t.log_every == 0 and step < t.max_steps:
            ray.train.report(metrics)

    val = _validate(engine, loop_config["validation_blocks"], rank, world, t.micro_batch_size)
    metrics.update(val)
    if rank == 0:
        sink.log(val, step)
    save(step, metrics, final=True)


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
    """A plain Hugging Face folder of the fine-tuned weights, for evaluation and sharing."""
    from transformers import AutoTokenizer

    module = engine.module
    if cfg.train.zero_stage == 3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
            if rank == 0:
                module.save_pretrained(out)
    elif rank == 0:
        module.save_pretrained(out)
    if rank == 0:
        AutoTokenizer.from_pretrained(model_path).save_pretrained(out)
