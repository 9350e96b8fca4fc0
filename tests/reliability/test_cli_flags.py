"""One grammar (issue 25.7): flags may stand anywhere among a command's ``key=value`` overrides,
and the commands that read runs (report, aggregate, rescore) take ``tracking.tracking_uri=...``
like every other command, ``--tracking-uri`` staying its alias."""
from __future__ import annotations

import pytest

from emo_ray.cli import build_parser, main
from tests.conftest import fresh_store

ORDERS = [
    ["sweep", "cpu-small", "--dry-run", "grid.seeds=[0, 1, 2]"],
    ["sweep", "--dry-run", "cpu-small", "grid.seeds=[0, 1, 2]"],
    ["sweep", "cpu-small", "grid.seeds=[0, 1, 2]", "--dry-run"],
]


@pytest.mark.parametrize("argv", ORDERS, ids=["flag-between", "flag-first", "flag-last"])
def test_sweep_dry_run_takes_its_flag_anywhere(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", "cpu-small", "--dry-run"]) == 0
    default = capsys.readouterr().out.splitlines()[0]
    assert main(argv) == 0
    first = capsys.readouterr().out.splitlines()[0]
    # cpu-small has 1 seed: 3 seeds make 3x the trials, so the override was applied.
    n = lambda line: int(line.split(": ", 1)[1].split()[0])  # "sweep 'cpu-small': N trials ..."
    assert n(first) == 3 * n(default), (default, first)
    assert not any(tmp_path.iterdir())  # a dry run writes nothing, opens no store


@pytest.mark.parametrize("command", [["train", "configs/tiny_smoke.yaml"], ["eval"], ["sweep", "cpu-small"],
                                     ["sample-corpus", "configs/oracle/cpu_sample.yaml"], ["show-config", "c.yaml"]])
def test_every_command_with_overrides_parses_flags_anywhere(command):
    parser = build_parser()
    args = parser.parse_args([*command, "-v", "a.b=1", "c.d=2"] if command != ["eval"] else ["eval", "-v", "a.b=1", "c.d=2"])
    overrides = args.overrides if command != ["eval"] else [args.config, *args.overrides]
    assert args.verbose and overrides == ["a.b=1", "c.d=2"]


def test_rescore_and_report_flags_anywhere():
    args = build_parser().parse_args(["rescore", "ref", "--tracking-uri", "sqlite:///x.db", "mauve.seed=3"])
    assert (args.ref, args.tracking_uri, args.overrides) == ("ref", "sqlite:///x.db", ["mauve.seed=3"])
    args = build_parser().parse_args(["report", "--alpha", "0.01", "s", "tracking.tracking_uri=sqlite:///x.db"])
    assert (args.sweep, args.alpha, args.overrides) == ("s", 0.01, ["tracking.tracking_uri=sqlite:///x.db"])


@pytest.fixture
def store(tmp_path, capsys):
    uri = fresh_store(tmp_path / "mlflow.db")
    capsys.readouterr()
    return uri


@pytest.mark.parametrize("form", ["key", "alias", "both"])
def test_report_takes_tracking_uri_as_every_command_does(store, form, capsys):
    given = {"key": [f"tracking.tracking_uri={store}"], "alias": ["--tracking-uri", store],
             "both": ["--tracking-uri", store, f"tracking.tracking_uri={store}"]}[form]
    assert main(["report", "no-such-sweep", *given]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    # The store was found and read: the answer is about the sweep, not about a missing store.
    assert len(err) == 1 and "neither a run id nor the name of a sweep" in err[0], err


def test_aggregate_and_rescore_take_the_key_too(store, capsys):
    assert main(["aggregate", "0123456789abcdef", f"tracking.tracking_uri={store}"]) == 2
    # the store given by the key was the one read: it knows no such run or sweep
    assert "'0123456789abcdef' is neither a run id nor the name of a sweep" in capsys.readouterr().err
    assert main(["rescore", "nope", "mauve.seed=3", f"tracking.tracking_uri={store}"]) == 2
    assert "neither a run id nor the name of a sweep" in capsys.readouterr().err


@pytest.mark.parametrize("extra,message", [
    (["train.lr=1"], "report takes no override but tracking.tracking_uri=<store>"),
    (["tracking.tracking_uri=sqlite:///elsewhere.db"], "two different stores given"),
    (["tracking.tracking_uri="], "tracking.tracking_uri must be an MLflow store URI"),
])
def test_report_refuses_other_overrides_in_one_line(store, extra, message, capsys):
    assert main(["report", "s", "--tracking-uri", store, *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
