"""The per-worker training loop that Ray Train runs on every rank: DeepSpeed, one objective,
checkpoints every N steps, resume from the last one, metrics to MLflow from rank 0.

In torchtune's recipe shape: ``TrainRecipe.setup`` (model, engine, resume, MLflow sink, the
best-checkpoint keeper), ``train`` (one ``TrainStep.step()`` per optimizer step, the divergence
guard, validation and checkpoints between steps), ``finish`` (final validation, export and
checkpoint). Its inputs are the driver's ``WorkerInputs`` record.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from emo_ray.config import Config
from emo_ray.train.best_model import BestCheckpointKeeper, remove as remove_best
from emo_ray.train.checkpoint_io import checkpoint_due, rank0_decides
from emo_ray.train.deepspeed_setup import TrainPrecision, deepspeed_config, prepare_deepspeed_env, train_precision
from emo_ray.train.divergence import DivergenceGuard, TrainingDiverged
from emo_ray.train.lora import trainable_parameters
from emo_ray.train.saving import report_finished, restore, save_checkpoint, save_hf
from emo_ray.train.schedule import lr_multiplier
from emo_ray.train.sink import ERRORS_METRIC, MlflowSink
from emo_ray.train.step import TrainStep, peak_flops
from emo_ray.train.worker_inputs import WorkerInputs
from emo_ray import tracking


def train_loop_per_worker(loop_config: dict) -> None:
    """What Ray Train runs on every rank; ``loop_config`` carries the driver's ``WorkerInputs``."""
    import ray.train

    from emo_ray import console

    inputs = WorkerInputs.from_loop_config(loop_config)  # first line: the driver's typed record
    console.quiet_libraries()  # per-rank report dumps and known warnings off unless EMO_RAY_VERBOSE
    ctx = ray.train.get_context()
    recipe = TrainRecipe(inputs, ctx.get_world_rank(), ctx.get_world_size())
    prepare_deepspeed_env(inputs.cfg.ray.use_gpu)
    torch.manual_seed(inputs.cfg.train.seed)
    np.random.seed(inputs.cfg.train.seed)
    restored = ray.train.get_checkpoint()
    if restored is not None and report_finished(restored, recipe.rank):
        return  # a weights-only final checkpoint: training is over, nothing to load
    recipe.setup(restored)
    recipe.finish(recipe.train())


def _load_model(cfg: Config, model_path: str, ds_cfg: dict, precision: TrainPrecision):
    from transformers import AutoModelForCausalLM

    # bf16 on CPU (autocast): eager attention. PyTorch's CPU flash-attention *backward* in bf16 ran
    # 7x slower than in fp32 here (118 vs 16 ms per layer, SmolLM2 8x128), eating the whole gain;
    # eager attention is bf16 bmm + an fp32 softmax, and equal to SDPA for unpadded causal blocks.
    attn = {"attn_implementation": "eager"} if precision.autocast_dtype is not None else {}
    keep_alive = None
    if cfg.train.zero_stage == 3:
        # Partition parameters while loading instead of materialising the full model per rank.
        from transformers.integrations import HfDeepSpeedConfig

        keep_alive = HfDeepSpeedConfig(ds_cfg)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=precision.weights_dtype, **attn)
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    model.config.use_cache = False
    from emo_ray.train.lora import apply_lora

    return apply_lora(model, cfg.train.lora), keep_alive  # train.lora.rank=0: unchanged


def _start_engine(cfg: Config, inputs: WorkerInputs, precision: TrainPrecision):
    """``(DeepSpeed engine, objective, HF DeepSpeed config to keep alive)``."""
    import deepspeed

    from emo_ray.train.objective import build_objective

    t = cfg.train
    ds_cfg = deepspeed_config(cfg, precision)
    model, hf_ds = _load_model(cfg, inputs.model_path, ds_cfg, precision)
    # fixed cost embedding copied before any update (or read once from train.cost_embedding_model)
    objective = build_objective(cfg, model, cost_model_path=inputs.cost_embedding_model_path)

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
    return engine, objective, hf_ds


