"""One typed config for a fine-tuning run: frozen dataclasses, YAML plus ``key=value`` overrides.

Unknown keys and wrong types fail at load time with the valid choices named. The tree becomes a
flat dict only at the Ray and MLflow boundaries (``to_flat``) and is rebuilt with ``from_flat``
as the first line of a worker.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from emo_ray import typed_config
from emo_ray.typed_config import (  # noqa: F401  (re-exported: the config's public API)
    REPO_ROOT, ConfigError, default_data_dir, expand_path, parse_overrides, resolve_config_path,
)


@dataclass(frozen=True)
class ModelConfig:
    name: str = "tiny-llama"
    """Registry name (see ``emo_ray.models.MODELS``), Hugging Face hub id, or local folder."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward: less memory, ~30% more compute."""


@dataclass(frozen=True)
class DataConfig:
    train: str = "${EMO_RAY_DATA}/wikitext-2/train_partial.jsonl"
    """JSON Lines or text file(s) (comma-separated), a folder of them, or ``hf:NAME[:CONFIG]:SPLIT``."""
    validation: str = ""
    """Same forms as ``train``; empty holds out ``validation_fraction`` of the train documents."""
    text_field: str = "text"
    """JSON key holding the text."""
    block_size: int = 256
    """Tokens per packed training block (official EMO scripts: 256)."""
    validation_fraction: float = 0.05
    max_train_tokens: int = 0
    """Data-volume knob: use only this many training tokens (0 = all). Seeded and nested: the
    subset for a smaller volume is a prefix of the one for a larger volume."""
    max_train_documents: int = 0
    """The same knob counted in documents (0 = all); applied before ``max_train_tokens``."""
    max_validation_blocks: int = 64
    """Cap on validation blocks scored at the end (0 = all)."""
    seed: int = 0
    """Seed of the document order (and so of the subsets and the validation hold-out)."""


@dataclass(frozen=True)
class TrainConfig:
    loss: str = "emo"
    """Objective, a name in ``emo_ray.losses.LOSSES``."""
    loss_kwargs: dict = field(default_factory=dict)
    """Hyperparameters of the objective, e.g. ``{gamma: 0.8}`` for tailr / mixce."""
    cost_embedding: Literal["fixed", "adaptive"] = "fixed"
    """EMO only: frozen pre-trained head (paper 4.2.1) or the live head."""
    loss_impl: Literal["auto", "reference", "chunked"] = "auto"
    """``chunked`` never materialises the logits; ``auto`` uses it when available and exact."""
    loss_chunk_size: int = 1024
    max_steps: int = 50
    """Optimizer steps."""
    micro_batch_size: int = 4
    """Blocks per worker per forward pass."""
    grad_accum: int = 1
    lr: float = 2e-5
    weight_decay: float = 0.0
    betas: tuple = (0.9, 0.999)
    warmup_steps: int = 0
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    min_lr_ratio: float = 0.0
    """Decay ends at ``lr * min_lr_ratio``."""
    clip_grad_norm: float = 1.0
    """0 disables clipping."""
    seed: int = 42
    zero_stage: int = 2
    """DeepSpeed ZeRO stage 0-3."""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """``auto``: bf16 on GPU, fp32 on CPU."""
    checkpoint_every: int = 0
    """Save a DeepSpeed checkpoint every N steps (0: only at the end)."""
    keep_checkpoints: int = 2
    final_checkpoint: Literal["full", "weights"] = "full"
    """What the last checkpoint holds. ``full``: the DeepSpeed state (weights, optimizer
    moments, scheduler) and the Hugging Face export, so training can continue from it.
    ``weights``: the Hugging Face export and the final metrics only, about 4x smaller with
    Adam in fp32 (5.1 -> 1.1 GB for Gemma-3-270M); what a sweep keeps per trial."""
    log_every: int = 1
    debug_fail_at_step: int = 0
    """Fault injection for tests: the rank-0 worker process exits at this step on the first
    attempt (no checkpoint restored yet). 0 = never."""


@dataclass(frozen=True)
class RayConfig:
    address: str = ""
    """``ray.init`` address; empty starts (or joins) a local Ray."""
    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    max_failures: int = 0
    """Worker-group restarts Ray Train allows before failing the run."""
    storage_path: str = ""
    """Checkpoints and Ray Train state; shared storage on a cluster. Empty: ``./runs``."""
    run_name: str = ""
    """Ray Train run name; empty derives one from the config. Reusing it resumes that run."""


@dataclass(frozen=True)
class TrackingConfig:
    tracking_uri: str = ""
    """MLflow store; empty: ``$MLFLOW_TRACKING_URI`` or SQLite ``./mlflow.db``."""
    experiment: str = "emo-ray"
    run_name: str = ""
    parent_run_id: str = ""
    """Log as a child of this MLflow run (used by sweeps)."""


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """YAML file (optional) + overrides -> validated ``Config``."""
    cfg = typed_config.build(Config, typed_config.load_tree(path, overrides))
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Cross-field checks that a type cannot express; fail before any process starts."""
    from emo_ray.losses import check_hparams

    check_hparams(cfg.train.loss, cfg.train.loss_kwargs)
    t, d, r = cfg.train, cfg.data, cfg.ray
    checks = [
        (0 <= t.zero_stage <= 3, f"train.zero_stage must be 0-3, got {t.zero_stage}"),
        (t.max_steps > 0, "train.max_steps must be positive"),
        (t.micro_batch_size > 0 and t.grad_accum > 0, "train.micro_batch_size and train.grad_accum must be positive"),
        (t.lr > 0, "train.lr must be positive"),
        (t.warmup_steps < t.max_steps or t.warmup_steps == 0, "train.warmup_steps must be below train.max_steps"),
        (d.block_size >= 2, "data.block_size must be at least 2"),
        (0.0 <= d.validation_fraction < 1.0, "data.validation_fraction must lie in [0, 1)"),
        (d.max_train_tokens >= 0 and d.max_train_documents >= 0, "data volume knobs must be >= 0"),
        (r.num_workers >= 1, "ray.num_workers must be at least 1"),
        (t.precision != "bf16" or r.use_gpu, "train.precision=bf16 needs ray.use_gpu=true (CPU runs fp32)"),
        (t.loss_chunk_size > 0, "train.loss_chunk_size must be positive"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ConfigError(msg)


def to_flat(cfg: Config) -> dict[str, Any]:
    """``{"train.loss": "emo", ...}``: for MLflow params and Ray's config dicts."""
    return typed_config.to_flat(cfg)


def from_flat(flat: dict[str, Any]) -> Config:
    return typed_config.from_flat(Config, flat)


def to_yaml(cfg: Config) -> str:
    return typed_config.to_yaml(cfg)
