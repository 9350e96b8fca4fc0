"""The end-of-run summaries: a short block of final metrics, where the model is, the MLflow run
and the UI link that opens the experiment's runs table (``print_fit_summary(result, cfg)``,
``print_eval_summary(run_id, result, cfg)``, ``print_sweep_summary(summary, sweep)``), and the one
line for a rerun that had nothing to do (``finished_rerun_line``).
"""
from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

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
    total, failed = summary.get("trials", "?"), summary.get("failed", 0)
    finished = summary.get("finished", total)
    stopped = isinstance(total, int) and finished + failed < total
    rows = [("trials", f"{finished} of {total} finished ({failed} failed)" if stopped else f"{total} ({failed} failed)")]
    if stopped:
        rows.append(("continue with", f"emo-ray sweep --resume {summary.get('sweep') or '<sweep>'} (finished trials are kept)"))
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
    _block("Sweep stopped" if stopped else "Sweep finished", rows, stream)
