"""What every command shares: its config loaded and checked (``load``), the usage error, the
end-of-run summary."""
from __future__ import annotations

from pathlib import Path

EXIT_CONFIG = 2


class UsageError(Exception):
    """A problem with what the user asked for: printed as one line, exit code 2."""


def split_overrides(config: str | None, overrides: list[str]) -> tuple[str | None, list[str]]:
    """``emo-ray eval model=x`` has no config: a first positional with '=' is an override."""
    if config and "=" in config and not Path(config).exists():
        return None, [config, *overrides]
    return config, list(overrides)


def guess_kind(path: str) -> str:
    from emo_ray.sweep.spec import sweep_config_path
    from emo_ray.typed_config import read_yaml

    try:
        tree = read_yaml(sweep_config_path(path))
    except Exception:
        tree = read_yaml(path)
    if "grid" in tree or "train_config" in tree:
        return "sweep"
    if "oracle" in tree and isinstance(tree["oracle"], str):
        return "sample-corpus"
    if {"source", "prefix_tokens", "gen_tokens"} <= tree.keys():  # a corpus definition (generation.corpora)
        return "corpus"
    if tree.keys() & {"icl", "generation", "mauve", "oracle", "execution", "icl_enabled", "generation_enabled"} \
            or isinstance(tree.get("model"), str):
        return "eval"
    return "train"


def load(kind: str, config: str | None, overrides: list[str], *, preflight: bool = True):
    """The validated typed config of ``kind``; any problem raises ``ConfigError``. With
    ``preflight`` (commands that will run), its tracking store is also checked now (a server that
    does not answer: one line in seconds, before the data is read or any model loads)."""
    from emo_ray.config import ConfigError, load_config
    from emo_ray.evaluation.config import load_eval_config
    from emo_ray.inference.oracle_corpus import load_oracle_corpus_config
    from emo_ray.sweep.spec import load_sweep_config

    loader = {"train": load_config, "eval": load_eval_config, "sweep": load_sweep_config,
              "sample-corpus": load_oracle_corpus_config}[kind]
    try:
        cfg = loader(config, overrides)
    except ConfigError:
        raise
    except ValueError as e:  # a registry's own "not a supported ..." error
        raise ConfigError(str(e)) from None
    uri = getattr(getattr(cfg, "tracking", None), "tracking_uri", None)
    if preflight and uri is not None:
        from emo_ray import tracking

        tracking.check_store(tracking.tracking_uri(uri or None))
    return cfg


def print_summary(name: str, *args) -> None:
    """The console module draws the end-of-run summary; a plain fallback keeps the CLI usable."""
    try:
        from emo_ray import console

        fn = getattr(console, name)
    except (ImportError, AttributeError):
        print(*[a for a in args if not hasattr(a, "__dataclass_fields__") or hasattr(a, "metrics")], sep="\n")
        return
    fn(*args)