class TrainRecipe:
    """One rank's run: ``setup`` -> ``train`` -> ``finish``."""

    def __init__(self, inputs: WorkerInputs, rank: int, world: int):
        self.inputs, self.cfg, self.t = inputs, inputs.cfg, inputs.cfg.train
        self.rank, self.world = rank, world

    def setup(self, restored) -> None:
        """The engine (restored from ``restored`` if any), the MLflow sink, the best-checkpoint
        keeper, the step and the divergence guard."""
        import ray.train

        cfg, t, rank = self.cfg, self.t, self.rank
        # Precision resolved once, here where the workers compute (said once, recorded on the run).
        self.precision = precision = train_precision(cfg)
        self.engine, objective, self._hf_ds = _start_engine(cfg, self.inputs, precision)
        peak = self._say_precision() if rank == 0 else None
        step, consumed = restore(self.engine, restored)
        self.sink = self._open_sink(objective, precision, peak, step)
        self.best = BestCheckpointKeeper.start(t.select_checkpoint == "best_val_loss", self.inputs.best_model_dir,
                                               resumed=restored is not None, rank=rank, device=self.engine.device)
        blocks_per_epoch = self.inputs.train_blocks_per_worker // t.micro_batch_size
        if blocks_per_epoch == 0:
            raise RuntimeError("each worker's training shard is smaller than one micro-batch")
        from emo_ray.train.batches import micro_batches

        batches = micro_batches(ray.train.get_dataset_shard("train"), t.micro_batch_size, consumed % blocks_per_epoch)
        fail_at = t.debug_fail_at_step if restored is None and rank == 0 else 0
        self.stepper = TrainStep(self.engine, objective, batches, cfg, precision, world=self.world, step=step,
                                 consumed=consumed, peak_flops=peak, fail_at_step=fail_at)
        self.guard = DivergenceGuard(overflow_patience=t.overflow_patience, dead_patience=t.dead_patience,
                                     skipped_steps=self.stepper.skipped_steps)

    def _say_precision(self) -> float | None:
        """Rank 0: the precision in one line, and the MFU denominator: the measured matmul peak of
        one worker in the compute dtype (emo_ray.perf, cached per machine) times the workers."""
        precision, how = self.precision, self.precision.how()
        peak = peak_flops(self.cfg, precision)
        print(f"emo-ray: train.precision={self.t.precision} -> {precision.name}" + (f" ({how})" if how else ""), flush=True)
        return peak

    def _open_sink(self, objective, precision: TrainPrecision, peak: float | None, step: int) -> MlflowSink:
        t = self.t
        sink = MlflowSink(self.inputs.tracking_uri, self.inputs.mlflow_run_id, self.rank == 0)
        if self.rank == 0:
            sink.describe({"train.precision_resolved": precision.name},
                          {tracking.tags.PEAK_FLOPS_PER_WORKER: f"{peak:.4g}" if peak else "unmeasured"})
            sink.describe({"train.chunked_loss": bool(objective.chunked),
                           "train.trainable_params": trainable_parameters(self.engine.module)},
                          {tracking.tags.RESUMED_FROM_STEP: step})
            sink.resume()  # an earlier attempt (worker restart, restarted driver) may have logged steps
            if t.cost_embedding_model and objective.cost_embedding_shape:
                sink.describe({"train.cost_embedding_shape": list(objective.cost_embedding_shape)}, {})
        return sink

    def export(self, out) -> None:
        """The Hugging Face folder of the current weights (collective under ZeRO-3)."""
        save_hf(self.engine, self.cfg, out, self.inputs.model_path, self.rank)

    def train(self) -> dict:
        """Steps until ``train.max_steps``; the last step's metrics."""
        import ray.train

        t, rank = self.t, self.rank
        self.engine.train()
        metrics: dict = {}
        last_save = time.monotonic()  # the time basis of train.checkpoint_every_minutes
        while self.stepper.step_no < t.max_steps:
            metrics = self.stepper.step()
            step = self.stepper.step_no
            if self.sink.errors:  # MLflow calls that failed so far: counted, never raised (emo_ray/train/sink.py)
                metrics[ERRORS_METRIC] = float(self.sink.errors)
            if rank == 0 and (step % t.log_every == 0 or step == t.max_steps):
                self.sink.log({k: v for k, v in metrics.items() if k not in ("step", "epoch")}, step, prefix="train/")
            self._stop_if_diverged(step, metrics)
            if t.eval_every and step % t.eval_every == 0 and step < t.max_steps:
                val = self._validate(step, metrics)
                self.best.offer(val, step, self.export)
            due = checkpoint_due(step, t.max_steps, every_steps=t.checkpoint_every, every_minutes=t.checkpoint_every_minutes,
                                 since_last_s=time.monotonic() - last_save)
            if t.checkpoint_every_minutes > 0:  # only then can the ranks disagree (their clocks)
                due = rank0_decides(due, self.engine.device)
            if due:
                save_checkpoint(self.engine, step, self.stepper.consumed, metrics, rank)
                last_save = time.monotonic()
            elif step % t.log_every == 0 and step < t.max_steps:
                ray.train.report(metrics)
        return metrics

    def _stop_if_diverged(self, step: int, metrics: dict) -> None:
        # Loss is averaged over ranks and the grad norm is global: every rank decides alike.
        diverged = self.guard.check(step, metrics["loss"], metrics.get("grad_norm"), tokens=self.stepper.tokens,
                                    skipped_steps=self.stepper.skipped_steps)
        if diverged:
            if self.rank == 0:
                self.sink.describe({}, {tracking.tags.FAILURE: diverged})
                self.sink.close()
            raise TrainingDiverged(diverged)  # no checkpoint, no validation, no export

    def _validate(self, step: int, metrics: dict) -> dict:
        """Validation at ``step``, into ``metrics`` and (rank 0) MLflow when it scored any token."""
        from emo_ray.train.validation import validate

        val = validate(self.engine, self.inputs.validation_blocks, self.rank, self.world, self.t.micro_batch_size)
        if val["val_tokens"] > 0:
            metrics.update(val)
            if self.rank == 0:
                self.sink.log({k.removeprefix("val_"): v for k, v in val.items()}, step, prefix="val/")
        return val

    def finish(self, metrics: dict) -> None:
        """The final validation (and best-checkpoint candidate), then the final checkpoint with the
        exported model, after the queued metrics reached MLflow."""
        t, step = self.t, self.stepper.step_no
        val = self._validate(step, metrics)
        if val["val_tokens"] <= 0:  # no validation tokens: no val metrics at all (never a perfect 0 loss)
            metrics["val_tokens"] = 0.0
        self.best.offer(val, step, self.export)
        best = self.best.metrics()
        metrics.update(best)
        if best and self.rank == 0:
            self.sink.log({"best_loss": best["val_best_loss"], "best_step": best["val_best_step"]}, step, prefix="val/")
        self.sink.close()  # the queued metrics reach MLflow before the final report ends the run
        save_checkpoint(self.engine, step, self.stepper.consumed, metrics, self.rank, final=True,
                        weights_only=t.final_checkpoint == "weights",
                        export=lambda out: self.best.export_final(out, self.export))
        if self.best.enabled and t.final_checkpoint == "weights" and self.rank == 0:
            # the final checkpoint holds the best export and cannot be trained further: one copy is enough
            remove_best(self.inputs.best_model_dir)
