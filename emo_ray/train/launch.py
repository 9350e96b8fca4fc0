"""Driver side of a fine-tuning run: validate everything, open the MLflow run, start Ray Train.

    from emo_ray.config import load_config
    from emo_ray.train import fit
    result = fit(load_config("configs/tiny_smoke.yaml"))
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from emo_ray import console, placement, ray_runtime, tracking
from emo_ray import storage as storage_lib
from emo_ray.config import Config, ConfigError, expand_path, to_flat, to_yaml
from emo_ray.train.lifecycle import (FINISHED_KEY, RERUN_OF_RAY_RUN_TAG, RERUN_OF_TAG, TrainingInterrupted,  # noqa: F401
                                     finished_record, finished_run, fit_interruptible, rerun_slot)

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
    """Final metrics as Ray Train reported them (plain names: ``loss``, ``val_ppl``...)."""
    checkpoint_path: str | None
    hf_model_path: str | None
    """The exported Hugging Face folder: a local path, or a URI (``s3://...``) on remote storage."""
    ray_run_name: str
    n_params: int = 0
    """Parameters of the model, counted from its config on the meta device."""
    run_name: str = ""
    """The MLflow run's name."""
    tracking_uri: str = ""
    experiment_id: str = ""
    already_finished: bool = False
    """True when ``ray.run_name`` had finished already and nothing ran (``ray.rerun_finished=skip``):
    the fields describe that finished run."""


def ray_env(cfg: Config) -> dict[str, str]:
    env = {k: os.environ.get(k, v) for k, v in RAY_ENV.items()}
    env["DS_ACCELERATOR"] = os.environ.get("DS_ACCELERATOR") or ("cuda" if cfg.ray.use_gpu else "cpu")
    return env


API_SERVER_ENV = ray_runtime.API_SERVER_ENV
_free_port = ray_runtime.free_port


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


def _short_model(name: str) -> str:
    return name.rstrip("/").split("/")[-1]


def default_run_name(cfg: Config, train_tokens: int) -> str:
    """``{objective}-{model}-{tokens}tok-s{seed}``, e.g. ``emo-smollm2-135m-65536tok-s42``."""
    return f"{cfg.train.loss}-{_short_model(cfg.model.name)}-{train_tokens}tok-s{cfg.train.seed}"


def _expand_data_path(value: str) -> str:
    parts = []
    for p in str(value).split(","):
        p = p.strip()
        if not p or p.startswith("hf:") or storage_lib.is_uri(p):
            parts.append(p)
        else:
            parts.append(os.path.abspath(expand_path(p)))
    return ",".join(parts)


def _dataset_name(path: str) -> str:
    first = path.split(",")[0]
    if first.startswith("hf:"):
        return first[3:]
    p = Path(first)
    return f"{p.parent.name}/{p.stem}" if p.suffix else p.name


def run_params(cfg: Config, model_path: str, n_params: int, stats: dict) -> dict:
    """The run's params: the flattened config with data paths expanded, and what the driver
    found out (model folder and size, data volume)."""
    flat = to_flat(cfg)
    for k in ("data.train", "data.validation"):
        if flat.get(k):
            flat[k] = _expand_data_path(flat[k])
    return {**flat, "model.path": model_path, "model.n_params": n_params,
            **{f"data.{k}": v for k, v in stats.items()}}


def _checkpoint_uri(storage: str, ckpt_path: str) -> str:
    """The checkpoint as a path or URI a reader elsewhere can open: Ray reports paths on a
    remote filesystem without their scheme (``bucket/key``)."""
    if storage_lib.is_uri(storage) and not storage_lib.is_uri(ckpt_path):
        return f"{storage.split('://', 1)[0]}://{ckpt_path.lstrip('/')}"
    return ckpt_path


def _exported_model(checkpoint, ckpt_uri: str | None) -> str | None:
    """The final checkpoint's exported Hugging Face folder (``hf/``) as a path or URI, or None
    when the run exported none. Looked up on the checkpoint's own filesystem
    (``checkpoint.filesystem``: the one Ray wrote it to, local, ``s3://`` or any other), never as
    a local path."""
    if checkpoint is None or not ckpt_uri:
        return None
    marker = f"{checkpoint.path.rstrip('/')}/hf/config.json"
    return storage_lib.join(ckpt_uri, "hf") if storage_lib.exists(marker, filesystem=checkpoint.filesystem) else None


def _record_model(run_id: str, run_name: str, ckpt_uri: str | None, hf: str | None, n_params: int, cfg: Config) -> None:
    """Make the fine-tuned model visible from the run: tags (``hf_model_path`` is what
    ``emo-ray-eval model=mlflow:<run>`` reads), a small ``model/reference.json`` artifact, and an
    MLflow external LoggedModel whose source is this run (the weights stay in Ray's storage,
    local or s3, and are not copied)."""
    import mlflow

    model_tags = {tracking.tags.CHECKPOINT_PATH: ckpt_uri, tracking.tags.HF_MODEL_PATH: hf}
    mlflow.set_tags({k: v for k, v in model_tags.items() if v})
    if not hf:
        return
    mlflow.log_dict({"hf_model_path": hf, "checkpoint_path": ckpt_uri, "format": "huggingface-causal-lm",
                     "load": f"transformers.AutoModelForCausalLM.from_pretrained({hf!r})",
                     "base_model": cfg.model.name, "n_params": n_params}, "model/reference.json")
    try:
        run = mlflow.get_run(run_id)
        existing = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list",
                                               filter_string=f"source_run_id = '{run_id}'")
        if any(m.source_run_id == run_id for m in existing):
            return  # a resumed run: its model is recorded already
        mlflow.create_external_model(
            name=run_name or f"model-{run_id[:8]}", source_run_id=run_id, model_type="huggingface-causal-lm",
            tags={tracking.tags.HF_MODEL_PATH: hf, tracking.tags.OBJECTIVE: cfg.train.loss,
                  tracking.tags.MODEL: cfg.model.name},
            params={"model.n_params": str(n_params), "base_model": cfg.model.name},
        )
    except Exception as e:  # noqa: BLE001 - an older server without logged models: the tags remain
        mlflow.set_tag(tracking.tags.LOGGED_MODEL_ERROR, str(e)[:500])


