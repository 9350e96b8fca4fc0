"""What a person sees on the console: quiet libraries, one progress bar per thing that takes
time, and a short summary at the end.

Quiet is the default. ``EMO_RAY_VERBOSE=1`` (the CLIs' ``-v/--verbose``) brings back what the
libraries print on their own: Ray Train's per-rank ``Reporting training result N`` dumps, Ray
Data's progress blocks, MLflow's INFO lines and the known-harmless warnings that ``environment``
filters. The variable reaches Ray's workers through the runtime environment (:func:`worker_env`).

* ``environment``: the verbosity switch, the quiet process environment (driver and workers),
  the known-harmless warnings and log records filtered.
* ``progress``: :class:`Bar` (tqdm on a terminal; in a log file a line every 10 % with n/total,
  elapsed and ETA) and the evaluation stage it names (``with console.stage("icl sst2"):``).
  Training draws the bar on the driver from Ray Train's report callback
  (``emo_ray.train.progress``), evaluation per stage and task, sweeps per trial
  (``emo_ray.sweep.progress``).
* ``summary``: ``print_fit_summary(result, cfg)``, ``print_eval_summary(run_id, result, cfg)``,
  ``print_sweep_summary(summary, sweep)``, ``finished_rerun_line(result)``.

Everything public is re-exported here, so ``console.X`` is the one spelling callers use.
"""
from emo_ray.console.environment import (HARMLESS_LOG_RECORDS, HARMLESS_WARNINGS, NO_TELEMETRY_ENV,
                                         PYTHONWARNINGS_QUIET, VERBOSE_ENV, filter_harmless_warnings,
                                         in_ray_worker, prepare_process_env, quiet_libraries,
                                         train_logging_config, verbose, worker_env)
from emo_ray.console.progress import Bar, current_stage, interrupted_stage, stage
from emo_ray.console.summary import (finished_rerun_line, mlflow_ui, print_eval_summary, print_fit_summary,
                                     print_sweep_summary)

__all__ = [
    "HARMLESS_LOG_RECORDS", "HARMLESS_WARNINGS", "NO_TELEMETRY_ENV", "PYTHONWARNINGS_QUIET", "VERBOSE_ENV", "Bar",
    "current_stage", "filter_harmless_warnings", "finished_rerun_line", "in_ray_worker", "interrupted_stage",
    "mlflow_ui", "prepare_process_env", "print_eval_summary", "print_fit_summary", "print_sweep_summary",
    "quiet_libraries", "stage", "train_logging_config", "verbose", "worker_env",
]
