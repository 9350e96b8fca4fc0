"""Run (or resume) a sweep on Ray Tune with one MLflow parent run and one child per trial."""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable

from emo_ray import console, placement, storage, tracking, typed_config
from emo_ray.sweep import budget
from emo_ray.placement import AUTOSCALER_CONFIG, Placement, gpu_node_types, place, read_cluster_config
from emo_ray.sweep.spec import (SweepConfig, Trial, compute_flops, domain_names, eval_config, pretrained_trials,
                                 tokens_per_step, trial_config, trials)

STATE_FILE = "emo_ray_sweep.json"


def describe(sweep: SweepConfig) -> str:
    """The trial grid, the resources each trial takes and the compute estimate (``--dry-run``)."""
    rows, total = [], 0.0
    grid = trials(sweep)
    configs = [trial_config(sweep, t) for t in grid]
    width = max(len(t.hparams or "-") for t in grid)
    for i, (t, cfg) in enumerate(zip(grid, configs)):
        flops = compute_flops(sweep, t, cfg)
        total += flops or 0.0
        rows.append(f"{i:>3}  {t.model:14s} {t.loss:12s} {t.hparams or '-':{width}s}  "
                    f"{(f'{t.tokens:,}' if t.tokens else 'all'):>11}  {t.seed:>4}  {cfg.train.max_steps:>6}  "
                    f"{cfg.ray.num_workers}x{'GPU' if cfg.ray.use_gpu else 'CPU'}  "
                    f"{'?' if flops is None else f'{flops:.2e}':>9}" + (f"  [{t.domain}]" if t.domain else ""))
    pre = pretrained_trials(sweep)
    for t in pre:
        rows.append(f"{len(rows):>3}  {t.model:14s} {t.loss:12s} {'-':{width}s}  (evaluation of the untrained model)"
                    + (f"  [{t.domain}]" if t.domain else ""))
    cfg0 = configs[0]
    extra = f" + {len(pre)} pre-trained evaluations" if pre else ""
    head = (f"sweep {sweep.name!r}: {len(grid)} trials{extra}; {tokens_per_step(cfg0):,} tokens per optimizer step; "
            f"evaluation: {sweep.eval_config or 'validation perplexity only'}\n"
            f"  #  model          objective    {'hparams':{width}s}       tokens  seed   steps  workers    6·N·D")
    return "\n".join([head, *rows, f"total training compute ≈ {total:.3e} FLOPs (6·N·D)",
                      *budget.describe(sweep, grid, configs, pre), *describe_placement(sweep, configs)])


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


def cluster_config_for(autoscaler_config: str | None = AUTOSCALER_CONFIG) -> tuple[dict | None, str]:
    """The cluster config a sweep is planned against: the autoscaler's on the head node, else the
    repository's cluster.yaml (a dry run on a laptop), with a label for the dry run."""
    from emo_ray.typed_config import REPO_ROOT

    conf = read_cluster_config(autoscaler_config)
    if conf is not None:
        return conf, str(autoscaler_config)
    return read_cluster_config(REPO_ROOT / "cluster.yaml"), "cluster.yaml"


def trial_placements(configs: list, conf: dict | None) -> list[Placement] | None:
    """Each GPU trial's placement on ``conf``'s node types; None for CPU trials or no cluster
    config (a static cluster or one GPU box: Ray places the trials as they come)."""
    if conf is None or not configs or not configs[0].ray.use_gpu:
        return None
    nodes = gpu_node_types(conf)
    return [place(c, nodes) for c in configs]


def sweep_concurrency(sweep: SweepConfig, configs: list, current: dict,
                      autoscaler_config: str | None = AUTOSCALER_CONFIG) -> int:
    """``sweep.max_concurrent_trials`` when set; else, on an autoscaling cluster, what its node
    types hold at once, counted per node type (emo_ray.placement.concurrency: an 8-GPU trial
    cannot use two 4-GPU nodes); else what is up now."""
    if sweep.max_concurrent_trials:
        return sweep.max_concurrent_trials
    conf = read_cluster_config(autoscaler_config)
    placements = trial_placements(configs, conf)
    if placements is None:
        return _concurrency(configs[0], current)
    return placement.concurrency(placements, conf)