RUN_RECORD = "emo_ray_run.json"
"""Next to Ray's checkpoints (``<storage>/<ray.run_name>/``): the config that was trained, the
MLflow run that records it, and the driver that runs it."""
# Keys that do not change what is trained: where and how often things are written, Ray and MLflow.
_NEUTRAL = {"train.log_every", "train.checkpoint_every", "train.keep_checkpoints", "train.debug_fail_at_step",
            "train.final_checkpoint"}
_NEUTRAL_PREFIXES = ("ray.", "tracking.")
RESUME_CHANGED_ENV = "EMO_RAY_RESUME_CHANGED_CONFIG"


def trained_config(cfg: Config) -> dict:
    """The flattened config minus the keys that do not change the trained weights (JSON values)."""
    import json

    flat = json.loads(json.dumps(to_flat(cfg), default=str))
    return {k: v for k, v in flat.items() if k not in _NEUTRAL and not k.startswith(_NEUTRAL_PREFIXES)}


def changed_keys(old: dict, new: dict) -> list[str]:
    """Keys whose value differs. A key the old record lacks (a field added since it was written,
    e.g. ``data.format``) counts as that field's default, so a newer emo_ray can resume a run an
    older one started when nothing that trains changed."""
    defaults = trained_config(Config())
    return sorted(k for k in set(old) | set(new) if old.get(k, defaults.get(k)) != new.get(k, defaults.get(k)))


def read_run_record(storage: str, name: str) -> dict | None:
    import json

    path = storage_lib.join(storage, name, RUN_RECORD)
    if not storage_lib.exists(path):
        return None
    return json.loads(storage_lib.read_text(path))


