"""``emo-ray``: one command, one grammar (a typed YAML config plus ``key=value`` overrides).

    emo-ray train configs/tiny_smoke.yaml train.loss=mixce train.loss_kwargs='{gamma: 0.8}'
    emo-ray eval configs/eval/quick.yaml model=mlflow:<run_id>
    emo-ray sweep cpu-small grid.seeds='[0, 1]' --dry-run
    emo-ray aggregate <sweep parent run id>
    emo-ray report <sweep name or parent run id> tracking.tracking_uri=sqlite:///mlflow.db [--alpha 0.001]
    emo-ray rescore <run id, sweep name or parent run id> mauve.num_buckets=50
    emo-ray show-config configs/smollm2_wikitext2.yaml ray.num_workers=1
    emo-ray ls [losses|sweeps|configs|tasks|corpora|models]
    emo-ray sample-corpus configs/oracle/cpu_sample.yaml sizes.train=512

``emo-ray COMMAND --help`` lists every field of that command's config with its default and doc.
A config error (unknown key, wrong type, value out of range) is one line on stderr and exit code
2, before Ray, MLflow or any model starts.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

EXIT_CONFIG = 2
KINDS = ("train", "eval", "sweep", "sample-corpus")


class UsageError(Exception):
    """A problem with what the user asked for: printed as one line, exit code 2."""


def _version() -> str:
    from importlib import metadata

    def v(pkg: str) -> str:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return "-"

    deps = ", ".join(f"{p} {v(p)}" for p in ("torch", "ray", "deepspeed", "transformers", "mlflow"))
    return f"emo-ray {v('emo_ray')} ({deps})"


def _config_defaults(kind: str):
    from emo_ray.config import Config
    from emo_ray.evaluation.config import EvalConfig
    from emo_ray.sweep.spec import SweepConfig

    from emo_ray.inference.oracle_corpus import OracleCorpusConfig

    return {"train": Config, "eval": EvalConfig, "sweep": SweepConfig, "sample-corpus": OracleCorpusConfig}[kind]()


def _fields_help(kind: str) -> str:
    from emo_ray.typed_config import help_text

    return help_text(_config_defaults(kind), f"{kind} config fields")


class _IntermixedParser(argparse.ArgumentParser):
    """A subcommand parser that takes flags anywhere among its positionals: with plain argparse
    ``sweep cpu-small --dry-run grid.seeds=[0]`` fails, because the ``overrides`` list is closed
    (empty) at the first flag. The top-level parser cannot parse intermixed (its subcommand is a
    positional of nargs PARSER), but argparse hands each subcommand's arguments to that
    subcommand's own ``parse_known_args``, so intermixing there covers every command."""

    _inner = False

    def parse_known_args(self, args=None, namespace=None):
        if self._inner:  # parse_known_intermixed_args calls back in (Python <= 3.12)
            return super().parse_known_args(args, namespace)
        self._inner = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inner = False


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="emo-ray", description=__doc__, formatter_class=fmt)
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show per-rank reports and library warnings (quiet by default)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_IntermixedParser)

    def add(name: str, help_: str, kind: str | None, config_help: str, optional_config: bool = False):
        # Field docs go to the epilog lazily (importing the configs is cheap, not free).
        p = sub.add_parser(name, help=help_, description=help_, formatter_class=fmt,
                           epilog=_LazyHelp(kind) if kind else None)
        p.add_argument("config", nargs="?" if optional_config else None, help=config_help)
        p.add_argument("overrides", nargs="*", default=[], help="key=value overrides (values are YAML), e.g. train.lr=1e-4")
        p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                       help="show per-rank reports and library warnings")
        return p

    add("train", "fine-tune on Ray Train + DeepSpeed, log to MLflow", "train", "training config (emo-ray ls configs)")
    add("eval", "evaluate a model, folder or mlflow:<run_id> (MAUVE, oracle ppl, ROUGE, ICL)", "eval",
        "evaluation config (configs/eval/*.yaml); omit for the paper's defaults", optional_config=True)
    p = add("sweep", "run a scaling-law sweep on Ray Tune (objectives x models x data x seeds)", "sweep",
            "sweep config: a path or a name in configs/sweeps/ (emo-ray ls sweeps)")
    p.add_argument("--dry-run", action="store_true", help="print the trial grid and compute estimate, run nothing")
    p.add_argument("--resume", action="store_true", help="continue a stopped sweep: finished trials are kept")
    add("sample-corpus", "sample the oracle experiment's corpus (paper 4.1.3) on Ray Data", "sample-corpus",
        "corpus sampling config (configs/oracle/*_sample.yaml)")
    p = add("show-config", "print the resolved config (train, eval or sweep) and exit", None,
            "any config file, or a sweep name")
    p.add_argument("--kind", choices=KINDS, help="config kind (default: guessed from the file)")
    p = sub.add_parser("aggregate", help="rebuild a sweep's scaling-law figure and fits from MLflow",
                       description="Re-run the report of a finished (or partly finished) sweep: its Figure 1, "
                                   "tables and fits, logged under report/ on the parent run.")
    p.add_argument("parent_run_id", help="the sweep's MLflow parent run id")
    _store_args(p)
    p = sub.add_parser("report", help="render the paper's tables and Figure 1 of a sweep from MLflow",
                       description="Tables 1-3 and Figure 1 with intervals and significance vs MLE, as Markdown, "
                                   "CSV and PNG, logged under report/ on the sweep's parent run.")
    p.add_argument("sweep", help="the sweep's name or its MLflow parent run id")
    _store_args(p)
    p.add_argument("--alpha", type=float, default=0.001,
                   help="significance level of the marks, after Holm correction (paper: p < 0.001; default: %(default)s)")
    p.add_argument("--out", default=None, help="also keep the files in this folder")
    p.add_argument("--delta", type=float, default=None,
                   help="the MAUVE difference the power plan sizes seeds for (default: the paper's +0.10, Table 1)")
    p = sub.add_parser("rescore", help="re-score MAUVE of a stored run or sweep under other MAUVE settings",
                       description="MAUVE, MAUVE*, frontier integral and the human ceiling again, from the logged "
                                   "features (no resampling), logged under eval/rescore/<tag>/ (docs/mauve.md).")
    p.add_argument("ref", help="an evaluation run id, or a sweep's name or parent run id (all its finished trials)")
    p.add_argument("overrides", nargs="*", default=[],
                   help="mauve.key=value (values are YAML), e.g. mauve.num_buckets=50; tracking.tracking_uri=<store>")
    _store_args(p)
    p = sub.add_parser("ls", help="list losses, sweeps, configs, ICL tasks, corpora or models")
    p.add_argument("what", nargs="?", choices=LISTINGS, help="what to list (default: everything)")
    sub.add_parser("losses", help="same as: ls losses")
    return parser


