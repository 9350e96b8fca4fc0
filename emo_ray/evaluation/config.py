"""One typed config for an evaluation: frozen dataclasses, YAML plus ``key=value`` overrides.

    cfg = load_eval_config("configs/eval/quick.yaml", ["icl.num_items=50"])

Unknown keys and wrong types fail at load time, naming the valid keys. The defaults are the
paper's settings for users with hub access (gpt2-large featurizer and oracle, all-mpnet-base-v2
retriever, all eight ICL tasks); ``configs/eval/*.yaml`` hold the offline variants.
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

REPO_ROOT = Path(__file__).resolve().parent.parent.parent


class EvalConfigError(ValueError):
    pass


def data_dir() -> str:
    """``$EMO_RAY_DATA`` or ``../shared/data`` beside the checkout."""
    return os.environ.get("EMO_RAY_DATA", str(REPO_ROOT.parent / "shared" / "data"))


def expand(path: str) -> str:
    """Expand ``${EMO_RAY_DATA}`` (defaulted as in ``data_dir``), other variables and ``~``."""
    import string

    env = {**os.environ, "EMO_RAY_DATA": data_dir()}
    try:
        return os.path.expanduser(string.Template(path).substitute(env))
    except KeyError as e:
        raise EvalConfigError(f"path {path!r} uses an unset environment variable {e}") from None


@dataclass(frozen=True)
class ExecutionConfig:
    executor: Literal["ray", "local"] = "ray"
    """``ray``: Ray Data ``map_batches`` over actor pools; ``local``: the same actor classes called
    in this process (unit tests, or inside a trial that must not start more Ray work)."""
    address: str = ""
    """``ray.init`` address; empty joins ``$RAY_ADDRESS`` or starts a local in-process cluster."""
    num_actors: int = 1
    """Actor pool size of every map stage (one model replica per actor)."""
    cpus_per_actor: float = 2.0
    """CPUs reserved per actor; also its torch thread count."""
    gpus_per_actor: float = 0.0
    """GPUs per actor on a cluster (the model then runs on ``cuda``)."""
    progress_bar: bool = True


@dataclass(frozen=True)
class GenerationConfig:
    corpora: tuple = ("wikitext-2", "webtext")
    """Names in ``emo_ray.evaluation.corpora.CORPORA`` (paper Table 4 prefix / generation lengths)."""
    num_prompts: int = 200
    """Prompts per corpus: a seeded sample of all windows (0 = all)."""
    seeds: tuple = (0, 1)
    """Sampling seeds; every score is reported as mean and std over them."""
    decoders: tuple = ("ancestral",)
    """Names in ``emo_ray.evaluation.decoders.DECODERS``; ``ancestral`` is the paper's unbiased
    sampling (top_k=0, top_p=1, temperature 1)."""
    prompt_seed: int = 0
    """Seed of the prompt sample (fixed across models so that they see the same prompts)."""
    batch_size: int = 16
    """Prompts per sampling batch (all prompts of a corpus have the same length: no padding)."""


@dataclass(frozen=True)
class MauveConfig:
    featurizer: str = "gpt2-large"
    """Causal LM whose hidden states are the MAUVE features: registry name, hub id or folder. The
    paper (and mauve-text) use gpt2-large; offline use a local model, e.g. ``smollm2-135m``."""
    pooling: Literal["last", "mean"] = "last"
    """``last``: final-layer state of the last token (what mauve-text does with gpt2-large);
    ``mean``: mean over tokens (separates human from shuffled text with small local models)."""
    max_tokens: int = 1024
    """Featurizer truncation (mauve-text's ``max_text_length``)."""
    include_prefix: bool = True
    """Featurize prompt + continuation (human and model side alike), else the continuation only."""
    num_buckets: int = 0
    """k-means clusters; 0 = mauve-text's 'auto' (n / 10)."""
    scaling_factor: float = 5.0
    kmeans_explained_var: float = 0.9
    kmeans_num_redo: int = 5
    kmeans_max_iter: int = 500
    seed: int = 25
    batch_size: int = 16
    cache: bool = True
    """Cache the human-side features on disk (keyed by featurizer, pooling and texts)."""


@dataclass(frozen=True)
class OracleConfig:
    model: str = "gpt2-large"
    """Model that scores the generations (perplexity of each continuation given its prompt)."""
    batch_size: int = 16


@dataclass(frozen=True)
class RougeConfig:
    use_stemmer: bool = True
    """Porter stemming in rouge-score. ``split_summaries`` stays off (it needs an NLTK download)."""


@dataclass(frozen=True)
class ICLConfig:
    tasks: tuple = ("sst2", "tweet_emotion", "trec", "subj", "cr", "rotten_tomatoes", "ag_news", "mmlu")
    """Task names (``emo_ray/evaluation/tasks/*.yaml``) or paths to task YAML files."""
    num_items: int = 0
    """Test items per task: a seeded sample (0 = the whole test split)."""
    seed: int = 0
    demonstrations: int = -1
    """Override of every task's demonstration count (-1: the task's own, 8 or MMLU's 5)."""
    retriever: str = "all-mpnet-base-v2"
    """Sentence-transformer for top-k retrieval: a name in ``icl.retriever.RETRIEVERS``, hub id or
    folder. The default is OpenICL's TopkRetriever default, which the paper ran."""
    retriever_batch_size: int = 64
    scorer: Literal["shared_prefix", "plain"] = "shared_prefix"
    normalization: Literal["token_mean", "openicl", "sum"] = "token_mean"
    """How a prompt's NLL becomes its perplexity score, see ``icl.predict.NORMALIZATIONS``."""
    batch_items: int = 4
    """Items per scoring forward pass."""
    skip_unavailable: bool = False
    """A task whose data cannot be loaded (e.g. a hub dataset offline) is recorded as a counted
    skip instead of failing the evaluation."""


@dataclass(frozen=True)
class TrackingConfig:
    tracking_uri: str = ""
    """MLflow store; empty: ``$MLFLOW_TRACKING_URI`` or SQLite ``./mlflow.db``."""
    experiment: str = "emo-ray-eval"
    run_name: str = ""
    log_to_source_run: bool = False
    """When the model is an MLflow run (``mlflow:<run_id>``): log on that run itself instead of a
    new run tagged with it."""


@dataclass(frozen=True)
class EvalConfig:
    model: str = "tiny-llama"
    """Registry name, hub id, local folder, or ``mlflow:<run_id>`` (its ``hf_model_path`` tag)."""
    generation_enabled: bool = True
    icl_enabled: bool = True
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    mauve: MauveConfig = field(default_factory=MauveConfig)
    oracle: OracleConfig = field(default_factory=OracleConfig)
    rouge: RougeConfig = field(default_factory=RougeConfig)
    icl: ICLConfig = field(default_factory=ICLConfig)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise EvalConfigError(f"{where}: {value!r} is not one of {list(typing.get_args(tp))}")
        return value
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(tp):
            try:
                return _coerce(value, arm, where)
            except EvalConfigError:
                pass
        raise EvalConfigError(f"{where}: {value!r} does not fit {tp}")
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    checks = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        str: lambda v: isinstance(v, str),
        tuple: lambda v: isinstance(v, (list, tuple)),
    }
    if tp not in checks:
        raise EvalConfigError(f"{where}: unsupported type {tp}")
    if not checks[tp](value):
        raise EvalConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return float(value) if tp is float else tuple(value) if tp is tuple else value


