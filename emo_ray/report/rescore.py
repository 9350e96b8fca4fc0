"""``emo-ray rescore``: MAUVE of stored evaluation runs under other MAUVE settings, without
resampling, from the ``features/<corpus>.npz`` artifacts (``mauve_features.py``).

    emo-ray rescore <run id | sweep name | sweep parent run id> mauve.num_buckets=50

Quantization settings (``num_buckets``, ``scaling_factor``, ``kmeans_*``, ``seed``) reuse the
stored features and take seconds; featurizer settings (``featurizer``, ``pooling``, ``layer``,
``max_tokens``, ``include_prefix``) re-featurize the logged texts (the generations table and the
human windows kept in the artifact), still without sampling. The original metrics are left alone:
new ones go under ``eval/rescore/<tag>/gen/...``, ``<tag>`` naming the changed settings
(``num_buckets-50``), with the full settings in the param ``rescore/<tag>``.
"""
from __future__ import annotations

import hashlib
import json
import re
import tempfile
import time
from dataclasses import asdict, replace

import numpy as np
import pandas as pd

from emo_ray.evaluation.config import MauveConfig, load_eval_config
from emo_ray.evaluation.mauve_features import CorpusFeatures, all_metrics
from emo_ray.evaluation.mauve_score import mauve_settings
from emo_ray.inference.executor import ExecutionConfig
from emo_ray.tracking import keys, tags
from emo_ray.typed_config import ConfigError

SCORE_FREE = {"batch_size", "cache"}
"""Settings that change how features are computed, never their values or the scores."""
REFEATURIZE = {"featurizer", "pooling", "layer", "max_tokens", "include_prefix"}
"""Settings that need new features; every other one reuses the stored features."""


class RescoreError(ValueError):
    """Nothing to re-score (a run that is not finished or has no features artifact)."""


def settings(base: MauveConfig, overrides: list[str]) -> tuple[MauveConfig, ExecutionConfig]:
    """``base`` with ``mauve.<key>=value`` overrides, and the execution settings of any
    re-featurization (``execution.<key>=value``; default: in this process). Unknown keys and
    invalid values raise ``ConfigError``."""
    for item in overrides:
        if not item.split("=", 1)[0].startswith(("mauve.", "execution.")):
            raise ConfigError(f"rescore takes mauve.<key>=value (and execution.<key>=value), got {item!r}")
    tree = {"generation_enabled": False, "icl_enabled": False, "mauve": asdict(base),
            "execution": {"executor": "local", "progress_bar": False}}
    cfg = load_eval_config(None, overrides, tree=tree)
    return cfg.mauve, cfg.execution


def changed(base: MauveConfig, new: MauveConfig) -> dict:
    old = asdict(base)
    return {k: v for k, v in asdict(new).items() if k not in SCORE_FREE and old[k] != v}


def setting_tag(base: MauveConfig, new: MauveConfig) -> str:
    """A short readable MLflow-safe name of the changed settings: ``num_buckets-50``,
    ``unchanged``; long ones are cut and end in a digest of the full text."""
    diff = changed(base, new)
    if not diff:
        return "unchanged"
    raw = "_".join(f"{k}-{v}" for k, v in sorted(diff.items()))
    tag = re.sub(r"[^A-Za-z0-9._-]+", "-", raw)
    return tag if len(tag) <= 48 else f"{tag[:39]}-{hashlib.sha1(raw.encode()).hexdigest()[:8]}"


def evaluation_runs(client, ref: str, tracking_uri: str) -> list[str]:
    """``ref`` itself when it is an evaluation run, else every finished child run of the sweep
    it names (``emo_ray.report.collect``: the runs the report reads)."""
    from mlflow.exceptions import MlflowException

    from emo_ray.report.collect import child_runs, resolve_parent

    try:
        run = client.get_run(ref)
    except MlflowException:
        run = None
    if run is not None and run.data.tags.get(tags.KIND) != tags.KIND_SWEEP:
        if run.info.status != "FINISHED":
            raise RescoreError(f"run {ref} is {run.info.status}; only finished runs are re-scored")
        return [run.info.run_id]
    return list(child_runs(resolve_parent(client, ref), tracking_uri)["run_id"])


def feature_paths(client, run_id: str) -> list[str]:
    paths = [a.path for a in client.list_artifacts(run_id, "features") if a.path.endswith(".npz")]
    if not paths:
        raise RescoreError(f"run {run_id} has no features/<corpus>.npz artifact: it predates the feature "
                           f"artifact; evaluate its model again to re-score it")
    return sorted(paths)


