"""Run (or resume) a sweep on Ray Tune with one MLflow parent run and one child per trial."""
from __future__ import annotations

import dataclasses
import json
import os

from emo_ray import console, storage, tracking, typed_config
from emo_ray.sweep.spec import (SweepConfig, Trial, compute_flops, domain_names, eval_config, pretrained_trials,
                                 tokens_per_step, trial_config, trials)

STATE_FILE = "emo_ray_sweep.json"


def describe(sweep: SweepConfig) -> str:
    """The trial grid, the resources each trial takes and the compute estimate (``--dry-run``)."""
    rows, total = [], 0.0
    grid = trials(sweep)
    width = max(len(t.hparams or "-") for t in grid)
    for i, t in enumerate(grid):
        cfg = trial_config(sweep, t)
        flops = compute_flops(sweep, t, cfg)
        total += flops or 0.0
        rows.append(f"{i:>3}  {t.model:14s} {t.loss:12s} {t.hparams or '-':{width}s}  "
                    f"{t.tokens:>11,}  {t.seed:>4}  {cfg.train.max_steps:>6}  "
                    f"{cfg.ray.num_workers}x{'GPU' if cfg.ray.use_gpu else 'CPU'}  "
                    f"{'?' if flops is None else f'{flops:.2e}':>9}" + (f"  [{t.domain}]" if t.domain else ""))
    pre = pretrained_trials(sweep)
    for t in pre:
        rows.append(f"{len(rows):>3}  {t.model:14s} {t.loss:12s} {'-':{width}s}  (evaluation of the untrained model)"
                    + (f"  [{t.domain}]" if t.domain else ""))
    cfg0 = trial_config(sweep, grid[0])
    extra = f" + {len(pre)} pre-trained evaluations" if pre else ""
    head = (f"sweep {sweep.name!r}: {len(grid)} trials{extra}; {tokens_per_step(cfg0):,} tokens per optimizer step; "
            f"evaluation: {sweep.eval_config or 'validation perplexity only'}\n"
            f"  #  model          objective    {'hparams':{width}s}       tokens  seed   steps  workers    6·N·D")
    return "\n".join([head, *rows, f"total training compute ≈ {total:.3e} FLOPs (6·N·D)"])


TRIAL_SLOT = "emo_ray_trial_slot"
# Resident memory of a CPU trial per training worker and model parameter: fp32 weights, gradients,
# Adam moments and DeepSpeed's buffers. Measured for one worker: 40 B/param (SmolLM2-135M, 5.4 GB)
# and 36 B/param (Gemma-3-270M, 9.8 GB). The trial driver holds ~1.6 GB beside it (evaluation).
CPU_BYTES_PER_PARAM = 40
TRIAL_DRIVER_BYTES = 2 * 2**30
MIN_TRIAL_BYTES = 256 * 2**20


def trial_memory(cfg, node_memory: float | None = None) -> int:
    """Ray ``memory`` to reserve for a trial on a local CPU Ray, so that two large trials do not run
    side by side into the memory monitor (two Gemma-3-270M workers: ~20 GB of 24). Capped at the
    node's ``memory`` so that a trial larger than the machine still runs, alone. GPU trials and
    models of unknown size reserve only a token amount."""
    from emo_ray.models import n_params

    n = n_params(cfg.model.name)
    if cfg.ray.use_gpu or not n:
        return MIN_TRIAL_BYTES
    need = int(cfg.ray.num_workers * CPU_BYTES_PER_PARAM * n + TRIAL_DRIVER_BYTES)
    return need if node_memory is None else min(need, int(node_memory))