def write_run_record(storage: str, name: str, record: dict) -> None:
    import json

    storage_lib.write_text(storage_lib.join(storage, name, RUN_RECORD), json.dumps(record, indent=1, sort_keys=True))


def check_resume(cfg: Config, record: dict | None, *, allow_changed: bool) -> list[str]:
    """Resuming ``ray.run_name`` with a config that changes what was trained is refused (a
    ``ConfigError`` naming the keys) unless ``allow_changed``; returns the changed keys."""
    if not record or "config" not in record:
        return []
    changed = changed_keys(record["config"], trained_config(cfg))
    if changed and not allow_changed:
        shown = ", ".join(f"{k} ({record['config'].get(k)!r} -> {trained_config(cfg).get(k)!r})" for k in changed[:8])
        raise ConfigError(
            f"ray.run_name={cfg.ray.run_name!r} was trained with another config; it differs in {shown}"
            f"{' ...' if len(changed) > 8 else ''}. Use another ray.run_name, or set {RESUME_CHANGED_ENV}=1 "
            "to continue its checkpoint anyway"
        )
    return changed


def check_storage_writable(storage: str) -> None:
    """A local storage folder must be creatable and writable before the MLflow run opens."""
    if storage_lib.is_uri(storage):
        return
    path = Path(storage)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".emo_ray_write_probe.{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"ray.storage_path {storage} is not writable: {e.strerror or e}") from None


def _driver_alive(record: dict) -> bool:
    """Whether another process of this host still drives the run a record names."""
    pid = record.get("driver_pid")
    return bool(tracking.driver_alive(pid, record.get("driver_host"))) and str(pid) != str(os.getpid())


def _continue_run(record: dict, uri: str) -> str | None:
    """The MLflow run a stored Ray run belongs to, if it still exists. One left RUNNING by a
    driver that is gone (SIGKILL) is continued and tagged so; one whose driver still runs is a
    concurrent start of the same run: refused."""
    try:
        run = tracking.client(uri).get_run(record["mlflow_run_id"])
    except Exception:  # noqa: BLE001 - deleted or another store: a new MLflow run
        return None
    if run.info.lifecycle_stage != "active":
        return None
    if run.info.status == "RUNNING":
        if _driver_alive(record):
            raise ConfigError(f"ray.run_name is being trained right now by process {record.get('driver_pid')} "
                              f"(MLflow run {run.info.run_id})")
        tracking.client(uri).set_tag(run.info.run_id, tracking.tags.STALE_RUN_RECOVERED,
                                  f"driver {record.get('driver_pid')}@{record.get('driver_host')} gone; resumed")
    return run.info.run_id


def resolve_run(cfg: Config, storage: str, uri: str, mlflow_run_id: str | None, *,
                allow_changed: bool) -> tuple[str, str | None, dict, FitResult | None]:
    """``(Ray run name, MLflow run to continue or None, extra run tags, finished run or None)``.

    The same ``ray.run_name`` with the same config continues its Ray run and MLflow run (after a
    SIGKILL, Ctrl-C or failure); a changed config is refused unless allowed (then a new MLflow run
    continues the checkpoint). A FINISHED run is never reopened: ``ray.rerun_finished=skip`` hands
    it back as it is (``already_finished``: nothing runs, nothing is written), ``new`` trains a new
    Ray run ``<name>-rerunK`` whose MLflow run is tagged with the finished one."""
    name = cfg.ray.run_name
    record = read_run_record(storage, name) if name else None
    changed = check_resume(cfg, record, allow_changed=allow_changed)
    if changed:  # explicitly allowed: a new MLflow run (its params are the new config) that says so
        return name, mlflow_run_id, {tracking.tags.RESUMED_WITH_CHANGED_CONFIG: ",".join(changed)[:5000],
                                     tracking.tags.RESUMED_FROM_RUN: record.get("mlflow_run_id", "")}, None
    done = finished_run(record, uri)
    tags: dict = {}
    if done and cfg.ray.rerun_finished == "skip":
        return name, None, {}, _finished_result(done, name, record, uri)
    if done:
        tags = {RERUN_OF_TAG: done["mlflow_run_id"], RERUN_OF_RAY_RUN_TAG: name}
        name, record = rerun_slot(storage, name, read_run_record, uri)
        mlflow_run_id = None
    if record and not mlflow_run_id and record.get("mlflow_run_id") and record.get("tracking_uri") == uri:
        mlflow_run_id = _continue_run(record, uri)  # the same Ray run continues its MLflow run
    return name, mlflow_run_id, tags, None


