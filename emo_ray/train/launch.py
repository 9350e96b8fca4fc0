"""Driver side of a fine-tuning run: validate everything, open the MLflow run, start Ray Train.

    from emo_ray.config import load_config
    from emo_ray.train import fit
    result = fit(load_config("configs/tiny_smoke.yaml"))
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from emo_ray import storage as storage_lib
from emo_ray import tracking
from emo_ray.config import Config, ConfigError, to_flat, to_yaml

# Ray Train V2's controller polls workers every 2 s by default, and each `ray.train.report`
# waits for a poll: with a report per step that is 2 s per step. Poll faster.
# Ray Train's controller polls every 2 s by default and report() waits for it; its worker group
# must start within 60 s by default, which a loaded 2-core box (workers importing torch and
# DeepSpeed while other jobs run) misses: seen as WorkerGroupStartupTimeoutError in a sweep.
RAY_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2", "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "600",
           "DS_ACCELERATOR": "", "TOKENIZERS_PARALLELISM": "false"}


@dataclass
class FitResult:
    mlflow_run_id: str
    metrics: dict
    checkpoint_path: str | None
    hf_model_path: str | None
    ray_run_name: str


def ray_env(cfg: Config) -> dict[str, str]:
    env = {k: os.environ.get(k, v) for k, v in RAY_ENV.items()}
    env["DS_ACCELERATOR"] = os.environ.get("DS_ACCELERATOR") or ("cuda" if cfg.ray.use_gpu else "cpu")
    return env


API_SERVER_ENV = "RAY_API_SERVER_ADDRESS"


def _free_port() -> int:
    """A free loopback port for the dashboard, below the kernel's ephemeral range and above Ray's
    worker ports (10002-19999). A port from ``bind(0)`` is an ephemeral one, and the kernel can
    hand it straight to one of Ray's own processes before the dashboard binds it (seen in CI:
    "Failed to bind to 127.0.0.1:34587 because it's already occupied")."""
    import random
    import socket

    for port in random.sample(range(20000, 32000), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port in 20000-31999 for the Ray dashboard")


def init_ray(cfg: Config, *, local_resources: dict | None = None, concurrent_runs: int = 1) -> bool:
    """Join the configured / ``$RAY_ADDRESS`` cluster, or start a local Ray (with
    ``local_resources`` as custom resources, and CPUs for ``concurrent_runs`` runs of ``cfg``).
    Returns True when it started a local Ray."""
    import ray

    if ray.is_initialized():
        return False
    env = ray_env(cfg)
    os.environ.update(env)  # a local Ray inherits the driver's environment
    kwargs: dict = {"runtime_env": {"env_vars": env}, "log_to_driver": True}
    if cfg.ray.address:
        kwargs["address"] = cfg.ray.address
    elif not os.environ.get("RAY_ADDRESS"):
        # Local Ray: logical CPUs for every worker plus one for Ray Data, even on 2 cores
        # (workers set their own thread counts).
        need = concurrent_runs * (cfg.ray.num_workers * cfg.ray.cpus_per_worker + 1)
        kwargs["num_cpus"] = max(os.cpu_count() or 1, int(-(-need // 1)))
        # Ray Train V2's placement-group cleaner asks the State API (served by the dashboard)
        # whether the Train controller lives, and reads "not found" as dead. Its client finds the
        # cluster by machine-wide discovery, which picks *another* Ray when several run on one
        # machine (tests, a second sweep, a `ray start` head): it then removed our placement group
        # and killed a sweep trial's workers mid-step. So: our own dashboard, on loopback, on a
        # port we pick, and every worker of this Ray pinned to it (not the driver's environment,
        # which would redirect job-submission clients aimed at other clusters).
        port = _free_port()
        kwargs.update(include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port)
        kwargs["runtime_env"] = {"env_vars": {**env, API_SERVER_ENV: f"http://127.0.0.1:{port}"}}
        if local_resources:
            kwargs["resources"] = local_resources
    ray.init(**kwargs)
    return "num_cpus" in kwargs


def _check_model_fits(cfg: Config, model_path: str) -> None:
    from transformers import AutoConfig

    mc = AutoConfig.from_pretrained(model_path)
    limit = getattr(mc, "max_position_embeddings", None) or getattr(mc, "n_positions", None)
    if limit and cfg.data.block_size > limit:
        raise ConfigError(f"data.block_size {cfg.data.block_size} exceeds the model's {limit} positions")


def fit(cfg: Config, *, callbacks: list | None = None, mlflow_run_id: str | None = None,
        tags: dict | None = None) -> FitResult:
    """Run one fine-tuning job end to end; raises on failure (the MLflow run ends FAILED).

    ``callbacks``: extra Ray Train callbacks (a sweep passes ``TuneReportCallback``).
    ``mlflow_run_id``: continue this MLflow run instead of opening a new one (a resumed trial).
    """
    import ray
    import ray.data
    import ray.train
    from ray.train.torch import TorchTrainer

    from emo_ray.data import prepare_blocks
    from emo_ray.models import load_tokenizer, materialize
    from emo_ray.train.worker import train_loop_per_worker

    # Everything that can be wrong with the inputs fails here, before any process starts.
    model_path = materialize(cfg.model.name)
    _check_model_fits(cfg, model_path)
    packed = prepare_blocks(cfg.data, load_tokenizer(model_path))
    world = cfg.ray.num_workers
    per_worker = len(packed.train) // world
    if per_worker < cfg.train.micro_batch_size:
        raise ConfigError(
            f"{len(packed.train)} training blocks across {world} workers leave fewer than "
            f"train.micro_batch_size={cfg.train.micro_batch_size} per worker"
        )

    uri = tracking.setup(cfg.tracking.tracking_uri, cfg.tracking.experiment)
    tags = dict(tags or {})
    if cfg.tracking.parent_run_id:
        tags["mlflow.parentRunId"] = cfg.tracking.parent_run_id
    run_name = None if mlflow_run_id else (cfg.tracking.run_name or None)
    with tracking.run(run_name, run_id=mlflow_run_id, tags=tags or None) as run:
        import mlflow

        run_id = run.info.run_id
        tracking.log_params_flat({**to_flat(cfg), "model.path": model_path, **{f"data.{k}": v for k, v in packed.stats.items()}})
        mlflow.log_text(to_yaml(cfg), "config.yaml")
        name = cfg.ray.run_name or f"emo-ray-{run_id}"
        storage = storage_lib.resolve(cfg.ray.storage_path or "runs")  # local folder or s3:// etc.
        init_ray(cfg)
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # same blocks per rank on every attempt
        train_ds = ray.data.from_numpy(packed.train)
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={
                "config": to_flat(cfg),
                "model_path": model_path,
                "tracking_uri": uri,
                "mlflow_run_id": run_id,
                "validation_blocks": packed.validation,
                "train_blocks_per_worker": per_worker,
                "save_hf_model": True,
            },
            scaling_config=ray.train.ScalingConfig(
                num_workers=world,
                use_gpu=cfg.ray.use_gpu,
                resources_per_worker={"CPU": cfg.ray.cpus_per_worker, **({"GPU": 1} if cfg.ray.use_gpu else {})},
            ),
            run_config=ray.train.RunConfig(
                name=name,
                storage_path=storage,
                failure_config=ray.train.FailureConfig(max_failures=cfg.ray.max_failures),
                checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.train.keep_checkpoints),
                callbacks=list(callbacks or []),
            ),
            datasets={"train": train_ds},
        )
        mlflow.set_tags({"ray.run_name": name, "ray.storage_path": storage})
        result = trainer.fit()
        if result.error:
            raise result.error
        ckpt = result.checkpoint.path if result.checkpoint else None
        hf = str(Path(ckpt) / "hf") if ckpt and (Path(ckpt) / "hf" / "config.json").exists() else None
        mlflow.set_tags({k: v for k, v in {"checkpoint_path": ckpt, "hf_model_path": hf}.items() if v})
        final = {k: v for k, v in (result.metrics or {}).items() if isinstance(v, (int, float))}
        return FitResult(run_id, final, ckpt, hf, name)
