"""What a person sees on the console: quiet libraries, one progress bar per thing that takes
time, and a short summary at the end.

Quiet is the default. ``EMO_RAY_VERBOSE=1`` (the CLIs' ``-v/--verbose``) brings back what the
libraries print on their own: Ray Train's per-rank ``Reporting training result N`` dumps, Ray
Data's progress blocks, MLflow's INFO lines and the known-harmless warnings filtered below. The
variable reaches Ray's workers through the runtime environment (:func:`worker_env`).

Progress: :class:`Bar` is the one bar (tqdm redrawn in place on a terminal; in a log file a line
every 10 % with n/total, elapsed and ETA). Training draws it on the driver from Ray Train's
report callback (``emo_ray.train.progress``), evaluation per stage and task (``stage``), sweeps
per trial (``emo_ray.sweep.progress``). Summaries: ``print_fit_summary(result, cfg)``,
``print_eval_summary(run_id, result, cfg)``, ``print_sweep_summary(summary, sweep)``.
"""
from __future__ import annotations

import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Mapping
from typing import Any

VERBOSE_ENV = "EMO_RAY_VERBOSE"

# Known-harmless warnings, filtered by message (never a whole category):
#  - torch 2.13's c10d logger wraps DeepSpeed's ZeRO all-gather: one FutureWarning per step and rank.
#  - Ray Data's DatasetManager constructs ExecutionOptions with a deprecated field (Ray's own code).
HARMLESS_WARNINGS = (
    (FutureWarning, r"`torch\.distributed\.all_gather_into_tensor` is deprecated"),
    (FutureWarning, r"`torch\.distributed\.reduce_scatter_tensor` is deprecated"),
    (DeprecationWarning, r"`ExecutionOptions\.exclude_resources` is deprecated"),
)
# The same for processes we run no code in (Ray Data's coordinator actors): PYTHONWARNINGS
# entries are literal message prefixes.
PYTHONWARNINGS_QUIET = ",".join([
    "ignore:`torch.distributed.all_gather_into_tensor` is deprecated",
    "ignore:`torch.distributed.reduce_scatter_tensor` is deprecated",
    "ignore:`ExecutionOptions.exclude_resources` is deprecated",
])


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


# Nothing phones home from a run: MLflow's telemetry and Ray's usage stats are off unless the
# environment says otherwise.
NO_TELEMETRY_ENV = {k: os.environ.get(k, v) for k, v in
                    {"MLFLOW_DISABLE_TELEMETRY": "true", "RAY_USAGE_STATS_ENABLED": "0"}.items()}


def worker_env() -> dict[str, str]:
    """Environment for every Ray process of a run (job runtime env): the verbosity, and when
    quiet, the switches that keep libraries from printing progress blocks and INFO lines."""
    env = {VERBOSE_ENV: "1" if verbose() else "0", **NO_TELEMETRY_ENV}
    if not verbose():
        env["MLFLOW_LOGGING_LEVEL"] = os.environ.get("MLFLOW_LOGGING_LEVEL", "WARNING")
        env["RAY_DATA_LOG_LEVEL"] = os.environ.get("RAY_DATA_LOG_LEVEL", "ERROR")
        env["HF_HUB_DISABLE_PROGRESS_BARS"] = os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        extra = os.environ.get("PYTHONWARNINGS")
        env["PYTHONWARNINGS"] = f"{extra},{PYTHONWARNINGS_QUIET}" if extra else PYTHONWARNINGS_QUIET
    return env


# Known-harmless log records, by logger and message prefix.
HARMLESS_LOG_RECORDS = (
    # Every local ray.init with the auth mode unset (token auth stays on; this only announces it).
    ("ray._private.authentication.authentication_token_setup", "Token authentication is enabled for this Ray cluster"),
)


class _DropMessages(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def filter_harmless_warnings() -> None:
    for category, message in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name, prefix in HARMLESS_LOG_RECORDS:
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) and f.prefix == prefix for f in log.filters):
            log.addFilter(_DropMessages(prefix))