def already_finished(cfg: Config, storage: str, uri: str) -> FitResult | None:
    """The finished run a rerun of ``cfg`` would hand back (``ray.rerun_finished=skip``, same
    config), read before any data is prepared: a finished run's rerun costs nothing."""
    record = read_run_record(storage, cfg.ray.run_name) if cfg.ray.run_name else None
    if cfg.ray.rerun_finished != "skip" or not record or changed_keys(record.get("config") or {}, trained_config(cfg)):
        return None
    done = finished_run(record, uri)
    return _finished_result(done, cfg.ray.run_name, record, uri) if done else None


def _finished_result(done: dict, name: str, record: dict, uri: str) -> FitResult:
    return FitResult(done["mlflow_run_id"], done.get("metrics") or {}, done.get("checkpoint_path"),
                     done.get("hf_model_path"), name, n_params=done.get("n_params") or 0,
                     run_name=done.get("run_name") or "", tracking_uri=record.get("tracking_uri") or uri,
                     experiment_id=done.get("experiment_id") or "", already_finished=True)


def check_vocab(packed, model_path: str) -> None:
    """Every token id the tokenizer produced must index the model's embedding (a tokenizer of
    another model fails here, not with an IndexError in a worker minutes later)."""
    from transformers import AutoConfig

    vocab = getattr(AutoConfig.from_pretrained(model_path), "vocab_size", None)
    top = max((int(b.max()) for b in (packed.train, packed.validation) if getattr(b, "size", 0)), default=-1)
    if vocab and top >= vocab:
        raise ConfigError(f"the tokenizer produced token id {top}, but the model at {model_path} has "
                          f"vocab_size={vocab}: tokenizer and model do not match")


def check_cost_model(cfg: Config) -> str | None:
    """The sweep pre-flight's form of ``_check_cost_embedding_model``: the cost head fetched (a hub
    model: config and head shard only, into the shared cache) or one ConfigError, before any trial."""
    from emo_ray.models import materialize

    return _check_cost_embedding_model(cfg, materialize(cfg.model.name))


def _check_cost_embedding_model(cfg: Config, model_path: str) -> str | None:
    """``train.cost_embedding_model``, materialised once here (a hub model: only its config and the
    shard holding its head, into the shared cache the workers read), and its vocabulary checked against
    the trained model's (hidden sizes may differ); None when the run uses its own head or its
    objective has no cost embedding (then the setting is ignored, like ``train.cost_embedding``)."""
    from emo_ray.losses import get_spec

    if not cfg.train.cost_embedding_model or not get_spec(cfg.train.loss).needs_cost_embedding:
        return None
    from emo_ray.models import materialize
    from emo_ray.models.cost_embedding import fetch_cost_head, head_vocab_size

    try:
        path = materialize(cfg.train.cost_embedding_model)
        if not Path(path).is_dir():  # a hub id: only its config and the head's shard, fetched once here
            path = fetch_cost_head(path)
    except FileNotFoundError as e:
        raise ConfigError(f"train.cost_embedding_model: {e}") from None
    other, own = head_vocab_size(path), head_vocab_size(model_path)
    if other != own:
        raise ConfigError(f"train.cost_embedding_model {cfg.train.cost_embedding_model!r} has vocab_size={other}, "
                          f"but the trained model {cfg.model.name!r} has vocab_size={own}: they must be equal")
    return path