def _build(cls, data: Any, where: str = "config"):
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise EvalConfigError(f"{where}: expected a mapping, got {data!r}")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - fields
    if unknown:
        raise EvalConfigError(f"{where}: unknown key(s) {sorted(unknown)}; valid: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    return cls(**{k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()})


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_overrides(overrides: list[str]) -> dict:
    """``["icl.num_items=50", "generation.seeds=[0,1,2]"]`` -> nested dict; values are YAML."""
    tree: dict = {}
    for item in overrides:
        if "=" not in item:
            raise EvalConfigError(f"override {item!r} is not key=value")
        key, raw = item.split("=", 1)
        node = tree
        *parents, leaf = key.strip().split(".")
        for k in parents:
            node = node.setdefault(k, {})
        node[leaf] = yaml.safe_load(raw) if raw.strip() else ""
    return tree


def load_eval_config(path: str | Path | None = None, overrides: list[str] | None = None) -> EvalConfig:
    tree: dict = {}
    if path:
        path = Path(path)
        if not path.exists():
            raise EvalConfigError(f"config file {path} does not exist")
        tree = yaml.safe_load(path.read_text()) or {}
    cfg = _build(EvalConfig, _merge(tree, parse_overrides(overrides or [])))
    validate(cfg)
    return cfg


def validate(cfg: EvalConfig) -> None:
    """Cross-field checks a type cannot express; fail before any model loads."""
    from emo_ray.evaluation.corpora import get_corpus
    from emo_ray.evaluation.decoders import get_decoder

    g, i, e = cfg.generation, cfg.icl, cfg.execution
    if cfg.generation_enabled:
        for name in g.corpora:
            get_corpus(name)
        for name in g.decoders:
            get_decoder(name)
    checks = [
        (g.num_prompts >= 0, "generation.num_prompts must be >= 0"),
        (len(g.seeds) >= 1 or not cfg.generation_enabled, "generation.seeds needs at least one seed"),
        (len(set(g.seeds)) == len(g.seeds), "generation.seeds has duplicates"),
        (g.batch_size > 0 and cfg.mauve.batch_size > 0 and cfg.oracle.batch_size > 0, "batch sizes must be positive"),
        (i.num_items >= 0, "icl.num_items must be >= 0"),
        (i.batch_items > 0, "icl.batch_items must be positive"),
        (i.demonstrations >= -1, "icl.demonstrations must be >= 0 (or -1 for the task's own)"),
        (e.num_actors >= 1 and e.cpus_per_actor > 0, "execution.num_actors and cpus_per_actor must be positive"),
        (cfg.mauve.num_buckets >= 0, "mauve.num_buckets must be >= 0 (0 = auto)"),
    ]
    for ok, msg in checks:
        if not ok:
            raise EvalConfigError(msg)


def to_flat(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """``{"icl.scorer": "shared_prefix", ...}``: for MLflow params and Ray task arguments."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            out.update(to_flat(v, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = list(v) if isinstance(v, tuple) else v
    return out


def from_flat(flat: dict[str, Any]) -> EvalConfig:
    tree: dict = {}
    for k, v in flat.items():
        node = tree
        *parents, leaf = k.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return _build(EvalConfig, tree)