def load_features(client, run_id: str, path: str) -> CorpusFeatures:
    with tempfile.TemporaryDirectory() as tmp:
        return CorpusFeatures.load(client.download_artifacts(run_id, path, tmp))


def refeaturize(f: CorpusFeatures, table: pd.DataFrame, new: MauveConfig, execution) -> CorpusFeatures:
    """``f`` with features of the same texts under ``new``'s featurizer settings: the model
    side from the logged generation table, the human side from the texts in the artifact."""
    from emo_ray.evaluation.featurize import featurize, featurizer_identity, resolved_dtype
    from emo_ray.models import materialize

    def run(prefixes, continuations) -> np.ndarray:
        texts = [a + b if new.include_prefix else b for a, b in zip(prefixes, continuations)]
        return featurize(texts, path, pooling=new.pooling, layer=new.layer, max_tokens=new.max_tokens,
                         batch_size=new.batch_size, execution=execution, cache=new.cache)

    path = materialize(new.featurizer)
    rows = table.iloc[f.model_row]
    human = run(f.human_prefix, f.human_reference)
    human2 = run(f.human2_prefix, f.human2_reference) if len(f.human2) else np.zeros((0, human.shape[1]), np.float32)
    return replace(f, model=run(rows["prefix"], rows["generation"]), human=human, human2=human2,
                   featurizer=featurizer_identity(path, new.pooling, new.max_tokens, new.layer, resolved_dtype(execution)),
                   mauve_config=json.dumps(asdict(new)))


def rescore_run(client, run_id: str, overrides: list[str]) -> list[dict]:
    """Re-score every corpus of one run and log the result on it; one summary row per decoder."""
    from mlflow.entities import Metric, Param

    from emo_ray.report.collect import Artifacts

    metrics, params, rows = {}, {}, []
    original = client.get_run(run_id).data.metrics
    for path in feature_paths(client, run_id):
        corpus = path.split("/")[-1].removesuffix(".npz")
        f = load_features(client, run_id, path)
        base = f.config()
        new, execution = settings(base, overrides)
        tag = setting_tag(base, new)
        stored = not REFEATURIZE & changed(base, new).keys()
        if not stored:
            table = Artifacts(client).table(run_id, f"generations/{corpus}.json")
            if table is None:
                raise RescoreError(f"run {run_id} has no generations/{corpus}.json to re-featurize")
            f = refeaturize(f, table, new, execution)
        scores = all_metrics(f, new, keys.gen_section(corpus))
        metrics.update({keys.eval_name(keys.rescore_key(tag, k)): v for k, v in scores.items()})
        params[f"rescore/{tag}"] = f"{mauve_settings(new)} features={'stored' if stored else 'refeaturized'}"
        for dec in dict.fromkeys(f.model_decoder.tolist()):
            rows.append(summary_row(run_id, corpus, dec, tag, original, scores))
    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
    for i in range(0, len(batch), 1000):
        client.log_batch(run_id, metrics=batch[i : i + 1000],
                         params=[Param(k, v) for k, v in params.items()] if i == 0 else [])
    return rows


def summary_row(run_id: str, corpus: str, dec: str, tag: str, original: dict, scores: dict) -> dict:
    mean = {name: keys.gen_stat_key(corpus, dec, name, "mean") for name in ("mauve", "mauve_star", "frontier_integral")}
    human = keys.gen_corpus_key(corpus, "human_mauve")
    return {
        "run": run_id[:12], "corpus": corpus, "decoder": dec, "setting": tag,
        "mauve (logged)": original.get(keys.eval_name(mean["mauve"]), np.nan),
        "mauve": scores[mean["mauve"]],
        "mauve_star": scores[mean["mauve_star"]],
        "frontier_integral": scores[mean["frontier_integral"]],
        "human_mauve (logged)": original.get(keys.eval_name(human), np.nan),
        "human_mauve": scores.get(human, np.nan),
    }


def rescore(ref: str, tracking_uri: str, overrides: list[str]) -> pd.DataFrame:
    """Re-score the run ``ref``, or every finished child run of the sweep ``ref``; one row per
    run, corpus and decoder (means over sampling seeds)."""
    from emo_ray import tracking

    settings(MauveConfig(), overrides)  # a typo fails before anything is read
    client = tracking.client(tracking_uri)
    runs = evaluation_runs(client, ref, tracking_uri)
    for run_id in runs:  # every run checked before the first is re-scored
        feature_paths(client, run_id)
    return pd.DataFrame([row for run_id in runs for row in rescore_run(client, run_id, overrides)])


def format_table(rows: pd.DataFrame) -> str:
    return rows.to_string(index=False, float_format=lambda v: f"{v:.4f}")