def drop_superseded_checkpoints(result) -> list[str]:
    """With ``train.final_checkpoint=weights``, once the run ended with its final weights
    committed, delete the full DeepSpeed checkpoints Ray Train still keeps beside them
    (``keep_checkpoints``): nothing resumes from them any more (a restarted driver stops at the
    final checkpoint) and for 13B each is 156 GB of EFS (issue 27.4). Returns the deleted paths."""
    final = result.checkpoint
    if final is None:
        return []
    dropped = []
    for ckpt, _metrics in getattr(result, "best_checkpoints", None) or []:
        if ckpt.path != final.path:
            ckpt.filesystem.delete_dir(ckpt.path)
            dropped.append(ckpt.path)
    return dropped


def _fit_or_storage_fault(trainer, run_dir: str):
    """``trainer.fit()`` (Ctrl-C-aware: ``fit_interruptible``). A checkpoint the storage refused (a full disk, an unwritable folder;
    issue 25.3) ends the run FAILED with its ``emo_ray.failure`` tag and one line naming the path
    and the cause (``StorageFault``); no partial folder is left (a resume never sees one) and the
    same command resumes from the last complete checkpoint. Other errors pass unchanged."""
    import mlflow

    from emo_ray.train.checkpoint_io import remove_partial

    try:
        return fit_interruptible(trainer)
    except Exception as e:
        fault = storage_lib.storage_fault_line(e)
        if not fault:
            raise
    remove_partial(run_dir)
    mlflow.set_tag(tracking.tags.FAILURE, f"StorageFault: {fault}"[:5000])
    raise storage_lib.StorageFault(f"{fault}; rerun the same command to resume from the last complete checkpoint") from None