def quiet_libraries() -> None:
    """In this process (driver or worker): library INFO chatter and progress bars off, known
    warnings filtered. No-op when verbose."""
    if verbose():
        return
    filter_harmless_warnings()
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow configures its loggers
    # "Downloading artifacts: 100%" per artifact read back (emo-ray report reads one per run and table)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("mlflow", "alembic", "deepspeed", "DeepSpeed", "accelerate", "datasets"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Ray Data re-reads RAY_DATA_LOG_LEVEL whenever it configures its loggers; this process may
    # have imported it already. Errors still show; "Progress bars disabled" and the like do not.
    logging.getLogger("ray.data").setLevel(os.environ.get("RAY_DATA_LOG_LEVEL", "ERROR"))
    try:
        from ray.train.v2._internal.execution import context as train_context

        # Ray Train V2 logs "Reporting training result N: TrainingReport(...)" per rank and report
        # on a logger named after its *file* (logging.getLogger(__file__)), so neither
        # LoggingConfig(log_level) nor the `ray.train` logger governs it; it propagates to the
        # worker's root logger at INFO. Raise that one logger.
        logging.getLogger(train_context.__file__).setLevel(logging.WARNING)
    except ImportError:
        pass
    try:
        import transformers.utils.logging as hf_logging

        hf_logging.disable_progress_bar()  # "Loading weights" / "Writing model shards" per rank
        hf_logging.set_verbosity_error()
    except ImportError:
        pass


def prepare_process_env() -> None:
    """Driver, before Ray starts: the workers' environment is set in this process too (a local
    Ray inherits it) and library chatter is turned down here."""
    for k, v in worker_env().items():
        if k == "PYTHONWARNINGS":
            continue  # the driver filters in-process; don't leak into unrelated subprocesses
        os.environ.setdefault(k, v)
    quiet_libraries()


def train_logging_config():
    """``RunConfig(logging_config=...)``: Ray Train's own INFO lines (worker group start, "Checkpoint
    successfully created") only when verbose."""
    import ray.train

    return ray.train.LoggingConfig(log_level="INFO" if verbose() else "WARNING")


def in_ray_worker() -> bool:
    """True inside a Ray task / actor (a Tune trial's driver function): there, the console is the
    sweep's, and a run draws no bar of its own."""
    try:
        import ray

        worker = ray._private.worker
        return ray.is_initialized() and worker.global_worker.mode == worker.WORKER_MODE
    except Exception:  # noqa: BLE001
        return False


# --------------------------------------------------------------------------------------------
# Progress bars


def _fmt_time(s: float | None) -> str:
    if s is None or not math.isfinite(s):
        return "?"
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m:02d}:{sec:02d}"


def _fmt_num(v: float) -> str:
    if isinstance(v, int):
        return str(v)
    if abs(v) >= 1e4:
        return f"{v / 1e3:.1f}k"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if v != 0 and abs(v) < 1e-2:
        return f"{v:.1e}"
    return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"


class Bar:
    """One progress bar: tqdm redrawn in place on a terminal; otherwise a line at start, every
    ``every`` fraction of the total and at the end (so logs stay short). Always shows n/total,
    elapsed and ETA."""

    def __init__(self, total: int, desc: str, *, unit: str = "it", every: float = 0.1, stream=None,
                 tty: bool | None = None, eta_from_start: bool = False):
        self.total, self.desc, self.unit, self.every = max(1, int(total)), desc, unit, every
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.n = 0
        self.t0 = time.monotonic()
        self.n0 = 0  # work done before the bar saw its first update (a resumed run)
        self.t_first: float | None = self.t0 if eta_from_start else None
        self.postfix = ""
        self._next_print = 0.0
        self._tqdm = None
        self._printed_n = -1
        self.closed = False

    def eta(self) -> float | None:
        if self.n >= self.total:
            return 0.0
        if self.t_first is None or self.n <= self.n0:
            return None
        rate = (time.monotonic() - self.t_first) / (self.n - self.n0)
        return rate * (self.total - self.n)

    def line(self) -> str:
        pct = 100.0 * self.n / self.total
        post = f"  {self.postfix}" if self.postfix else ""
        return (f"{self.desc}: {pct:3.0f}% {self.n}/{self.total} {self.unit}{post}  "
                f"[{_fmt_time(time.monotonic() - self.t0)} elapsed, ETA {_fmt_time(self.eta())}]")

    def update(self, n: int, postfix: Mapping[str, Any] | str | None = None) -> None:
        if self.closed:
            return
        n = min(max(0, int(n)), self.total)
        if self.t_first is None:
            # ETA from the first update on: start-up (Ray, model loading) is not per-step time.
            self.t_first, self.n0 = time.monotonic(), n
        if postfix is not None:
            self.postfix = postfix if isinstance(postfix, str) else "  ".join(
                f"{k} {_fmt_num(v) if isinstance(v, (int, float)) else v}" for k, v in postfix.items())
        self.n = n
        if self.tty:
            if self._tqdm is None:
                # Created at the first update, from where the work stands: its rate (and so the
                # ETA) then measures steps, not the start-up before them.
                from tqdm import tqdm

                self._tqdm = tqdm(total=self.total, initial=n, desc=self.desc, unit=self.unit, file=self.stream,
                                  dynamic_ncols=True, bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                                                                 "[{elapsed}<{remaining}{postfix}]")
            self._tqdm.set_postfix_str(self.postfix, refresh=False)
            if n >= self._tqdm.n:
                self._tqdm.update(n - self._tqdm.n)
            else:  # a restarted attempt resumed from an earlier checkpoint
                self._tqdm.n = n
                self._tqdm.refresh()
            return
        frac = n / self.total
        if (frac >= self._next_print and self.eta() is not None) or n >= self.total:
            self._print()
            if self.every > 0:
                self._next_print = (math.floor(frac / self.every + 1e-9) + 1) * self.every - 1e-9

    def _print(self) -> None:
        if self._printed_n != self.n:
            print(self.line(), file=self.stream, flush=True)
            self._printed_n = self.n

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._tqdm is not None:
            self._tqdm.close()
        elif self.n > 0:
            self._print()