def _store_args(p: argparse.ArgumentParser) -> None:
    """The MLflow store of a command that reads runs: ``tracking.tracking_uri=...`` as in every
    other command (``overrides``; rescore's also carry ``mauve.*``), ``--tracking-uri`` its alias."""
    if not any(a.dest == "overrides" for a in p._actions):
        p.add_argument("overrides", nargs="*", default=[], metavar="tracking.tracking_uri=STORE",
                       help="MLflow store, the key every command takes (default: $MLFLOW_TRACKING_URI or ./mlflow.db)")
    p.add_argument("--tracking-uri", default=None, help="alias of tracking.tracking_uri=STORE")


class _LazyHelp(str):
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


def _split_overrides(config: str | None, overrides: list[str]) -> tuple[str | None, list[str]]:
    """``emo-ray eval model=x`` has no config: a first positional with '=' is an override."""
    if config and "=" in config and not Path(config).exists():
        return None, [config, *overrides]
    return config, list(overrides)


def _guess_kind(path: str) -> str:
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


# --------------------------------------------------------------------------------------------
# subcommands


def cmd_train(args) -> int:
    from emo_ray.train import fit

    cfg = load("train", args.config, args.overrides)
    result = fit(cfg)
    if result.already_finished:  # ray.rerun_finished=skip: a finished run is never reopened
        from emo_ray import console

        print(console.finished_rerun_line(result), flush=True)
        return 0
    _summary("print_fit_summary", result, cfg)
    return 0


def cmd_eval(args) -> int:
    from emo_ray.evaluation.run import evaluate_and_log

    config, overrides = _split_overrides(args.config, args.overrides)
    cfg = load("eval", config, overrides)
    run_id, result = evaluate_and_log(cfg.model, cfg)
    _summary("print_eval_summary", run_id, result, cfg)
    return 0


def cmd_sweep(args) -> int:
    from emo_ray.sweep.runner import describe, run_sweep

    sweep = load("sweep", args.config, args.overrides, preflight=not args.dry_run)  # a dry run opens no store
    print(describe(sweep), flush=True)
    if args.dry_run:
        return 0
    from emo_ray.report import sweep_end

    summary = run_sweep(sweep, resume=args.resume, report=sweep_end)  # the report ends the sweep
    _summary("print_sweep_summary", summary, sweep)
    return 0


def cmd_sample_corpus(args) -> int:
    from emo_ray.inference.oracle_corpus import output_path, sample_corpus

    cfg = load("sample-corpus", args.config, args.overrides)
    record = sample_corpus(cfg)
    counts = ", ".join(f"{s} {v['paragraphs']}" for s, v in record["splits"].items())
    print(f"oracle corpus of {cfg.oracle} in {output_path(cfg)}: {counts} paragraphs", flush=True)
    return 0


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