def trial_pins(grid: list, trained: list, configs: list, conf: dict | None) -> dict[str, dict]:
    """Trial key -> the accelerator resource its driver's bundle asks for: the driver then runs on
    its training node type, and the evaluation actors it starts ask for the same accelerator
    (emo_ray.inference.executor). A pre-trained evaluation follows its model's trained trials."""
    placements = trial_placements(configs, conf)
    if placements is None:
        return {}
    by_model = {t.model: p.accelerator for t, p in zip(trained, placements)}
    accelerator = {t.key: p.accelerator for t, p in zip(trained, placements)}
    accelerator.update({t.key: by_model.get(t.model) for t in grid[len(trained):]})
    # A token amount: the node's one accelerator_type unit is shared by everything placed there.
    return {k: {f"{placement.ACCELERATOR_PREFIX}{a}": 0.001} for k, a in accelerator.items() if a}


def describe_placement(sweep: SweepConfig, configs: list, autoscaler_config: str | None = AUTOSCALER_CONFIG) -> list[str]:
    """Dry-run lines: how many trials run at once and on which node type, per model."""
    if not configs or not configs[0].ray.use_gpu:
        return []
    conf, label = cluster_config_for(autoscaler_config)
    if conf is None:
        return ["placement: no cluster config (Ray places GPU trials as they come)"]
    placements = trial_placements(configs, conf)
    at_once = sweep.max_concurrent_trials or placement.concurrency(placements, conf)
    lines = [f"placement on {label}: {at_once} trials at once"
             + (" (max_concurrent_trials)" if sweep.max_concurrent_trials else "")
             + "; all workers of a trial on one node (STRICT_PACK)"]
    peaks: dict = {}  # per model and placement, the heaviest objective (EMO holds the cost embedding)
    for cfg, p in zip(configs, placements):
        key = (cfg.model.name, p.workers, p.accelerator, p.node_types)
        peaks[key] = max(peaks.get(key, 0.0), p.estimate_gb or 0.0) if p.estimate_gb is not None else None
    for (model, workers, accelerator, nodes), peak in peaks.items():
        where = ", ".join(f"{n.name} ({n.gpus}x {n.accelerator}: {n.gpus // workers} per node x "
                          f"{n.max_nodes} nodes)" for n in nodes)
        need = "not modelled" if peak is None else f"<= {peak:.1f} GB per GPU"
        pin = f"accelerator_type={accelerator}" if accelerator else "any GPU node"
        lines.append(f"  {model:14s} {workers}xGPU  {need:>20s}  {pin} on {where}")
    return lines


def _preflight(sweep: SweepConfig, configs: list) -> None:
    """Everything a trial would fail on in its first seconds, checked once before any trial is
    scheduled or any MLflow run opened: its data files, the models' weights (offline packages
    installed?), the models the evaluation names, and a GPU node type for every trial. (The
    configs themselves were validated when the sweep config loaded.)"""
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
            models |= {ecfg.mauve.featurizer} | ({ecfg.oracle.model} if ecfg.oracle.enabled else set())
    for name in sorted(models):
        check_available(name)
    from emo_ray.train.prepare import check_cost_model

    for cfg in _distinct_cost_models(configs):  # a gated hub head fails here, once, not in every trial
        check_cost_model(cfg)
    trial_placements(configs, read_cluster_config(AUTOSCALER_CONFIG))  # a trial no node type fits


def _distinct_cost_models(configs: list) -> list:
    """One trial config per distinct ``train.cost_embedding_model`` that its objective reads."""
    from emo_ray.losses import get_spec

    seen: dict = {}
    for c in configs:
        if c.train.cost_embedding_model and get_spec(c.train.loss).needs_cost_embedding:
            seen.setdefault(c.train.cost_embedding_model, c)
    return list(seen.values())


def _parent_run(sweep: SweepConfig, sweep_dir: str, n_trials: int, resume: bool) -> str:
    """The sweep's MLflow parent run id: opened (with the sweep's params and YAML) and written to
    the sweep's state file on a first run, read back from that file on ``resume``."""
    import mlflow

    state_path = storage.join(sweep_dir, STATE_FILE)
    sweep_tree = dataclasses.asdict(sweep)
    if resume:
        if not storage.exists(state_path):
            raise FileNotFoundError(f"nothing to resume: {state_path} does not exist (run without --resume first)")
        state = json.loads(storage.read_text(state_path))
        parent_id = state["parent_run_id"]
    else:
        if storage.exists(state_path):
            raise FileExistsError(f"sweep {sweep.name!r} already exists in {sweep_dir}: pass --resume, or another name=")
        with tracking.run(sweep.name, tags={tracking.tags.KIND: tracking.tags.KIND_SWEEP,
                                            tracking.tags.PRESET: sweep.name}) as parent:
            parent_id = parent.info.run_id
            tracking.log_params_flat({f"sweep.{k}": v for k, v in typed_config.to_flat(sweep).items()})
            mlflow.log_param("sweep.n_trials", n_trials)
            mlflow.log_text(typed_config.to_yaml(sweep), "sweep.yaml")
        storage.write_text(state_path, json.dumps({"parent_run_id": parent_id, "sweep": sweep_tree}, indent=2))
    return parent_id