def _check_model_fits(cfg: Config, model_path: str) -> None:
    from transformers import AutoConfig

    mc = AutoConfig.from_pretrained(model_path)
    limit = getattr(mc, "max_position_embeddings", None) or getattr(mc, "n_positions", None)
    if limit and cfg.data.block_size > limit:
        raise ConfigError(f"data.block_size {cfg.data.block_size} exceeds the model's {limit} positions")


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
    import ray.data
    import ray.train
    from ray.train.torch import TorchTrainer

    from emo_ray.data import prepare_blocks
    from emo_ray.models import load_tokenizer, materialize
    from emo_ray.models.size import count_parameters
    from emo_ray.train.worker import train_loop_per_worker

    finished = already_finished(cfg, storage_lib.resolve(cfg.ray.storage_path or "runs"),
                                tracking.tracking_uri(cfg.tracking.tracking_uri))
    if finished is not None:
        return finished  # ray.rerun_finished=skip: nothing is prepared, opened or written
    # Everything that can be wrong with the inputs fails here, before any process starts.
    model_path = materialize(cfg.model.name)
    _check_model_fits(cfg, model_path)
    n_params = count_parameters(model_path)
    packed = prepare_blocks(cfg.data, load_tokenizer(model_path))
    check_vocab(packed, model_path)
    cost_model_path = _check_cost_embedding_model(cfg, model_path)
    if cfg.train.select_checkpoint == "best_val_loss" and not len(packed.validation):
        raise ConfigError("train.select_checkpoint=best_val_loss: the validation data holds no block of "
                          f"data.block_size={cfg.data.block_size} tokens")
    world = cfg.ray.num_workers
    per_worker = len(packed.train) // world
    if per_worker < cfg.train.micro_batch_size:
        raise ConfigError(
            f"{len(packed.train)} training blocks across {world} workers leave fewer than "
            f"train.micro_batch_size={cfg.train.micro_batch_size} per worker"
        )

    storage = storage_lib.resolve(cfg.ray.storage_path or "runs")  # local folder or s3:// etc.
    check_storage_writable(storage)
    uri = tracking.setup(cfg.tracking.tracking_uri, cfg.tracking.experiment)
    if allow_changed_config is None:
        allow_changed_config = cfg.ray.resume_changed_config or \
            os.environ.get(RESUME_CHANGED_ENV, "") not in ("", "0", "false")
    ray_name, mlflow_run_id, resume_tags, finished = resolve_run(cfg, storage, uri, mlflow_run_id,
                                                                 allow_changed=allow_changed_config)
    if finished is not None:
        return finished  # ray.rerun_finished=skip: nothing runs, nothing is written
    try:  # runs left RUNNING by a driver of this host that is gone end KILLED, with the reason
        import mlflow

        tracking.close_stale_runs(mlflow.get_experiment_by_name(cfg.tracking.experiment).experiment_id, uri,
                                  keep=mlflow_run_id)
    except Exception:  # noqa: BLE001 - housekeeping must never stop a run
        pass
    all_tags = {tracking.tags.KIND: tracking.tags.KIND_TRAINING, tracking.tags.OBJECTIVE: cfg.train.loss,
                tracking.tags.MODEL: cfg.model.name,
                **tracking.provenance_tags(), **tracking.driver_tags(), **resume_tags, **(tags or {})}
    if cfg.tracking.parent_run_id:
        all_tags[tracking.tags.PARENT_RUN_ID] = cfg.tracking.parent_run_id
    run_name = None if mlflow_run_id else (cfg.tracking.run_name or default_run_name(cfg, packed.stats["train_tokens"]))
    started_ray, connected_here, interrupted = False, not ray.is_initialized(), False
    run_id = name = None  # known once the run is open: the interrupt and failure lines name them
    try:
        with tracking.run(run_name, run_id=mlflow_run_id, tags=all_tags) as run:
            import mlflow

            run_id = run.info.run_id
            run_name = run.info.run_name
            params = run_params(cfg, model_path, n_params, packed.stats)
            if cost_model_path:
                params["train.cost_embedding_model_path"] = cost_model_path
            if mlflow_run_id:  # a continued run: params cannot change; differing neutral keys become a tag
                old = mlflow.get_run(run_id).data.params
                differ = sorted(k for k, v in params.items() if k in old and old[k] != str(v)[:6000])
                if differ:
                    mlflow.set_tag(tracking.tags.RESUMED_WITH_CHANGED_PARAMS,
                                   ", ".join(f"{k}={params[k]}" for k in differ)[:5000])
                params = {k: v for k, v in params.items() if k not in differ}
            tracking.log_params_flat(params)
            mlflow.log_text(to_yaml(cfg), "config.yaml")
            try:
                tracking.log_dataset(packed.train, name=_dataset_name(params["data.train"]),
                                     source=params["data.train"].split(",")[0], context="training",
                                     tags={"block_size": cfg.data.block_size})
                if len(packed.validation):
                    val_src = params.get("data.validation") or params["data.train"]
                    tracking.log_dataset(packed.validation, name=_dataset_name(val_src) + "/validation",
                                         source=val_src.split(",")[0], context="validation",
                                         tags={"block_size": cfg.data.block_size})
            except Exception as e:  # noqa: BLE001 - a dataset record must never stop a run
                mlflow.set_tag(tracking.tags.DATASET_LOG_ERROR, str(e)[:500])
            name = ray_name or f"emo-ray-{run_id}"
            import socket

            run_record = {"config": trained_config(cfg), "mlflow_run_id": run_id, "tracking_uri": uri,
                          "driver_pid": os.getpid(), "driver_host": socket.gethostname()}
            write_run_record(storage, name, run_record)
            show = progress if progress is not None else not console.in_ray_worker()
            if show:
                print(f"emo-ray: {cfg.train.loss} on {cfg.model.name} ({n_params:,} parameters), "
                      f"{packed.stats['train_tokens']:,} training tokens, {cfg.train.max_steps} steps on "
                      f"{world} worker(s); MLflow run {run_name}, ray.run_name={name}", flush=True)
            started_ray = init_ray(cfg)
            ctx = ray.data.DataContext.get_current()
            ctx.execution_options.preserve_order = True  # same blocks per rank on every attempt
            if not console.verbose():
                ctx.enable_progress_bars = False  # Ray Data's split progress, per run and attempt
                ctx.print_on_execution_start = False
            if packed.train_mask is None:
                train_ds = ray.data.from_numpy(packed.train)
                validation_blocks = packed.validation
            else:  # data.format=instruction: a second column, the loss mask
                import numpy as np

                from emo_ray.train.worker import MASK_COLUMN

                # One (n, 2, T) array split into two columns: the ids and their mask stay one row.
                train_ds = ray.data.from_numpy(np.stack([packed.train, packed.train_mask.astype(np.int64)], axis=1))
                train_ds = train_ds.map_batches(lambda b: {"data": b["data"][:, 0], MASK_COLUMN: b["data"][:, 1]},
                                                batch_format="numpy").materialize()  # before the workers hold the CPUs
                validation_blocks = {"data": packed.validation, MASK_COLUMN: packed.validation_mask}
            from emo_ray.train.progress import TrainProgress

            bar = TrainProgress(cfg.train.max_steps, desc=f"train {cfg.train.loss}") if show else None
            trainer = TorchTrainer(
                train_loop_per_worker,
                train_loop_config={
                    "config": to_flat(cfg),
                    "model_path": model_path,
                    "tracking_uri": uri,
                    "mlflow_run_id": run_id,
                    "validation_blocks": validation_blocks,
                    "train_blocks_per_worker": per_worker,
                    "cost_embedding_model_path": cost_model_path,
                    "best_model_dir": storage_lib.join(storage, name, "best_model"),
                },
                scaling_config=scaling_config(cfg, world),
                run_config=ray.train.RunConfig(
                    name=name,
                    storage_path=storage,
                    failure_config=ray.train.FailureConfig(max_failures=cfg.ray.max_failures),
                    checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.train.keep_checkpoints),
                    callbacks=[*(callbacks or []), *([bar.callback] if bar else [])],
                    logging_config=console.train_logging_config(),
                ),
                datasets={"train": train_ds},
            )
            mlflow.set_tags({tracking.tags.RAY_RUN_NAME: name, tracking.tags.RAY_STORAGE_PATH: storage})
            if bar:
                with bar:
                    result = _fit_or_storage_fault(trainer, storage_lib.join(storage, name))
            else:
                result = _fit_or_storage_fault(trainer, storage_lib.join(storage, name))
            if result.error:
                raise result.error
            if cfg.train.final_checkpoint == "weights":
                drop_superseded_checkpoints(result)
            ckpt = _checkpoint_uri(storage, result.checkpoint.path) if result.checkpoint else None
            hf = _exported_model(result.checkpoint, ckpt)
            _record_model(run_id, run_name, ckpt, hf, n_params, cfg)
            final = {k: v for k, v in (result.metrics or {}).items() if isinstance(v, (int, float))}
            out = FitResult(run_id, final, ckpt, hf, name, n_params=n_params, run_name=run_name, tracking_uri=uri,
                            experiment_id=run.info.experiment_id)
            write_run_record(storage, name, {**run_record, FINISHED_KEY: finished_record(out)})
            return out
    except KeyboardInterrupt:  # Ctrl-C: tracking.run ended the MLflow run KILLED
        interrupted = True
        raise TrainingInterrupted(run_id and tracking.last_step(run_id, uri), name or ray_name or f"emo-ray-{run_id}",
                                  run_id, named=bool(cfg.ray.run_name)) from None
    except Exception as e:
        if run_id:  # the failure line (or the traceback) names what a resume needs
            e.emo_ray_context = f"MLflow run {run_id} FAILED; ray.run_name={name}"
            e.add_note(f"emo-ray: {e.emo_ray_context}")
        raise
    finally:
        # The local Ray this run started; after Ctrl-C also a cluster connection made here (its
        # controller and workers are this driver's actors).
        if started_ray or (interrupted and connected_here and ray.is_initialized()):
            ray.shutdown()