def cmd_aggregate(args) -> int:
    # One Figure 1 path (issue 23): re-aggregating a sweep is re-running its report.
    from emo_ray.report import report_and_log
    from emo_ray.report.collect import ReportError

    uri, _ = _read_store(args, "aggregate")
    # ReportError: unknown run, nothing to aggregate yet
    with _store_errors(f"run {args.parent_run_id!r} in {uri}", f"run {args.parent_run_id!r}", ReportError):
        report = report_and_log(args.parent_run_id, uri)
    _print_fits(report.summary)
    return 0


def cmd_report(args) -> int:
    from emo_ray.report import report_and_log
    from emo_ray.report.collect import ReportError

    uri, _ = _read_store(args, "report")
    kw = {} if args.delta is None else {"delta_mauve": args.delta}
    # ReportError: unknown sweep, no finished child run, bad alpha; a bug keeps its traceback
    with _store_errors(f"sweep {args.sweep!r} in {uri}", f"sweep {args.sweep!r}", ReportError):
        report = report_and_log(args.sweep, uri, args.alpha, args.out, **kw)
    print(report.markdown)
    return 0


def cmd_rescore(args) -> int:
    from emo_ray.report.rescore import RescoreError, format_table, rescore
    from emo_ray.report.collect import ReportError

    uri, overrides = _read_store(args, "rescore", passthrough=True)
    # unknown run or sweep, no features artifact
    with _store_errors(f"{args.ref!r} in {uri}", repr(args.ref), ReportError, RescoreError):
        rows = rescore(args.ref, uri, overrides)
    print(format_table(rows))
    return 0


def cmd_show_config(args) -> int:
    from emo_ray import typed_config

    config, overrides = _split_overrides(args.config, args.overrides)
    kind = args.kind or (_guess_kind(config) if config else "train")
    if kind == "corpus":
        from emo_ray.config import ConfigError
        from emo_ray.evaluation.corpora import CorpusError, load_corpus_file

        if overrides:
            raise UsageError(f"{config} is a corpus definition; it takes no key=value overrides")
        try:
            print(typed_config.to_yaml(load_corpus_file(config)), end="")
        except CorpusError as e:
            raise ConfigError(str(e)) from None
        return 0
    print(typed_config.to_yaml(load(kind, config, overrides, preflight=False)), end="")
    return 0


LISTINGS = ("losses", "sweeps", "configs", "tasks", "corpora", "models")


def cmd_ls(args) -> int:
    for what in [args.what] if args.what else LISTINGS:
        if not args.what:
            print(f"{what}:")
        for line in _LIST[what]():
            print(f"  {line}" if not args.what else line)
    return 0


def _ls_losses() -> list[str]:
    from emo_ray.losses import LOSSES, has_chunked_form, hparam_ranges, hyperparameters

    width = max(map(len, LOSSES))
    out = []
    for name, spec in LOSSES.items():
        ranges = hparam_ranges(name)
        hp = ", ".join(f"{k}={v!r}" + (f" in {ranges[k]}" if k in ranges else "")
                       for k, v in hyperparameters(name).items()) or "-"
        pinned = f"   pinned: {spec.pinned}" if spec.pinned else ""
        chunked = "" if has_chunked_form(name) else "   (materialised only)"
        out.append(f"{name:{width}s}  {hp}{pinned}{chunked}")
    return out


def _ls_sweeps() -> list[str]:
    from emo_ray.sweep.spec import SWEEP_CONFIG_DIR, list_sweeps
    from emo_ray.typed_config import REPO_ROOT, read_yaml

    out = []
    for name in list_sweeps():
        path = SWEEP_CONFIG_DIR / f"{name}.yaml"
        grid = read_yaml(path).get("grid", {})
        models = ",".join(grid.get("models", []))
        out.append(f"{name:10s} {path.relative_to(REPO_ROOT)}  models={models} objectives={','.join(grid.get('objectives', {}))}")
    return out


def _ls_configs() -> list[str]:
    from emo_ray.typed_config import REPO_ROOT

    out = []
    for path in sorted((REPO_ROOT / "configs").rglob("*.yaml")):
        first = next((ln.lstrip("# ").strip() for ln in path.read_text().splitlines() if ln.startswith("#")), "")
        out.append(f"{str(path.relative_to(REPO_ROOT)):38s} {_guess_kind(str(path)):13s}  {first}")
    return out


def _ls_tasks() -> list[str]:
    from emo_ray.evaluation.icl.tasks import load_task, task_names

    return [f"{name:16s} {load_task(name).train}" for name in task_names()]