def _start_ray(sweep: SweepConfig, trained: list, configs: list, grid: list) -> tuple[int, Callable]:
    """Start (or join) Ray and size the trials: how many run at once, and the Tune resources of each
    (a trial slot and its memory on a local Ray; a pin to its GPU node type on a cluster)."""
    import ray
    import torch
    from ray import tune

    from emo_ray.train.launch import init_ray

    cfg0 = configs[0]
    # On a local Ray the trial concurrency is a resource, not only Tune's max_concurrent_trials:
    # Tuner.restore re-queues errored and interrupted trials as PENDING, and the limiter (which
    # only gates new trials) would let them all start at once on 2 cores.
    local_slots = sweep.max_concurrent_trials or _concurrency(cfg0, {"GPU": torch.cuda.device_count()})
    local = init_ray(cfg0, local_resources={TRIAL_SLOT: local_slots}, concurrent_runs=local_slots)
    slots = local_slots if local else sweep_concurrency(sweep, configs, ray.cluster_resources())
    pins = {} if local else trial_pins(grid, trained, configs, read_cluster_config(AUTOSCALER_CONFIG))
    # Tune rejects a zero-CPU trial; the trial driver only waits on its TorchTrainer's workers.
    # On a local Ray each trial also reserves the memory its workers will take (trial_memory).
    node_memory = ray.cluster_resources().get("memory") if local else None
    memory = {t.key: trial_memory(c, node_memory) if local else MIN_TRIAL_BYTES for t, c in zip(trained, configs)}
    # An evaluation-only trial holds what a trial driver holds beside its training workers.
    memory.update({t.key: TRIAL_DRIVER_BYTES if local else MIN_TRIAL_BYTES for t in grid[len(trained):]})

    def resources(config: dict) -> tune.PlacementGroupFactory:
        key = Trial.from_dict(config["trial"]).key
        bundle = {"CPU": 0.01, "memory": memory[key], **({TRIAL_SLOT: 1} if local else {}), **pins.get(key, {})}
        return tune.PlacementGroupFactory([bundle])

    return slots, resources


def run_sweep(sweep: SweepConfig, *, resume: bool = False,
              report: Callable[[str, str], dict] | None = None) -> dict:
    """Run every trial of ``sweep`` (or only the unfinished ones with ``resume``). ``report`` is
    called at the end, failed trials or not, with (parent run id, tracking URI) and its answer
    joins the summary: the CLI passes ``emo_ray.report.sweep_end`` (tables, the one Figure 1, the
    MLflow view). Cross-run analysis lives in report/, a layer above: it is handed in, not imported."""
    import mlflow
    from ray import tune

    from emo_ray.sweep.progress import TrialProgress
    from emo_ray.sweep.trial import param_space as trial_param_space, run_trial

    trained = trials(sweep)
    configs = [trial_config(sweep, t) for t in trained]
    # Pre-trained evaluations (evaluate_pretrained) run as extra Tune trials that train nothing:
    # one grid, so they share the trial slots, Tune's restore and the MLflow child-run lookup.
    grid = trained + pretrained_trials(sweep)
    _preflight(sweep, configs)
    sweep_dir = storage.join(storage.resolve(sweep.storage_path), sweep.name)  # local folder or s3:// etc.
    uri = tracking.setup(sweep.tracking.tracking_uri or None, sweep.tracking.experiment)
    sweep_tree = dataclasses.asdict(sweep)
    parent_id = _parent_run(sweep, sweep_dir, len(grid), resume)
    slots, resources = _start_ray(sweep, trained, configs, grid)
    trainable = tune.with_resources(run_trial, resources)
    param_space = trial_param_space(sweep_tree, grid, uri, parent_id, storage.join(sweep_dir, "train"))
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
        # Ctrl-C ends fit() too, with trials left: the summary must not call that finished.
        finished = results.num_terminated
        mlflow.log_metrics({"trials_total": len(grid), "trials_failed": len(errors), "trials_finished": finished})
        summary = {"parent_run_id": parent_id, "trials": len(grid), "finished": finished, "failed": len(errors),
                   "mlflow_run": parent_run.info.run_id, "sweep": sweep.name}
        if report is not None:
            summary.update(report(parent_id, uri))
        if errors:
            raise RuntimeError(f"{len(errors)} of {len(grid)} trials failed; first: {errors[0]!r}")
    return summary
