"""The commands that read a finished record from an MLflow store: aggregate, report, rescore."""
from __future__ import annotations

import contextlib

from emo_ray.cli.common import UsageError


@contextlib.contextmanager
def _store_errors(store_label: str, label: str, *known: type[Exception]):
    """A read of an MLflow store fails as one usage line: the store's own error under
    ``store_label``, an expected one (``known``) under ``label``; anything else keeps its traceback."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as e:
        raise UsageError(f"{store_label}: {e.message}") from None
    except known as e:
        raise UsageError(f"{label}: {e}") from None


TRACKING_KEY = "tracking.tracking_uri"


def _read_store(args, command: str, passthrough: bool = False) -> tuple[str, list[str]]:
    """``(store URI, the other overrides)`` of a command that only reads runs. The store is given
    as ``tracking.tracking_uri=...`` (as to every other command) or ``--tracking-uri``, and must
    exist: MLflow would create a missing one, and a mistyped SQLite path would leave an empty
    ``mlflow.db`` behind and report an unknown run (issue 25.4). Other overrides are refused,
    unless ``passthrough`` (rescore checks its own ``mauve.*`` keys)."""
    from emo_ray import tracking
    from emo_ray.preflight import check_existing_store

    given = [args.tracking_uri] if args.tracking_uri else []
    rest = []
    for item in args.overrides:
        key, eq, value = item.partition("=")
        if eq and key.strip() == TRACKING_KEY:
            value = value.strip().strip("'\"")  # a URI as typed (a YAML parse would choke on ': ')
            if not value:
                raise UsageError(f"{TRACKING_KEY} must be an MLflow store URI, got {item!r}")
            given.append(value)
        elif passthrough:
            rest.append(item)
        else:
            raise UsageError(f"{item!r}: {command} takes no override but {TRACKING_KEY}=<store>")
    if len(set(given)) > 1:
        raise UsageError(f"two different stores given: {' and '.join(map(repr, dict.fromkeys(given)))}")
    uri = tracking.tracking_uri(given[0] if given else None)
    check_existing_store(uri, f"emo-ray {command}")
    return uri, rest


# Each command checks its store before importing the report (scipy, torch: seconds), so a typo in
# the store is one line at once.


def cmd_aggregate(args) -> int:
    uri, _ = _read_store(args, "aggregate")
    # One Figure 1 path (issue 23): re-aggregating a sweep is re-running its report.
    from emo_ray.report import report_and_log
    from emo_ray.report.collect import ReportError

    # ReportError: unknown run, nothing to aggregate yet
    with _store_errors(f"run {args.parent_run_id!r} in {uri}", f"run {args.parent_run_id!r}", ReportError):
        report = report_and_log(args.parent_run_id, uri)
    _print_fits(report.summary)
    return 0


def cmd_report(args) -> int:
    uri, _ = _read_store(args, "report")
    from emo_ray.report import report_and_log
    from emo_ray.report.collect import ReportError

    kw = {} if args.delta is None else {"delta_mauve": args.delta}
    # ReportError: unknown sweep, no finished child run, bad alpha; a bug keeps its traceback
    with _store_errors(f"sweep {args.sweep!r} in {uri}", f"sweep {args.sweep!r}", ReportError):
        report = report_and_log(args.sweep, uri, args.alpha, args.out, **kw)
    print(report.markdown)
    return 0


def cmd_rescore(args) -> int:
    uri, overrides = _read_store(args, "rescore", passthrough=True)
    from emo_ray.report.collect import ReportError
    from emo_ray.report.rescore import RescoreError, format_table, rescore

    # unknown run or sweep, no features artifact
    with _store_errors(f"{args.ref!r} in {uri}", repr(args.ref), ReportError, RescoreError):
        rows = rescore(args.ref, uri, overrides)
    print(format_table(rows))
    return 0


def _print_fits(agg: dict) -> None:
    print(f"scaling-law metric: {agg['metric']}")
    for f in agg.get("fits", []):
        print(f"  power law {f['axis']:8s} {f['objective']:20s} a={f['a']:.4g} b={f['b']:.4g} ({f['points']} points)")
    for note in agg.get("notes", []):
        print(f"  note: {note}")
