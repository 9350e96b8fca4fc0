"""Bad value per field type: every field of ``emo_ray.config.Config`` with a value of the wrong
type, and every numeric field with a value out of its range, is one stderr line and exit 2 from
``emo_ray.cli.main`` (``show-config``: the same loading as ``train``, nothing starts)."""
from __future__ import annotations

import dataclasses
import typing

import pytest

from emo_ray.cli import main
from emo_ray.config import Config

# Numeric fields for which -1 is meaningful (Ray: retry forever).
NEGATIVE_ALLOWED = {"ray.max_failures"}


def fields(cls=Config, prefix=""):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        if dataclasses.is_dataclass(t):
            yield from fields(t, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", t


def wrong_value(t) -> str:
    if t is bool:
        return "maybe"
    if t in (int, float):
        return "abc"
    if t is str:
        return "[1, 2]"
    if typing.get_origin(t) is typing.Literal:
        return "no_such_choice"
    if t is dict:
        return "5"
    if typing.get_origin(t) is tuple:
        return "{a: 1}"
    raise AssertionError(f"no wrong value for {t}: extend the probe")


ALL = list(fields())
NUMERIC = [k for k, t in ALL if t in (int, float) and k not in NEGATIVE_ALLOWED]


def _one_line_exit_2(capsys, key, value):
    rc = main(["show-config", f"{key}={value}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, (key, value, rc)
    assert len(err) == 1 and "config error" in err[0], err


def test_the_probe_covers_every_field():
    assert len(ALL) > 40 and {"train.lr", "data.block_size", "ray.num_workers", "plugins"} <= {k for k, _ in ALL}


@pytest.mark.parametrize("key,t", ALL, ids=[k for k, _ in ALL])
def test_wrong_type_is_one_line_exit_2(capsys, key, t):
    _one_line_exit_2(capsys, key, wrong_value(t))


@pytest.mark.parametrize("key", NUMERIC)
def test_out_of_range_is_one_line_exit_2(capsys, key):
    _one_line_exit_2(capsys, key, -1)