def _ls_corpora() -> list[str]:
    from emo_ray.evaluation.corpora import CORPORA

    return [f"{name:14s} {c.source}" for name, c in CORPORA.items()]


def _ls_models() -> list[str]:
    from emo_ray.models import MODELS
    from emo_ray.report.figure import human

    return [f"{name:14s} {e.source:12s} {human(e.n_params):>6s}  {e.ref}" + (f"   ({e.pip})" if e.pip else "")
            for name, e in MODELS.items()]


_LIST = {"losses": _ls_losses, "sweeps": _ls_sweeps, "configs": _ls_configs, "tasks": _ls_tasks,
         "corpora": _ls_corpora, "models": _ls_models}

COMMANDS = {"train": cmd_train, "eval": cmd_eval, "sweep": cmd_sweep, "aggregate": cmd_aggregate,
            "report": cmd_report, "rescore": cmd_rescore, "sample-corpus": cmd_sample_corpus,
            "show-config": cmd_show_config, "ls": cmd_ls}


def _summary(name: str, *args) -> None:
    """The console module draws the end-of-run summary; a plain fallback keeps the CLI usable."""
    try:
        from emo_ray import console

        fn = getattr(console, name)
    except (ImportError, AttributeError):
        print(*[a for a in args if not hasattr(a, "__dataclass_fields__") or hasattr(a, "metrics")], sep="\n")
        return
    fn(*args)


def _print_fits(agg: dict) -> None:
    print(f"scaling-law metric: {agg['metric']}")
    for f in agg.get("fits", []):
        print(f"  power law {f['axis']:8s} {f['objective']:20s} a={f['a']:.4g} b={f['b']:.4g} ({f['points']} points)")
    for note in agg.get("notes", []):
        print(f"  note: {note}")


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "losses":
        args.command, args.what = "ls", "losses"
    if getattr(args, "verbose", False):
        os.environ["EMO_RAY_VERBOSE"] = "1"  # read by the driver and forwarded to every Ray worker
    if args.command in ("train", "eval", "sweep", "aggregate", "report", "rescore", "sample-corpus"):
        from emo_ray import console

        console.prepare_process_env()  # library chatter down (MLflow, Ray, DeepSpeed) unless -v
    from emo_ray.config import ConfigError
    from emo_ray.storage import StorageFault

    early = (ConfigError, UsageError)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt as e:
        # Ctrl-C: the run ended KILLED; one line says where it stood and what a rerun resumes.
        print(f"emo-ray {args.command}: {_one_line(e) or INTERRUPTED.get(args.command, 'interrupted')}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except early as e:
        what = "config error" if isinstance(e, ConfigError) else "error"
        print(f"emo-ray {args.command}: {what}: {_one_line(e)}", file=sys.stderr)
        return EXIT_CONFIG
    except StorageFault as e:  # a checkpoint the storage refused mid-run: the run is FAILED, tagged
        print(f"emo-ray {args.command}: storage error: {_one_line(e)}", file=sys.stderr)
        return 1
    except (FileNotFoundError, FileExistsError) as e:
        # Missing data, model weights or sweep state: found in pre-flight, before any process.
        print(f"emo-ray {args.command}: {_one_line(e)}", file=sys.stderr)
        return EXIT_CONFIG
    except Exception as e:
        from emo_ray.data import DataError

        if isinstance(e, DataError):
            print(f"emo-ray {args.command}: data error: {_one_line(e)}", file=sys.stderr)
            return EXIT_CONFIG
        diverged = _diverged(e)
        if diverged:
            # Reaches the driver wrapped in Ray's worker-group error: the run is FAILED in MLflow
            # and nothing was exported; one line is all the user needs.
            context = getattr(e, "emo_ray_context", "")  # the MLflow run and ray.run_name
            print(f"emo-ray {args.command}: {diverged}" + (f" ({context})" if context else ""), file=sys.stderr)
            return EXIT_DIVERGED
        raise


EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130  # what a shell reports for a command ended by SIGINT (128 + 2)
# The line of a Ctrl-C that carries no message of its own (train and eval raise theirs).
INTERRUPTED = {"train": "interrupted; the same command again (with the same ray.run_name) resumes or starts it",
               "sweep": "interrupted; the same command with --resume continues the sweep (finished trials are kept)"}


def _diverged(e: BaseException) -> str | None:
    """The ``TrainingDiverged: ...`` line of an error raised in a training worker, if any."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        for line in str(e).splitlines():
            if "TrainingDiverged:" in line:
                return line[line.rindex("TrainingDiverged:"):].strip()
        e = e.__cause__ or e.__context__
    return None


if __name__ == "__main__":
    sys.exit(main())