def _concurrency(cfg, res: dict) -> int:
    """Trials that fit at once in ``res`` (a resources view): GPUs per trial on a cluster, CPUs
    per trial on a laptop."""
    if cfg.ray.use_gpu:
        return max(1, int(res.get("GPU", 0) // cfg.ray.num_workers))
    # Two training workers saturate two cores; on a laptop run one trial at a time.
    return max(1, int((os.cpu_count() or 1) // (cfg.ray.num_workers * cfg.ray.cpus_per_worker)))


AUTOSCALER_CONFIG = "~/ray_bootstrap_config.yaml"
"""Where ``ray up`` leaves the cluster config on the head node (what Ray's autoscaler reads)."""


def reachable_resources(current: dict, autoscaler_config: str | None = AUTOSCALER_CONFIG) -> dict:
    """What the cluster can scale to, not what runs now: an autoscaling cluster starts with no
    GPU node, so the GPUs present when the sweep starts (0) would run its trials one at a time.
    Sums ``resources x max_workers`` over the autoscaler's node types (capped by the cluster's
    own ``max_workers``), plus the head; each resource is at least what is present now."""
    from pathlib import Path

    import yaml

    path = Path(autoscaler_config).expanduser() if autoscaler_config else None
    if path is None or not path.exists():
        return dict(current)
    conf = yaml.safe_load(path.read_text()) or {}
    types = conf.get("available_node_types", {}) or {}
    head = conf.get("head_node_type")
    budget = conf.get("max_workers")
    out: dict = {}
    left = float("inf") if budget is None else int(budget)
    # The cluster-wide worker budget goes to the node types with the most GPUs first: the upper
    # bound of what the sweep's trials (GPU-bound) can get at once.
    order = sorted(types.items(), key=lambda kv: (kv[0] != head, -(kv[1].get("resources") or {}).get("GPU", 0)))
    for name, t in order:
        res = t.get("resources", {}) or {}
        if name == head:
            n = 1
        else:
            n = int(min(int(t.get("max_workers", 0) or 0), left))
            left -= n
        for k, v in res.items():
            out[k] = out.get(k, 0) + v * n
    return {k: max(out.get(k, 0), current.get(k, 0)) for k in set(out) | set(current)}


def sweep_concurrency(sweep: SweepConfig, cfg, current: dict, autoscaler_config: str | None = AUTOSCALER_CONFIG) -> int:
    """``sweep.max_concurrent_trials`` when set, else what the reachable cluster holds at once."""
    if sweep.max_concurrent_trials:
        return sweep.max_concurrent_trials
    return _concurrency(cfg, reachable_resources(current, autoscaler_config))


def _preflight(sweep: SweepConfig, configs: list) -> None:
    """Everything a trial would fail on in its first seconds, checked once before any trial is
    scheduled or any MLflow run opened: its data files, the models' weights (offline packages
    installed?), and the models the evaluation names. (The configs themselves were validated
    when the sweep config loaded.)"""
    from emo_ray.data.sources import check_sources
    from emo_ray.models import check_available

    for data in {c.data for c in configs}:
        check_sources(data.train)
        if data.validation:
            check_sources(data.validation)
    models = set(sweep.grid.models)
    for domain in domain_names(sweep) if sweep.eval_config else ():
        ecfg = eval_config(sweep, domain=domain)
        if ecfg.generation_enabled:
            models |= {ecfg.mauve.featurizer, ecfg.oracle.model}
    for name in sorted(models):
        check_available(name)


def run_sweep(sweep: SweepConfig, *, resume: bool = False, aggregate_at_end: bool = True) -> dict:
    """Run every trial of ``sweep`` (or only the unfinished ones with ``resume``) and aggregate."""
    import mlflow
    import ray
    from ray import tune

    from emo_ray.sweep.progress import TrialProgress
    from emo_ray.sweep.trial import run_trial
    from emo_ray.train.launch import init_ray

    trained = trials(sweep)
    configs = [trial_config(sweep, t) for t in trained]
    # Pre-trained evaluations (evaluate_pretrained) run as extra Tune trials that train nothing:
    # one grid, so they share the trial slots, Tune's restore and the MLflow child-run lookup.
    grid = trained + pretrained_trials(sweep)
    cfg0 = configs[0]
    _preflight(sweep, configs)
    sweep_dir = storage.join(storage.resolve(sweep.storage_path), sweep.name)  # local folder or s3:// etc.
    state_path = storage.join(sweep_dir, STATE_FILE)
    uri = tracking.setup(sweep.tracking.tracking_uri or None, sweep.tracking.experiment)
    sweep_tree = dataclasses.asdict(sweep)

    if resume:
        if not storage.exists(state_path):
            raise FileNotFoundError(f"nothing to resume: {state_path} does not exist (run without --resume first)")
        state = json.loads(storage.read_text(state_path))
        parent_id = state["parent_run_id"]
    else:
        if storage.exists(state_path):
            raise FileExistsError(f"sweep {sweep.name!r} already exists in {sweep_dir}: pass --resume, or another name=")
        with tracking.run(sweep.name, tags={"emo_ray.kind": "sweep", "emo_ray.preset": sweep.name}) as parent:
            parent_id = parent.info.run_id
            tracking.log_params_flat({f"sweep.{k}": v for k, v in typed_config.to_flat(sweep).items()})
            mlflow.log_param("sweep.n_trials", len(grid))
            mlflow.log_text(typed_config.to_yaml(sweep), "sweep.yaml")
        storage.write_text(state_path, json.dumps({"parent_run_id": parent_id, "sweep": sweep_tree}, indent=2))

    # On a local Ray the trial concurrency is a resource, not only Tune's max_concurrent_trials:
    # Tuner.restore re-queues errored and interrupted trials as PENDING, and the limiter (which
    # only gates new trials) would let them all start at once on 2 cores.
    import torch

    local_slots = sweep.max_concurrent_trials or _concurrency(cfg0, {"GPU": torch.cuda.device_count()})
    local = init_ray(cfg0, local_resources={TRIAL_SLOT: local_slots}, concurrent_runs=local_slots)
    slots = local_slots if local else sweep_concurrency(sweep, cfg0, ray.cluster_resources())
    # Tune rejects a zero-CPU trial; the trial driver only waits on its TorchTrainer's workers.
    # On a local Ray each trial also reserves the memory its workers will take (trial_memory).
    node_memory = ray.cluster_resources().get("memory") if local else None
    memory = {t.key: trial_memory(c, node_memory) if local else MIN_TRIAL_BYTES for t, c in zip(trained, configs)}
    # An evaluation-only trial holds what a trial driver holds beside its training workers.
    memory.update({t.key: TRIAL_DRIVER_BYTES if local else MIN_TRIAL_BYTES for t in grid[len(trained):]})

    def resources(config: dict) -> tune.PlacementGroupFactory:
        bundle = {"CPU": 0.01, "memory": memory[Trial.from_dict(config["trial"]).key], **({TRIAL_SLOT: 1} if local else {})}
        return tune.PlacementGroupFactory([bundle])

    trainable = tune.with_resources(run_trial, resources)
    param_space = {
        "sweep": sweep_tree,
        "trial": tune.grid_search([t.to_dict() for t in grid]),
        "tracking_uri": uri,
        "parent_run_id": parent_id,
        "storage_path": storage.join(sweep_dir, "train"),
    }
    with tracking.run(run_id=parent_id) as parent_run:
        if resume and tune.Tuner.can_restore(storage.join(sweep_dir, "tune")):
            tuner = tune.Tuner.restore(storage.join(sweep_dir, "tune"), trainable=trainable, param_space=param_space,
                                       resume_errored=True)
        else:
            tuner = tune.Tuner(
                trainable,
                param_space=param_space,
                tune_config=tune.TuneConfig(max_concurrent_trials=slots),
                # Tune's own trial tables (config and result boxes per trial, ~80 lines a
                # trial) only with -v; the sweep's progress bar says done / running / failed.
                run_config=tune.RunConfig(name="tune", storage_path=sweep_dir, verbose=2 if console.verbose() else 0,
                                          callbacks=[TrialProgress(len(grid))]),
            )
        results = tuner.fit()
        errors = [r.error for r in results if r.error]
        mlflow.log_metrics({"trials_total": len(grid), "trials_failed": len(errors)})
        summary = {"parent_run_id": parent_id, "trials": len(grid), "failed": len(errors),
                   "mlflow_run": parent_run.info.run_id}
        if aggregate_at_end:
            from emo_ray.sweep.aggregate import aggregate_and_log

            summary["aggregate"] = aggregate_and_log(parent_id, uri, sweep.primary_metric)
        if errors:
            raise RuntimeError(f"{len(errors)} of {len(grid)} trials failed; first: {errors[0]!r}")
    return summary
