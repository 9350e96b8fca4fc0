"""Typed configs from YAML: frozen dataclass trees, ``key=value`` overrides, strict checking.

Shared by the training config (``emo_ray.config``) and the evaluation config
(``emo_ray.evaluation.config``): unknown keys and wrong types fail with the valid choices named.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml

from emo_ray.bounds import Bounds

REPO_ROOT = Path(__file__).resolve().parent.parent


def default_data_dir() -> str:
    """``$EMO_RAY_DATA`` or ``../shared/data`` beside the checkout (what CI provides)."""
    return os.environ.get("EMO_RAY_DATA", str(REPO_ROOT.parent / "shared" / "data"))


class ConfigError(ValueError):
    pass


def fields_of(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _at(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is Annotated:  # a number with its Bounds
        base, *meta = typing.get_args(tp)
        value = coerce(value, base, where)
        for bounds in (m for m in meta if isinstance(m, Bounds)):
            if value is not None and not bounds.contains(value):
                raise ConfigError(f"{where} must {bounds.describe(integer=base is int)}, got {value!r}")
        return value
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {list(typing.get_args(tp))}")
        return value
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(tp):
            try:
                return coerce(value, arm, where)
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
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:  # tuple[int, ...]: every element typed
            return tuple(coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        return tuple(value)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where)
    raise ConfigError(f"{where}: unsupported type {tp}")


def build(cls, data: Any, where: str = "config", base=None):
    """``data`` (a mapping) -> ``cls``; keys absent from ``data`` keep ``base``'s values (or the
    class defaults). A nested section given in part keeps the rest of its parent's default for
    it: ``tracking: {run_name: x}`` in an evaluation config keeps that section's own experiment."""
    if isinstance(data, cls):
        return data
    at = f"{where}: " if where else ""
    if not isinstance(data, dict):
        raise ConfigError(f"{at}expected a mapping, got {data!r}")
    hints = _type_hints(cls)
    fields = fields_of(cls)
    unknown = set(data) - set(fields)
    if unknown:
        raise ConfigError(f"{at}unknown key(s) {sorted(unknown)}; valid: {sorted(fields)}")
    base = base if base is not None else _defaults(cls)
    missing = [] if base is not None else [k for k, f in fields.items() if k not in data and _required(f)]
    if missing:
        raise ConfigError(f"{at}missing key(s) {missing}")
    kwargs = {}
    for k, v in data.items():
        default = getattr(base, k, None) if base is not None else None
        if dataclasses.is_dataclass(hints[k]) and isinstance(v, dict):
            kwargs[k] = build(hints[k], v, _at(where, k), base=default)
        else:
            kwargs[k] = coerce(v, hints[k], _at(where, k))
    if base is not None:
        return dataclasses.replace(base, **kwargs)
    return cls(**kwargs)


@functools.lru_cache(maxsize=None)
def _type_hints(cls) -> dict:
    return typing.get_type_hints(cls, include_extras=True)  # keep Annotated: it carries the Bounds


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _defaults(cls):
    """An instance with every default, or None when some field has none."""
    try:
        return cls()
    except TypeError:
        return None


def set_dotted(tree: dict, dotted: str, value: Any) -> None:
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
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override {key.strip()}: {raw!r} is not a YAML value ({getattr(e, 'problem', e)}); "
                              "quote it for the shell, e.g. key='{gamma: 0.8}'") from None
        set_dotted(tree, key.strip(), value)
    return tree


# Fields whose value is itself a mapping (not a config section): an override replaces them whole.
MAPPING_FIELDS = frozenset({"loss_kwargs", "objectives"})


def merge(base: dict, extra: dict) -> dict:
    """Overrides into a YAML tree: sections merge key by key, values (and mapping fields) replace."""
    out = dict(base)
    for k, v in extra.items():
        nested = isinstance(v, dict) and isinstance(out.get(k), dict) and k not in MAPPING_FIELDS
        out[k] = merge(out[k], v) if nested else v
    return out


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


def resolve_config_path(path: str | Path) -> Path:
    """A config path as given, else relative to the checkout (shipped ``configs/...`` work from
    any working directory, e.g. inside a Tune trial or a ``ray job submit`` job)."""
    path = Path(path).expanduser()
    if path.exists():
        return path
    if not path.is_absolute() and (REPO_ROOT / path).exists():
        return REPO_ROOT / path
    raise ConfigError(f"config file {path} does not exist")


def read_yaml(path: str | Path) -> dict:
    """A config file as a mapping; a YAML syntax error names the file and line, in one line.
    (Parsed once per file version: a sweep builds hundreds of trial configs from one base.)"""
    import copy

    resolved = resolve_config_path(path)
    st = resolved.stat()
    return copy.deepcopy(_read_yaml(str(resolved), st.st_mtime_ns, st.st_size))


@functools.lru_cache(maxsize=256)
def _read_yaml(path: str, mtime_ns: int, size: int) -> dict:
    resolved = Path(path)
    try:
        tree = yaml.safe_load(resolved.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{resolved}{at}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{resolved}: expected a mapping of config sections, got {type(tree).__name__}")
    return tree


def load_tree(path: str | Path | None, overrides: list[str] | None, tree_overrides: dict | None = None) -> dict:
    """YAML file (optional), then a nested mapping of overrides (typed callers such as a sweep
    trial), then ``key=value`` overrides (the command line), as one plain nested dict."""
    tree: dict = read_yaml(path) if path else {}
    tree = merge(tree, tree_overrides or {})
    return merge(tree, parse_overrides(overrides or []))


def to_flat(obj) -> dict[str, Any]:
    """Nested dataclasses -> ``{"section.key": value}`` (for MLflow params and Ray configs)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            out.update({f"{f.name}.{k}": vv for k, vv in to_flat(v).items()})
        else:
            out[f.name] = v
    return out


def from_flat(cls, flat: dict[str, Any]):
    tree: dict = {}
    for k, v in flat.items():
        set_dotted(tree, k, list(v) if isinstance(v, tuple) else v)
    return build(cls, tree)


def to_yaml(obj) -> str:
    def plain(v):
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return yaml.safe_dump(plain(dataclasses.asdict(obj)), sort_keys=False)


NEUTRAL = types.MappingProxyType({"neutral": True})
"""Field metadata, ``field(default=..., metadata=NEUTRAL)``: the value does not change what a run
computes, only where, when or how it is recorded (a training run may resume with it changed). On
a section, every field of the section is neutral."""


def neutral_keys(cls, prefix: str = "") -> frozenset[str]:
    """The dotted leaf keys of the config class ``cls`` marked :data:`NEUTRAL`, by their own field
    or by a section's."""
    out: set[str] = set()
    for f in dataclasses.fields(cls):
        tp, key = _type_hints(cls)[f.name], f"{prefix}{f.name}"
        section = dataclasses.is_dataclass(tp)
        if f.metadata.get("neutral"):
            out |= {f"{key}.{k}" for k in to_flat(tp())} if section else {key}
        elif section:
            out |= neutral_keys(tp, f"{key}.")
    return frozenset(out)
