"""Driver side of a fine-tuning run, in phases (the setup -> main -> fit shape of litgpt's recipes):

1. prepare the model and the data, checked against each other (``prepare.py``);
2. open the run: the Ray run and MLflow run to continue or start (``run_record.py``), the MLflow
   run opened with its params, the run record written beside the checkpoints;
3. build the trainer: Ray Train's ``TorchTrainer``, its workers given one ``WorkerInputs`` record;
4. run it (``finalize.fit_or_storage_fault``);
5. finalize: the exported model recorded on the MLflow run, the finished run in the run record.

    from emo_ray.config import load_config
    from emo_ray.train import fit
    result = fit(load_config("configs/tiny_smoke.yaml"))
"""
from __future__ import annotations

import os

from emo_ray import console, placement, ray_runtime, tracking
from emo_ray import storage as storage_lib
from emo_ray.config import Config
from emo_ray.train.finalize import finalize, fit_or_storage_fault
from emo_ray.train.lifecycle import FitResult, TrainingInterrupted
from emo_ray.train.open_run import OpenedRun, RunSlot, open_run, resolve_slot
from emo_ray.train.prepare import PreparedInputs, default_run_name, prepare_inputs, ray_datasets
from emo_ray.train.run_record import allow_changed_config as _allow_changed, already_finished

# Ray Train's controller polls every 2 s by default and report() waits for it; its worker group
# must start within 60 s by default, which a loaded 2-core box (workers importing torch and
# DeepSpeed while other jobs run) misses: seen as WorkerGroupStartupTimeoutError in a sweep.
RAY_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2", "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "600",
           "DS_ACCELERATOR": "", "TOKENIZERS_PARALLELISM": "false"}


def ray_env(cfg: Config) -> dict[str, str]:
    env = {k: os.environ.get(k, v) for k, v in RAY_ENV.items()}
    env["DS_ACCELERATOR"] = os.environ.get("DS_ACCELERATOR") or ("cuda" if cfg.ray.use_gpu else "cpu")
    return env