# --------------------------------------------------------------------------------------------
# Summaries


def mlflow_ui(tracking_uri: str, experiment_id: str | None, port: int = 5000) -> tuple[str, str]:
    """``(command, url)``: how to start the MLflow UI on this store, and the URL of the
    experiment's runs table (``/runs``, ``compareRunsMode=TABLE``; not the GenAI traces view)."""
    if tracking_uri.startswith(("http://", "https://")):
        base = tracking_uri.rstrip("/")
        cmd = ""
    else:
        base = f"http://127.0.0.1:{port}"
        cmd = f"mlflow ui --backend-store-uri {tracking_uri} --port {port}"
    url = f"{base}/#/experiments/{experiment_id}/runs?compareRunsMode=TABLE" if experiment_id else f"{base}/"
    return cmd, url


def _experiment_id(run_id: str, tracking_uri: str) -> str | None:
    try:
        from emo_ray import tracking

        return tracking.client(tracking_uri).get_run(run_id).info.experiment_id
    except Exception:  # noqa: BLE001
        return None


def _block(title: str, rows: list[tuple[str, str]], stream) -> None:
    width = max(len(k) for k, _ in rows) if rows else 0
    print("", file=stream)
    print(title, file=stream)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}", file=stream)
    stream.flush()


def _metric_rows(metrics: Mapping[str, Any], keys) -> list[tuple[str, str]]:
    rows = []
    for k in keys:
        v = metrics.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            rows.append((k, f"{v:.4f}" if isinstance(v, float) else str(v)))
    return rows


def print_fit_summary(result, cfg, *, stream=None) -> None:
    """The last block of ``emo-ray train``: final metrics, where the model is, the MLflow run and
    the UI link that opens the experiment's runs table. ``result``: a ``FitResult``; ``cfg``: the
    run's ``Config``."""
    from emo_ray import tracking

    stream = stream or sys.stdout
    uri = getattr(result, "tracking_uri", None) or tracking.tracking_uri(cfg.tracking.tracking_uri or None)
    exp = getattr(result, "experiment_id", None) or _experiment_id(result.mlflow_run_id, uri)
    m = result.metrics or {}
    rows = [("objective", f"{cfg.train.loss} on {cfg.model.name}")]
    final = ", ".join(f"{k} {v}" for k, v in _metric_rows(m, ("step", "loss", "val_loss", "val_ppl")))
    if final:
        rows.append(("final", final))
    if m.get("val_tokens") == 0:
        rows.append(("validation", "no validation data (no val metrics)"))
    if getattr(result, "n_params", None):
        rows.append(("parameters", f"{result.n_params:,}"))
    rows.append(("model", result.hf_model_path or result.checkpoint_path or "(none)"))
    rows.append(("mlflow run", f"{getattr(result, 'run_name', '') or ''} {result.mlflow_run_id}".strip()))
    if getattr(result, "ray_run_name", ""):  # what a rerun of this run must name (ray.run_name=...)
        rows.append(("ray.run_name", result.ray_run_name))
    cmd, url = mlflow_ui(uri, exp)
    if cmd:
        rows.append(("mlflow ui", cmd))
    rows.append(("runs table", url))
    _block("Training finished", rows, stream)


