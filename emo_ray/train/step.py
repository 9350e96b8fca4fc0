"""One optimizer step of a training worker, and the metrics it reports."""
from __future__ import annotations

import os
import time

import torch

from emo_ray.config import Config
from emo_ray.train.batches import compute_args
from emo_ray.train.deepspeed_setup import TrainPrecision, unscaled_grad_norm


class TrainStep:
    """``step()``: ``train.grad_accum`` micro-batches through forward + loss (under the precision's
    autocast), backward and DeepSpeed's step, and the step's metrics: loss and its parts averaged
    over the ranks, tokens summed, so every rank reports the step's numbers, not its shard's.

    ``fail_at_step``: fault injection (``train.debug_fail_at_step`` on rank 0 of a first attempt),
    the process exits at that step; 0 = never."""

    def __init__(self, engine, objective, batches, cfg: Config, precision: TrainPrecision, *, world: int,
                 step: int = 0, consumed: int = 0, peak_flops: float | None = None, fail_at_step: int = 0):
        self.engine, self.objective, self.batches = engine, objective, batches
        self.t, self.precision, self.world = cfg.train, precision, world
        self.step_no, self.consumed = step, consumed
        self.peak_flops, self.fail_at_step = peak_flops, fail_at_step
        self.n_params = sum(getattr(p, "ds_numel", p.numel()) for p in engine.module.parameters())
        self.tokens = 0.0
        """The last step's trained tokens, summed over the ranks."""

    @property
    def skipped_steps(self) -> int:
        """DeepSpeed's count of fp16 overflow-skipped steps (0 in fp32 and bf16)."""
        return int(getattr(self.engine, "skipped_steps", 0) or 0)

    def step(self) -> dict:
        engine, t = self.engine, self.t
        t0 = time.perf_counter()
        lr = engine.get_lr()[0]  # the rate this step uses (the scheduler advances in step())
        phase = dict.fromkeys(("data", "forward", "backward", "optimizer"), 0.0)  # where the step's time goes
        epoch, loss_sum, tokens, parts, stage0_norm, loss_scale = self._accumulate(phase)
        self.step_no += 1
        if self.fail_at_step and self.step_no == self.fail_at_step:
            os._exit(1)  # simulated worker death (fault-injection knob, tests only)
        dt = time.perf_counter() - t0
        mean = _mean_over_ranks({"loss": loss_sum / t.grad_accum, **parts}, self.world, engine.device, tokens)
        self.tokens = mean["tokens"]
        metrics = {
            "step": self.step_no,
            "epoch": epoch,
            **{k: v for k, v in mean.items() if k != "tokens"},
            "lr": lr,
            "tokens_per_s": mean["tokens"] / dt,
            "step_time_s": dt,
            **{f"time_{k}_s": v for k, v in phase.items()},
        }
        if self.peak_flops:  # 6 N FLOPs per trained token over the workers' measured peak
            metrics["mfu"] = 6.0 * self.n_params * metrics["tokens_per_s"] / (self.world * self.peak_flops)
        gn = engine.get_global_grad_norm()
        if gn is None and t.zero_stage == 0:
            gn = stage0_norm
        gn = unscaled_grad_norm(gn, loss_scale, self.precision, t.zero_stage)
        if gn is not None:
            metrics["grad_norm"] = float(gn)
        return metrics

    def _accumulate(self, phase: dict[str, float]) -> tuple:
        """The micro-batches of one step: ``(epoch, loss sum, tokens, loss parts, ZeRO-0 gradient
        norm, loss scale)``, with the time of each phase added to ``phase``."""
        engine, t = self.engine, self.t
        loss_sum, tokens, parts = 0.0, 0, {}
        epoch, stage0_norm, loss_scale = 0, None, None
        for _ in range(t.grad_accum):
            tp = time.perf_counter()
            epoch, ids = next(self.batches)
            ids = ids.to(engine.device)
            tp = _lap(phase, "data", tp)
            with self.precision.autocast():
                out = self.objective.compute(engine, *compute_args(ids))  # forward + loss (matmuls bf16 under autocast)
            tp = _lap(phase, "forward", tp)
            engine.backward(out.loss)  # outside autocast, as torch recommends (ZeRO's gradient reduce runs in here)
            tp = _lap(phase, "backward", tp)
            if engine.is_gradient_accumulation_boundary() and t.zero_stage == 0:
                stage0_norm = _grad_norm(engine.module)  # DeepSpeed records no global norm without ZeRO
                loss_scale = getattr(engine.optimizer, "loss_scale", None)  # before step() changes it
            engine.step()  # optimizer on this rank's partition + gather of the updated weights
            _lap(phase, "optimizer", tp)
            self.consumed += 1
            loss_sum += out.loss.item()
            tokens += out.n_tokens
            for k, v in out.metrics.items():
                parts[k] = parts.get(k, 0.0) + v / t.grad_accum
        return epoch, loss_sum, tokens, parts, stage0_norm, loss_scale


def _lap(phase: dict[str, float], key: str, since: float) -> float:
    """Add the time since ``since`` to ``phase[key]``; the new mark."""
    now = time.perf_counter()
    phase[key] += now - since
    return now


@torch.no_grad()
def _grad_norm(module) -> float:
    """The L2 norm of the (already averaged) gradients, before clipping: at ZeRO stage 0 every
    rank holds all of them, and DeepSpeed's ``get_global_grad_norm`` returns None."""
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))) if grads else 0.0


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


def peak_flops(cfg: Config, precision: TrainPrecision) -> float | None:
    """One worker's measured matmul peak (FLOP/s) in its compute dtype with its thread count,
    measured once per machine and cached (``emo_ray.perf.peak_flops``); None if it cannot be."""
    from emo_ray.perf import peak_flops as measured_peak

    try:
        return measured_peak(precision.compute_dtype, "cuda" if cfg.ray.use_gpu else "cpu", threads=torch.get_num_threads())
    except Exception:  # noqa: BLE001 - a missing denominator must never stop training
        return None