def init_ray(cfg: Config, *, local_resources: dict | None = None, concurrent_runs: int = 1) -> bool:
    """Join the configured / ``$RAY_ADDRESS`` cluster, or start a local Ray (with
    ``local_resources`` as custom resources, and CPUs for ``concurrent_runs`` runs of ``cfg``).
    Returns True when it started a local Ray. (``emo_ray.ray_runtime.start_ray`` does the work.)"""
    # Local Ray: logical CPUs for every worker plus one for Ray Data, even on 2 cores (workers
    # set their own thread counts).
    need = concurrent_runs * (cfg.ray.num_workers * cfg.ray.cpus_per_worker + 1)
    env = ray_env(cfg)
    if not cfg.ray.address and not os.environ.get("RAY_ADDRESS"):
        # One machine, nothing to be preempted: Ray Train's preemption watcher (an actor per run,
        # polling node drain state) only adds a core_worker error line at start-up here.
        env.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", os.environ.get("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0"))
    return ray_runtime.start_ray(address=cfg.ray.address, num_cpus=int(-(-need // 1)), env=env,
                                 resources=local_resources)


def scaling_config(cfg: Config, world: int, cluster_config: str | None = placement.AUTOSCALER_CONFIG):
    """Ray Train's workers: one GPU each and, on GPUs, all on one node (STRICT_PACK: the cluster
    has no EFA, NCCL between nodes would be TCP) of the accelerator type the memory model says
    the run fits (emo_ray.placement; none without an autoscaler config)."""
    import ray.train

    gpu = cfg.ray.use_gpu
    return ray.train.ScalingConfig(
        num_workers=world,
        use_gpu=gpu,
        resources_per_worker={"CPU": cfg.ray.cpus_per_worker, **({"GPU": 1} if gpu else {})},
        placement_strategy="STRICT_PACK" if gpu else "PACK",
        accelerator_type=placement.trial_accelerator(cfg, cluster_config) if gpu else None,
    )


def fit(cfg: Config, *, callbacks: list | None = None, mlflow_run_id: str | None = None,
        tags: dict | None = None, progress: bool | None = None,
        allow_changed_config: bool | None = None) -> FitResult:
    """Run one fine-tuning job end to end; raises on failure (the MLflow run ends FAILED).

    ``callbacks``: extra Ray Train callbacks (a sweep passes ``TuneReportCallback``).
    ``mlflow_run_id``: continue this MLflow run instead of opening a new one (a resumed trial).
    ``tags``: extra MLflow run tags (a sweep passes ``emo_ray.trial_id``, ``emo_ray.preset``...).
    ``progress``: draw the training bar on this console; default: yes, unless this runs inside a
    Ray task or actor (a Tune trial), whose console is the sweep's.
    A local Ray started here is stopped at the end, so nothing Ray forwards lands after the caller's
    summary.
    A ``ray.run_name`` that has FINISHED is never reopened: with ``ray.rerun_finished=skip`` the
    result describes that run (``already_finished``) and nothing runs. Ctrl-C ends the MLflow run
    KILLED and raises ``TrainingInterrupted`` (its message: the step reached and how to resume).
    """
    console.prepare_process_env()
    os.environ.setdefault("DS_ACCELERATOR", ray_env(cfg)["DS_ACCELERATOR"])  # before deepspeed is imported
    import ray

    storage = storage_lib.resolve(cfg.ray.storage_path or "runs")  # local folder or s3:// etc.
    finished = already_finished(cfg, storage, tracking.tracking_uri(cfg.tracking.tracking_uri))
    if finished is not None:
        return finished  # ray.rerun_finished=skip: nothing is prepared, opened or written
    prepared = prepare_inputs(cfg)  # everything that can be wrong with the inputs fails here
    slot = resolve_slot(cfg, storage, mlflow_run_id, _allow_changed(cfg, allow_changed_config), tags)
    if slot.finished is not None:
        return slot.finished  # ray.rerun_finished=skip: nothing runs, nothing is written
    opened, connected_here, interrupted = OpenedRun(), not ray.is_initialized(), False
    run_name = None if slot.mlflow_run_id else (
        cfg.tracking.run_name or default_run_name(cfg, prepared.packed.stats["train_tokens"]))
    try:
        with tracking.run(run_name, run_id=slot.mlflow_run_id, tags=slot.tags) as run:
            open_run(cfg, prepared, slot, run, opened)
            show = progress if progress is not None else not console.in_ray_worker()
            trainer, bar = _build_trainer(cfg, prepared, slot, opened, callbacks, show)
            result = _train(trainer, bar, storage_lib.join(slot.storage, opened.ray_run_name))
            return finalize(cfg, prepared, slot, opened, result)
    except KeyboardInterrupt:  # Ctrl-C: tracking.run ended the MLflow run KILLED
        interrupted = True
        run_id = opened.run_id
        raise TrainingInterrupted(run_id and tracking.last_step(run_id, slot.uri),
                                  opened.ray_run_name or slot.ray_name or f"emo-ray-{run_id}",
                                  run_id, named=bool(cfg.ray.run_name)) from None
    except Exception as e:
        if opened.run_id:  # the failure line (or the traceback) names what a resume needs
            e.emo_ray_context = f"MLflow run {opened.run_id} FAILED; ray.run_name={opened.ray_run_name}"
            e.add_note(f"emo-ray: {e.emo_ray_context}")
        raise
    finally:
        # The local Ray this run started; after Ctrl-C also a cluster connection made here (its
        # controller and workers are this driver's actors).
        if opened.started_ray or (interrupted and connected_here and ray.is_initialized()):
            ray.shutdown()


def _build_trainer(cfg: Config, prepared: PreparedInputs, slot: RunSlot, opened: OpenedRun,
                   callbacks: list | None, show: bool):
    """Phase 3: Ray started or joined, the datasets built, and ``(TorchTrainer, progress bar or None)``."""
    import mlflow
    import ray.data
    import ray.train
    from ray.train.torch import TorchTrainer

    from emo_ray.train.progress import TrainProgress
    from emo_ray.train.worker import train_loop_per_worker
    from emo_ray.train.worker_inputs import WorkerInputs

    name, world = opened.ray_run_name, cfg.ray.num_workers
    if show:
        print(f"emo-ray: {cfg.train.loss} on {cfg.model.name} ({prepared.n_params:,} parameters), "
              f"{prepared.packed.stats['train_tokens']:,} training tokens, {cfg.train.max_steps} steps on "
              f"{world} worker(s); MLflow run {opened.run_name}, ray.run_name={name}", flush=True)
    opened.started_ray = init_ray(cfg)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # same blocks per rank on every attempt
    if not console.verbose():
        ctx.enable_progress_bars = False  # Ray Data's split progress, per run and attempt
        ctx.print_on_execution_start = False
    train_ds, validation_blocks = ray_datasets(prepared.packed)
    inputs = WorkerInputs(cfg=cfg, model_path=prepared.model_path, tracking_uri=slot.uri, mlflow_run_id=opened.run_id,
                          validation_blocks=validation_blocks, train_blocks_per_worker=prepared.blocks_per_worker,
                          cost_embedding_model_path=prepared.cost_model_path,
                          best_model_dir=storage_lib.join(slot.storage, name, "best_model"))
    bar = TrainProgress(cfg.train.max_steps, desc=f"train {cfg.train.loss}") if show else None
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=inputs.loop_config(),
        scaling_config=scaling_config(cfg, world),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=slot.storage,
            failure_config=ray.train.FailureConfig(max_failures=cfg.ray.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.train.keep_checkpoints),
            callbacks=[*(callbacks or []), *([bar.callback] if bar else [])],
            logging_config=console.train_logging_config(),
        ),
        datasets={"train": train_ds},
    )
    mlflow.set_tags({"ray.run_name": name, "ray.storage_path": slot.storage})
    return trainer, bar


def _train(trainer, bar, run_dir: str):
    """Phase 4: the workers train; a worker's error is raised here."""
    if bar:
        with bar:
            result = fit_or_storage_fault(trainer, run_dir)
    else:
        result = fit_or_storage_fault(trainer, run_dir)
    if result.error:
        raise result.error
    return result


