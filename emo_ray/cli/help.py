"""``emo-ray COMMAND --help``: every field of that command's config with its default and its doc
(the attribute docstring under the field, the one place an option is documented)."""
from __future__ import annotations

import dataclasses

import yaml


def _config_defaults(kind: str):
    from emo_ray.config import Config
    from emo_ray.evaluation.config import EvalConfig
    from emo_ray.inference.oracle_corpus import OracleCorpusConfig
    from emo_ray.sweep.spec import SweepConfig

    return {"train": Config, "eval": EvalConfig, "sweep": SweepConfig, "sample-corpus": OracleCorpusConfig}[kind]()


def _fields_help(kind: str) -> str:
    return help_text(_config_defaults(kind), f"{kind} config fields")


class LazyHelp(str):
    """An argparse epilog rendered only when ``--help`` prints it."""

    def __new__(cls, kind: str):
        obj = super().__new__(cls, "")
        obj.kind = kind
        return obj

    def __str__(self) -> str:
        return _fields_help(self.kind)

    def __bool__(self) -> bool:
        return True

    def splitlines(self, *a, **k):
        return str(self).splitlines(*a, **k)

    def expandtabs(self, *a, **k):
        return str(self).expandtabs(*a, **k)

    def __mod__(self, other):
        return str(self) % other


def field_docs(cls) -> dict[str, str]:
    """The attribute docstrings of a config dataclass (the string literal under each field): the
    one place an option is documented, read here for ``--help``."""
    import ast
    import inspect
    import textwrap

    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
            docs[node.target.id] = " ".join(inspect.cleandoc(nxt.value.value).split())
    return docs


def describe_fields(obj, prefix: str = "") -> list[tuple[str, str, str]]:
    """``(dotted key, default as YAML, doc)`` for every leaf field of a config instance."""
    rows = []
    docs = field_docs(type(obj))
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(v):
            rows.extend(describe_fields(v, f"{key}."))
        else:
            plain = list(v) if isinstance(v, tuple) else v
            shown = yaml.safe_dump(plain, default_flow_style=True, width=10_000).strip()
            shown = shown.removesuffix("\n...").removesuffix("...").strip()
            rows.append((key, shown, docs.get(f.name, "")))
    return rows


def help_text(obj, title: str) -> str:
    """Every field of a config with its default and its doc, for ``--help``."""
    import textwrap

    lines = [f"{title} (defaults shown; set any with key=value, values are YAML):"]
    for key, default, doc in describe_fields(obj):
        lines.append(f"  {key} = {default}")
        if doc:
            lines.extend(textwrap.wrap(doc, width=96, initial_indent="      ", subsequent_indent="      "))
    return "\n".join(lines)