def finished_rerun_line(result) -> str:
    """The one line ``emo-ray train`` prints when ``ray.run_name`` has finished already and nothing
    ran (``ray.rerun_finished=skip``): which run, where its results are, how to train it again."""
    where = result.hf_model_path or result.checkpoint_path or "no model exported"
    return (f"emo-ray train: ray.run_name={result.ray_run_name} has finished already (MLflow run "
            f"{result.mlflow_run_id}, model {where}); nothing to do. ray.rerun_finished=new trains it again "
            "as a new run")


def print_eval_summary(run_id: str, result, cfg, *, stream=None) -> None:
    """The last block of ``emo-ray-eval``: headline metrics (ICL average and per task, MAUVE /
    oracle perplexity means, total time), skipped sections, the MLflow run and the runs-table
    link. ``result``: an ``EvalResult``; ``cfg``: the ``EvalConfig``."""
    from emo_ray import tracking
    from emo_ray.tracking import keys

    stream = stream or sys.stdout
    uri = tracking.tracking_uri(cfg.tracking.tracking_uri or None)
    exp = _experiment_id(run_id, uri)
    m = result.metrics or {}
    heads = [k for k in sorted(m) if k == keys.ICL_AVG or ((i := keys.parse_icl_key(k, "")) and i.metric == "accuracy")]
    heads += [k for k in sorted(m) if (g := keys.parse_gen_stat_key(k, "")) and g.stat == "mean"]
    heads += [k for k in (keys.time_key("total_s"),) if k in m]
    rows = [(keys.eval_name(k), f"{m[k]:.4f}") for k in heads]
    for k, why in (result.skipped or {}).items():
        rows.append((f"skipped {k}", why[:120]))
    rows.append(("model", str(cfg.model)))
    rows.append(("mlflow run", run_id))
    cmd, url = mlflow_ui(uri, exp)
    if cmd:
        rows.append(("mlflow ui", cmd))
    rows.append(("runs table", url))
    _block("Evaluation finished", rows, stream)


def print_sweep_summary(summary: Mapping[str, Any], sweep=None, *, stream=None) -> None:
    """The last block of ``emo-ray sweep``: trials done / failed, the fitted power laws, the parent
    MLflow run and the runs-table link. ``summary``: what ``run_sweep`` returns."""
    from emo_ray import tracking

    stream = stream or sys.stdout
    tracking_cfg = getattr(sweep, "tracking", None)
    uri = tracking.tracking_uri(getattr(tracking_cfg, "tracking_uri", None) or None)
    parent = summary.get("parent_run_id") or summary.get("mlflow_run")
    rows = [("trials", f"{summary.get('trials', '?')} ({summary.get('failed', 0)} failed)")]
    agg = summary.get("aggregate") or {}
    if isinstance(agg, Mapping):
        if agg.get("metric"):
            rows.append(("metric", str(agg["metric"])))
        for f in agg.get("fits") or []:
            try:
                rows.append((f"power law {f['axis']}", f"{f['objective']}: a={f['a']:.4g} b={f['b']:.4g} ({f['points']} points)"))
            except (KeyError, TypeError, ValueError):
                continue
        for note in agg.get("notes") or []:
            rows.append(("note", str(note)))
    if parent:
        rows.append(("mlflow run", str(parent)))
        exp = _experiment_id(parent, uri)
        cmd, url = mlflow_ui(uri, exp)
        if cmd:
            rows.append(("mlflow ui", cmd))
        if exp and summary.get("view_url_query"):  # the report's shared view: trials + headline columns
            url = f"{url.split('?')[0]}?{summary['view_url_query']}"
        rows.append(("runs table", url))
    _block("Sweep finished", rows, stream)


# --------------------------------------------------------------------------------------------
# Evaluation stages: which section / task is running, for the stage bars.

_stage: list[str] = []


class stage:  # noqa: N801 - used as a context manager: ``with console.stage("icl sst2"):``
    """Name the running section (``gen wikitext-2``, ``icl sst2``): the bars drawn inside say it."""

    def __init__(self, name: str):
        self.name = name

    def __enter__(self):
        global _interrupted_stage
        if not _stage:  # a new outermost stage: an earlier interrupt is history
            _interrupted_stage = ""
        _stage.append(self.name)
        return self

    def __exit__(self, exc_type, *exc):
        global _interrupted_stage
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt) and not _interrupted_stage:
            _interrupted_stage = current_stage()  # the innermost stage, before the unwinding pops it
        _stage.pop()


_interrupted_stage = ""


def current_stage() -> str:
    return " / ".join(_stage)


def interrupted_stage() -> str:
    """The stage a Ctrl-C stopped (empty: none was running)."""
    return _interrupted_stage
