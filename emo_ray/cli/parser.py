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

from emo_ray.cli.help import LazyHelp
from emo_ray.cli.listing import LISTINGS

KINDS = ("train", "eval", "sweep", "sample-corpus")


def _version() -> str:
    from importlib import metadata

    def v(pkg: str) -> str:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return "-"

    deps = ", ".join(f"{p} {v(p)}" for p in ("torch", "ray", "deepspeed", "transformers", "mlflow"))
    return f"emo-ray {v('emo_ray')} ({deps})"


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
                           epilog=LazyHelp(kind) if kind else None)
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
