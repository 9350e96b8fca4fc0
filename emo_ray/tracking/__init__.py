"""The MLflow record contract: the one module that names what a run records and writes it.

* ``tags``: every run tag name (``tags.KIND``, ``tags.TRIAL_RECORD``...), provenance and driver tags.
* ``keys``: every metric name, a builder and a parser per family (``keys.gen_key`` /
  ``keys.parse_gen_key``...).
* ``writer``: the one client-side writer (finite values only, the rest counted; batched; no
  step logged twice after a resume).
* ``store``: where runs go (``tracking_uri``) and ``client(uri)``, the only place an
  ``MlflowClient`` is made.
* ``runs``: the store check and experiment setup, the run context (never left RUNNING), stale
  runs closed.

Nothing outside this package spells an ``emo_ray.*`` tag or constructs an ``MlflowClient``
(``tests/test_record_contract.py`` holds it to that).
"""
from emo_ray.tracking import keys, tags
from emo_ray.tracking.keys import prefixed
from emo_ray.tracking.runs import SCHEMES, check_store, close_stale_runs, driver_alive, last_step, run, setup
from emo_ray.tracking.store import DEFAULT_DB, client, tracking_uri
from emo_ray.tracking.tags import (EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, PACKAGES, driver_tags, git_commit,
                                   provenance_tags)
from emo_ray.tracking.writer import (finite, log_batch, log_dataset, log_metrics, log_params_flat, logged_through,
                                     metric_entities)

__all__ = [
    "DEFAULT_DB", "EXPERIMENT_KIND", "EXPERIMENT_KIND_TAG", "PACKAGES", "SCHEMES", "check_store", "client",
    "close_stale_runs", "driver_alive", "driver_tags", "finite", "git_commit", "keys", "last_step", "log_batch",
    "log_dataset", "log_metrics", "log_params_flat", "logged_through", "metric_entities", "prefixed",
    "provenance_tags", "run", "setup", "tags", "tracking_uri",
]
