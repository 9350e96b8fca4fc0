"""The sweep as users read it in the MLflow UI (3.17): every trial's objective, data volume, seed
and headline metrics side by side, one link away.

* Each trial run is named by its trial key (``emo-smollm2-135m-16384tok-s1``: objective, model,
  volume, seed; ``sweep.trial``) and gets the headline metrics under stable keys
  (``report.scaling.HEADLINES``: ``headline/val_loss``, ``headline/mauve``,
  ``headline/icl_avg_accuracy``), whatever corpus or decoder the evaluation named its own keys by.
* The parent run carries the report (tables, Figure 1) as artifacts and the fits as metrics
  (``figure1/<metric>/<axis>/<objective>/{a,b}``).
* The runs table's URL state in 3.17 holds only the search facets (filter, sort, time range);
  which columns show lives in the browser's local storage. What the UI does read from the store is
  a *shared view*: an experiment tag ``mlflow.sharedViewState.<key>`` holding the view as JSON,
  opened by ``#/experiments/<id>/runs?viewStateShareKey=<key>`` (the "Share" button writes the
  same tag). ``share_view`` writes one per sweep: the sweep's trials only (its parent collapses them
  otherwise), sorted by run name, with the objective, volume, seed and headline columns shown.
"""
from __future__ import annotations

import json
import time

import pandas as pd

from emo_ray import tracking
from emo_ray.report.scaling import HEADLINES
from emo_ray.tracking import keys, tags

SHARED_VIEW_TAG = "mlflow.sharedViewState."
"""MLflow 3.17's experiment-tag prefix of a shared runs-table view (the UI's ``viewStateShareKey``)."""
TRIAL_COLUMNS = [tags.column(tags.OBJECTIVE), "params.`data.max_train_tokens`", "params.`train.seed`",
                 tags.column(tags.HPARAMS), tags.column(tags.MODEL)]
"""Columns beside the headline metrics: objective, data volume, seed (trial params), then the
hyperparameter set and model. Column ids are the UI's ``<type>.`<key>``` form."""
RUN_NAME_SORT = "tags.`mlflow.runName`"
RUN_NAME_COLUMN = "attributes.`Run Name`"
"""The run-name column's sort key and its grid column id differ in the 3.17 UI."""


HEADLINE_DIGITS = 4
"""Significant digits of the ``headline/*`` copies: the runs table shows a metric's float whole
(``0.6937500000000001``), and these columns are for reading side by side. The report computes
from the source metrics (``val/loss``, ``eval/...``), never from these copies."""


def display_value(x: float) -> float:
    return float(f"{x:.{HEADLINE_DIGITS}g}")


def log_headlines(client, runs: pd.DataFrame) -> int:
    """Log each run's finite headline values (``scaling.headline_values``), rounded to
    ``HEADLINE_DIGITS``, under ``headline/*`` (step 0, so a rerun overwrites rather than adds a
    history); returns the number logged."""
    now, logged = int(time.time() * 1000), 0
    for r in runs.to_dict("records"):
        # metric_entities drops the non-finite values (a headline a run did not measure)
        metrics = tracking.metric_entities({h.key: display_value(r[h.key]) for h in HEADLINES if h.key in r}, timestamp=now)
        if metrics:
            client.log_batch(r["run_id"], metrics=metrics)
            logged += len(metrics)
    return logged


def log_fits(client, parent_run_id: str, fits: pd.DataFrame) -> None:
    """The fitted exponents and prefactors on the parent run, one metric each."""
    from mlflow.entities import Metric

    now, metrics = int(time.time() * 1000), []
    for r in fits.to_dict("records") if not fits.empty else []:
        metrics += [Metric(keys.fit_key(r["metric"], r["axis"], r["objective"], r["domain"], p), float(r[p]), now, 0)
                    for p in ("a", "b", "b_low", "b_high")]
    if metrics:
        client.log_batch(parent_run_id, metrics=metrics)


def view_state(parent_run_id: str) -> dict:
    """The shared view of one sweep: its trials as flat rows (the filter drops the parent, which
    would otherwise fold them under one collapsed row), sorted by run name (objective, then
    volume), with the headline columns wide enough to read their names and values."""
    columns = [*(f"metrics.`{h.key}`" for h in HEADLINES), *TRIAL_COLUMNS]
    return {"searchFilter": f"{tags.column(tags.PARENT_RUN_ID)} = '{parent_run_id}'",
            "orderByKey": RUN_NAME_SORT, "orderByAsc": True, "selectedColumns": columns,
            "columnOrder": [RUN_NAME_COLUMN, *columns],
            "columnWidths": {RUN_NAME_COLUMN: 330, **{c: 170 for c in columns[:len(HEADLINES)]},
                             **{c: 130 for c in columns[len(HEADLINES):]}},
            "runListHidden": False, "viewMaximized": False, "hideEmptyCharts": True}


def share_key(parent_run_id: str) -> str:
    return f"emo-ray-sweep-{parent_run_id}"


def share_view(client, parent_run_id: str) -> str:
    """Write the sweep's shared view on its experiment; return the runs-table URL query that opens
    it (``compareRunsMode=TABLE&viewStateShareKey=...``)."""
    exp = client.get_run(parent_run_id).info.experiment_id
    key = share_key(parent_run_id)
    client.set_experiment_tag(exp, SHARED_VIEW_TAG + key, json.dumps(view_state(parent_run_id)))
    return f"compareRunsMode=TABLE&viewStateShareKey={key}"
