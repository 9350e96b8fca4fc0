"""The process side of a quiet console: libraries' INFO lines, progress blocks and known-harmless
warnings off unless ``EMO_RAY_VERBOSE=1`` (the CLIs' ``-v/--verbose``), in the driver
(:func:`prepare_process_env`) and in every Ray process of a run (:func:`worker_env` goes into the
job's runtime environment; :func:`quiet_libraries` runs in each worker).
"""
from __future__ import annotations

import importlib.util
import logging
import os
import sys
import warnings

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
    _quiet_ray_train_reports()
    _quiet_transformers()


def _quiet_ray_train_reports() -> None:
    """Ray Train V2 logs "Reporting training result N: TrainingReport(...)" per rank and report
    on a logger named after its *file* (logging.getLogger(__file__)), so neither
    LoggingConfig(log_level) nor the `ray.train` logger governs it; it propagates to the worker's
    root logger at INFO. Raise that one logger, found without importing Ray Train (seconds, in a
    command such as `emo-ray report` that may never use it)."""
    spec = importlib.util.find_spec("ray")
    if spec is not None and spec.origin:
        context = os.path.join(os.path.dirname(spec.origin), "train", "v2", "_internal", "execution", "context.py")
        logging.getLogger(context).setLevel(logging.WARNING)


def _quiet_transformers() -> None:
    """"Loading weights" / "Writing model shards" bars per rank and INFO lines off. Once imported,
    transformers (and huggingface_hub, whose setting its bars follow) are told directly; otherwise
    the environment they read at import does it, without importing them here."""
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    else:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:
        import transformers.utils.logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    else:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


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
