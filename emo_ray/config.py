"""One typed config for a fine-tuning run: frozen dataclasses, YAML plus ``key=value`` overrides.

Unknown keys and wrong types fail at load time with the valid choices named. The tree becomes a
flat dict only at the Ray and MLflow boundaries (``to_flat``) and is rebuilt with ``from_flat``
as the first line of a worker.
"""
from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent


def default_data_dir() -> str:
    """``$EMO_RAY_DATA`` or ``../shared/data`` beside the checkout (what CI provides)."""
    return os.environ.get("EMO_RAY_DATA", str(REPO_ROOT.parent / "shared" / "data"))


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


class ConfigError(ValueError):
    pass


def _fields(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {list(typing.get_args(tp))}")
        return value
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(tp):
            try:
                return _coerce(value, arm, where)
            except ConfigError:
                pass
        raise ConfigError(f"{where}: {value!r} does not fit {tp}")
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{where}: expected null")
        return None
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            # YAML 1.1 reads `3e-4` (no dot) as a string; a user typing lr=3e-4 means a number.
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is tuple or origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(value)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    raise ConfigError(f"{where}: unsupported type {tp}")


def _build(cls, data: Any, where: str = "config"):
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = _fields(cls)
    unknown = set(data) - set(fields)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; valid: {sorted(fields)}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {k!r} is not a section")
    node[keys[-1]] = value


def parse_overrides(overrides: list[str]) -> dict:
    """``["train.loss=mixce", "train.loss_kwargs={gamma: 0.8}"]`` -> nested dict; values are YAML."""
    tree: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value")
        key, raw = item.split("=", 1)
        _set_dotted(tree, key.strip(), yaml.safe_load(raw) if raw.strip() else "")
    return tree


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "loss_kwargs" else v
    return out


def resolve_config_path(path: str | Path) -> Path:
    """A config path as given, else relative to the checkout (shipped ``configs/...`` work from
    any working directory, e.g. inside a Tune trial or a ``ray job submit`` job)."""
    path = Path(path).expanduser()
    if path.exists():
        return path
    if not path.is_absolute() and (REPO_ROOT / path).exists():
        return REPO_ROOT / path
    raise ConfigError(f"config file {path} does not exist")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """YAML file (optional) + overrides -> validated ``Config``."""
    tree: dict = {}
    if path:
        path = resolve_config_path(path)
        tree = yaml.safe_load(path.read_text()) or {}
    tree = _merge(tree, parse_overrides(overrides or []))
    cfg = _build(Config, tree)
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
    out: dict[str, Any] = {}
    for section in dataclasses.fields(cfg):
        for f in dataclasses.fields(getattr(cfg, section.name)):
            out[f"{section.name}.{f.name}"] = getattr(getattr(cfg, section.name), f.name)
    return out


def from_flat(flat: dict[str, Any]) -> Config:
    tree: dict = {}
    for k, v in flat.items():
        _set_dotted(tree, k, list(v) if isinstance(v, tuple) else v)
    return _build(Config, tree)


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(
        {k: {kk: (list(vv) if isinstance(vv, tuple) else vv) for kk, vv in v.items()} for k, v in dataclasses.asdict(cfg).items()},
        sort_keys=False,
    )


def expand_path(p: str) -> str:
    """Expand ``${EMO_RAY_DATA}``, ``~`` and other environment variables in a data path."""
    env = dict(os.environ)
    env.setdefault("EMO_RAY_DATA", default_data_dir())
    return os.path.expanduser(string_template_expand(p, env))


def string_template_expand(s: str, env: dict) -> str:
    import string

    try:
        return string.Template(s).substitute(env)
    except KeyError as e:
        raise ConfigError(f"path {s!r} uses an unset environment variable {e}") from None
