"""What a report reads from MLflow: the sweep's parent run (by id or sweep name), one row per
finished child run (its trial record, counted parameters and metrics: ``collect``) and
the per-item tables the evaluation logged (``icl/<task>.json``, ``generations/<corpus>.json``)."""
from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from emo_ray import tracking
from emo_ray.tracking import keys, tags

SAMPLING_SCORES = ("mauve", "oracle_ppl", "rouge1", "rougeL")
"""The per-sampling-run scores of one generation corpus and decoder a report reads
(``eval/gen/<corpus>/<decoder>/seed<s>/<metric>``, emo_ray.evaluation.open_ended)."""
ICL_AVG = keys.eval_name(keys.ICL_AVG)


class ReportError(ValueError):
    """Nothing to report on (unknown sweep, no finished child run); the message says which."""


def resolve_parent(client, ref: str) -> str:
    """The parent run id of ``ref``: a run id, or the name of a sweep (its newest parent run,
    tagged ``emo_ray.kind=sweep`` by the runner)."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(ref).info.run_id
    except MlflowException:
        pass
    exps = [e.experiment_id for e in client.search_experiments()]
    query = f"{tags.column(tags.KIND)} = '{tags.KIND_SWEEP}' and {tags.column(tags.PRESET)} = '{ref}'"
    found = client.search_runs(exps, query,
                               order_by=["attributes.start_time DESC"], max_results=1) if exps else []
    if not found:
        raise ReportError(f"{ref!r} is neither a run id nor the name of a sweep in this MLflow store")
    return found[0].info.run_id


def collect(parent_run_id: str, tracking_uri: str) -> pd.DataFrame:
    """One row per finished child run: its trial record (tag ``emo_ray.trial``), its counted
    parameters (param ``model.n_params``) and its final metrics; nothing is re-parsed from params.
    Runs without a trial record (not made by a sweep trial) are left out and counted in
    ``df.attrs["skipped"]``; runs without a parameter count fall back to the model registry's
    figure, named in ``df.attrs["n_params_from_registry"]``."""
    from emo_ray.models import n_params
    from emo_ray.sweep.spec import Trial

    client = tracking.client(tracking_uri)
    parent = client.get_run(parent_run_id)
    runs = client.search_runs([parent.info.experiment_id], f"{tags.column(tags.PARENT_RUN_ID)} = '{parent_run_id}'",
                              max_results=10_000)
    rows, skipped, from_registry = [], [], set()
    for r in runs:
        if r.info.status != "FINISHED":
            continue
        record = r.data.tags.get(tags.TRIAL_RECORD)
        if record is None:
            skipped.append(r.info.run_id)
            continue
        trial = Trial.from_dict(json.loads(record))
        counted = r.data.params.get("model.n_params")
        if counted is None:
            from_registry.add(trial.model)
        rows.append({"run_id": r.info.run_id, "trial_id": r.data.tags.get(tags.TRIAL_ID, ""),
                     "model": trial.model,
                     "n_params": float(counted) if counted is not None else (n_params(trial.model) or math.nan),
                     "objective": trial.loss, "hparams": trial.hparams, "tokens": trial.tokens, "seed": trial.seed,
                     "domain": trial.domain, "pretrained": trial.pretrained, **r.data.metrics})
    df = pd.DataFrame(rows)
    df.attrs.update(skipped=skipped, n_params_from_registry=sorted(from_registry))
    return df


def child_runs(parent_run_id: str, tracking_uri: str) -> pd.DataFrame:
    """One row per finished child run with a trial record (fine-tuned and pre-trained)."""
    df = collect(parent_run_id, tracking_uri)
    if df.empty:
        raise ReportError(f"sweep run {parent_run_id} has no finished child run with a trial record")
    for col, default in (("domain", ""), ("pretrained", False)):
        if col not in df.columns:
            df[col] = default
    df["pretrained"] = df["pretrained"].astype(bool)
    return df


def sampling_scores(runs: pd.DataFrame) -> pd.DataFrame:
    """Long frame of per-sampling-run generation scores: run_id, corpus, decoder, sample_seed,
    metric, value (one row per logged ``eval/gen/<corpus>/<decoder>/seed<s>/<metric>``)."""
    rows = []
    for c in runs.columns:
        k = keys.parse_gen_key(c)
        if k is None or k.metric not in SAMPLING_SCORES:
            continue
        for run_id, v in zip(runs["run_id"], runs[c]):
            if pd.notna(v):
                rows.append({"run_id": run_id, "corpus": k.corpus, "decoder": k.decoder, "sample_seed": k.seed,
                             "metric": k.metric, "value": float(v)})
    return pd.DataFrame(rows, columns=["run_id", "corpus", "decoder", "sample_seed", "metric", "value"])


def icl_tasks(runs: pd.DataFrame) -> list[str]:
    return sorted(k.task for c in runs.columns
                  if (k := keys.parse_icl_key(c)) and k.metric == "accuracy" and runs[c].notna().any())


@dataclass
class Artifacts:
    """Per-item tables of child runs, downloaded once each; None when a run did not log one."""

    client: object
    cache: dict = field(default_factory=dict)

    def table(self, run_id: str, path: str) -> pd.DataFrame | None:
        key = (run_id, path)
        if key not in self.cache:
            self.cache[key] = self._load(run_id, path)
        return self.cache[key]

    def _load(self, run_id: str, path: str) -> pd.DataFrame | None:
        from mlflow.exceptions import MlflowException

        with tempfile.TemporaryDirectory() as tmp:
            try:
                local = self.client.download_artifacts(run_id, path, tmp)
            except (MlflowException, OSError):
                return None
            if not Path(local).is_file():
                return None
            data = json.loads(Path(local).read_text())
        # mlflow.log_table writes pandas' "split" orientation: {"columns": [...], "data": [[...]]}.
        return pd.DataFrame(data["data"], columns=data["columns"])
