"""The MLflow record contract (issue 24.1): one module, ``emo_ray.tracking``, names every run tag
and metric key and makes every MLflow client; the names it writes are the ones stored runs and a
sweep in progress are read back by, so they are pinned here byte for byte.

The source checks read ``emo_ray/`` with ``ast``: string constants (docstrings and comments are
prose, not records) and the constant parts of f-strings.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from emo_ray.tracking import keys, tags, writer

PACKAGE = Path(__file__).resolve().parents[1] / "emo_ray"
RECORD_MODULE = PACKAGE / "tracking"
MODULES = {p.stem for p in PACKAGE.glob("*.py")} | {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
"""``emo_ray.<name>`` that is a module (a logger named after one, ``emo_ray.precision``), not a tag."""
DOTTED = re.compile(r"emo_ray\.([A-Za-z_]+)")


def _prose(tree: ast.AST) -> set[int]:
    """ids of string constants that are statements of their own (docstrings)."""
    return {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}


def violations(source: str, name: str = "<src>") -> list[str]:
    """Tag literals (``emo_ray.<x>`` where ``x`` is no module) and ``MlflowClient`` uses in ``source``."""
    tree = ast.parse(source, name)
    prose, found = _prose(tree), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in prose:
            found += [f"{name}:{node.lineno}: tag literal {m[0]!r}" for m in DOTTED.finditer(node.value)
                      if m[1] not in MODULES]
        elif isinstance(node, ast.Call):
            f = node.func
            if (isinstance(f, ast.Name) and f.id == "MlflowClient") or (isinstance(f, ast.Attribute) and f.attr == "MlflowClient"):
                found.append(f"{name}:{node.lineno}: MlflowClient(...) outside emo_ray.tracking (use tracking.client(uri))")
    return sorted(found, key=lambda v: int(v.split(":")[1]))


def test_no_tag_literal_or_client_outside_the_record_module():
    outside = [p for p in sorted(PACKAGE.rglob("*.py")) if RECORD_MODULE not in p.parents]
    assert len(outside) > 50  # the whole package was read, not an empty glob
    found = [v for p in outside for v in violations(p.read_text(), str(p.relative_to(PACKAGE.parent)))]
    assert not found, "\n".join(found)


def test_the_check_sees_a_tag_literal_and_a_client():
    src = '''"""Docstring naming ``emo_ray.kind`` is prose."""
import logging
from mlflow import MlflowClient
log = logging.getLogger("emo_ray.precision")
tags = {"emo_ray.kind": "x"}
query = f"tags.`emo_ray.preset` = '{1}'"
client = MlflowClient("sqlite://")
other = mlflow.MlflowClient()
'''
    found = violations(src)
    assert [v.split(": ", 1)[1] for v in found] == [
        "tag literal 'emo_ray.kind'", "tag literal 'emo_ray.preset'",
        "MlflowClient(...) outside emo_ray.tracking (use tracking.client(uri))",
        "MlflowClient(...) outside emo_ray.tracking (use tracking.client(uri))"]


# Stored runs are read by these exact names (issue 24: behaviour unchanged).
PINNED_TAGS = {
    "KIND": "emo_ray.kind", "OBJECTIVE": "emo_ray.objective", "MODEL": "emo_ray.model",
    "MODEL_PATH": "emo_ray.model_path", "EVALUATED": "emo_ray.evaluated", "SOURCE_RUN_ID": "emo_ray.source_run_id",
    "PRESET": "emo_ray.preset", "TRIAL_ID": "emo_ray.trial_id", "TRIAL_RECORD": "emo_ray.trial",
    "TRIAL_KEY": "emo_ray.trial_key", "HPARAMS": "emo_ray.hparams", "DOMAIN": "emo_ray.domain",
    "DRIVER_PID": "emo_ray.driver_pid", "DRIVER_HOST": "emo_ray.driver_host", "STALE_REASON": "emo_ray.stale_reason",
    "STALE_RUN_RECOVERED": "emo_ray.stale_run_recovered", "RESUMED_FROM_RUN": "emo_ray.resumed_from_run",
    "RESUMED_FROM_STEP": "emo_ray.resumed_from_step",
    "RESUMED_WITH_CHANGED_CONFIG": "emo_ray.resumed_with_changed_config",
    "RESUMED_WITH_CHANGED_PARAMS": "emo_ray.resumed_with_changed_params", "RERUN_OF": "emo_ray.rerun_of",
    "RERUN_OF_RAY_RUN": "emo_ray.rerun_of_ray_run", "FAILURE": "emo_ray.failure",
    "LOGGED_MODEL_ERROR": "emo_ray.logged_model_error", "DATASET_LOG_ERROR": "emo_ray.dataset_log_error",
    "MLFLOW_SINK_ERRORS": "emo_ray.mlflow_sink_errors", "PEAK_FLOPS_PER_WORKER": "emo_ray.peak_flops_per_worker",
    "GIT_COMMIT": "emo_ray.git_commit", "GIT_DIRTY": "emo_ray.git_dirty", "VERSION_PREFIX": "emo_ray.version.",
    "HF_MODEL_PATH": "hf_model_path", "CHECKPOINT_PATH": "checkpoint_path", "PARENT_RUN_ID": "mlflow.parentRunId",
}


def test_tag_names_are_pinned():
    declared = {k: v for k, v in vars(tags).items() if k.isupper() and isinstance(v, str) and v.startswith("emo_ray.")}
    assert declared == {k: v for k, v in PINNED_TAGS.items() if v.startswith("emo_ray.")}
    assert {k: getattr(tags, k) for k in PINNED_TAGS} == PINNED_TAGS
    assert tags.column(tags.KIND) == "tags.`emo_ray.kind`"
    assert set(tags.driver_tags()) == {"emo_ray.driver_pid", "emo_ray.driver_host"}


def test_metric_keys_are_pinned():
    assert keys.eval_name(keys.gen_key("wikitext-2", "ancestral", 0, "mauve")) == "eval/gen/wikitext-2/ancestral/seed0/mauve"
    assert keys.gen_stat_key("wikitext-2", "top_p_0.95", "precision_ce", "mean") == "gen/wikitext-2/top_p_0.95/precision_ce_mean"
    assert keys.gen_stat_key("webtext", "ancestral", "mauve", "std") == "gen/webtext/ancestral/mauve_std"
    assert keys.gen_corpus_key("wikitext-2", "human_mauve") == "gen/wikitext-2/human_mauve"
    assert keys.eval_name(keys.icl_key("sst2", "accuracy")) == "eval/icl/sst2/accuracy"
    assert keys.eval_name(keys.ICL_AVG) == "eval/icl/avg_accuracy"
    assert (keys.ICL_N_TASKS, keys.ICL_N_TASKS_SKIPPED) == ("icl/n_tasks", "icl/n_tasks_skipped")
    assert keys.time_key(keys.gen_section("wikitext-2"), "sample_s") == "time/gen/wikitext-2/sample_s"
    assert keys.time_key("icl", "score_s") == "time/icl/score_s"
    assert keys.time_key("total_s") == "time/total_s"
    assert keys.eval_name(keys.rescore_key("num_buckets-50", keys.gen_stat_key("x", "greedy", "mauve", "mean"))) == \
        "eval/rescore/num_buckets-50/gen/x/greedy/mauve_mean"
    assert keys.headline_key("icl_avg_accuracy") == "headline/icl_avg_accuracy"
    assert keys.fit_key("mauve", "tokens", "emo", "", "b_low") == "figure1/mauve/tokens/emo/b_low"
    assert keys.fit_key("mauve", "n_params", "emo", "wikitext-2", "a") == "figure1/mauve/n_params/emo/wikitext-2/a"
    assert (keys.TRAIN_LOSS, keys.VAL_LOSS, keys.NONFINITE) == ("train/loss", "val/loss", "nonfinite_metrics")


def test_the_precision_recall_names_read_back():
    from emo_ray.evaluation.precision_recall import parse_precision_metric, recall_metric

    assert recall_metric("wikitext-2") == "eval/gen/wikitext-2/recall_ce"
    assert parse_precision_metric("eval/gen/wikitext-2/greedy/precision_ce_mean") == ("wikitext-2", "greedy")
    assert parse_precision_metric("eval/gen/wikitext-2/greedy/precision_ce_std") is None
    assert parse_precision_metric("eval/gen/wikitext-2/greedy/mauve_mean") is None


@pytest.mark.parametrize("corpus,decoder,seed,metric", [("wikitext-2", "ancestral", 0, "mauve"),
                                                        ("my_ptb", "top_p_0.95", 12, "oracle_ppl")])
def test_generation_keys_round_trip_and_stay_apart(corpus, decoder, seed, metric):
    per_seed, stat = keys.gen_key(corpus, decoder, seed, metric), keys.gen_stat_key(corpus, decoder, metric, "mean")
    whole = keys.gen_corpus_key(corpus, metric)
    for prefix in ("", keys.EVAL):
        assert keys.parse_gen_key(prefix + per_seed, prefix) == (corpus, decoder, seed, metric)
        assert keys.parse_gen_stat_key(prefix + stat, prefix) == (corpus, decoder, metric, "mean")
        assert keys.parse_gen_corpus_key(prefix + whole, prefix) == (corpus, metric)
    # one family's names never parse as another's
    assert keys.parse_gen_stat_key(per_seed, "") is None and keys.parse_gen_corpus_key(per_seed, "") is None
    assert keys.parse_gen_key(stat, "") is None and keys.parse_gen_corpus_key(stat, "") is None
    assert keys.parse_gen_key(whole, "") is None and keys.parse_gen_stat_key(whole, "") is None
    assert keys.parse_gen_key(per_seed) is None  # the plain name is no MLflow (eval/) name


def test_other_key_families_round_trip():
    assert keys.parse_icl_key(keys.eval_name(keys.icl_key("ag_news", "prior_baseline"))) == ("ag_news", "prior_baseline")
    assert keys.parse_icl_key(keys.eval_name(keys.ICL_AVG)) is None
    assert keys.parse_time_key(keys.time_key(keys.icl_section("trec"), "retrieve_s"), "") == ("icl", "trec", "retrieve_s")
    assert keys.parse_time_key(keys.eval_name(keys.time_key("total_s"))) == ("total_s",)
    inner = keys.gen_key("x", "greedy", 3, "mauve")
    assert keys.parse_rescore_key(keys.eval_name(keys.rescore_key("unchanged", inner))) == ("unchanged", inner)
    assert keys.parse_headline_key(keys.headline_key("val_loss")) == "val_loss"
    for domain in ("", "wikitext-2"):
        assert keys.parse_fit_key(keys.fit_key("icl_avg_accuracy", "tokens", "mle", domain, "b")) == \
            ("icl_avg_accuracy", "tokens", "mle", domain, "b")
    assert keys.parse_fit_key("headline/mauve") is None


def test_an_unknown_stat_is_refused():
    with pytest.raises(ValueError, match="stat 'median'"):
        keys.gen_stat_key("x", "ancestral", "mauve", "median")


class RecordingClient:
    def __init__(self):
        self.calls = []

    def log_batch(self, run_id, metrics=(), params=(), tags=()):
        self.calls.append((run_id, list(metrics), list(params), list(tags)))


def test_the_writer_keeps_finite_numbers_counts_the_rest_and_batches():
    clean, dropped = writer.finite({"a": 1, "b": float("nan"), "c": None, "d": float("inf"), "e": "x", "f": "2.5"})
    assert (clean, dropped) == ({"a": 1.0, "f": 2.5}, 4)
    client = RecordingClient()
    metrics = {f"m{i}": float(i) for i in range(150)} | {"bad": float("nan")}
    n = writer.log_batch(client, "r1", metrics, {f"p{i}": "v" * 7000 for i in range(120)}, {tags.EVALUATED: "true"},
                         count_key="eval/nonfinite_metrics")
    assert n == 151 and len(client.calls) == 2  # 151 metrics and 120 params in batches of 100
    (_, m1, p1, t1), (_, m2, p2, t2) = client.calls
    assert len(m1) == 100 and len(p1) == 100 and len(p2) == 20 and t2 == []
    assert [(t.key, t.value) for t in t1] == [("emo_ray.evaluated", "true")]
    assert (m2[-1].key, m2[-1].value) == ("eval/nonfinite_metrics", 1.0)
    assert all(len(p.value) == 6000 for p in p1)
    assert "bad" not in {m.key for m in m1 + m2}


def test_a_sweep_trial_evaluates_the_model_path_it_holds_onto_its_own_run(tmp_path, monkeypatch):
    """Issue 24.1: the trial hands ``FitResult.hf_model_path`` and its run id to the evaluation,
    which logs onto that run; nothing is read back through the ``hf_model_path`` tag (the run
    here has none)."""
    import mlflow

    from emo_ray import tracking
    from emo_ray.evaluation import run as run_mod
    from emo_ray.sweep.spec import load_sweep_config
    from emo_ray.sweep.trial import evaluate_trial
    from emo_ray.train import FitResult

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    tracking.setup(uri, "trials")
    with mlflow.start_run() as train_run:
        pass
    model = tmp_path / "hf"
    model.mkdir()
    (model / "config.json").write_text("{}")
    seen = []
    monkeypatch.setattr(run_mod, "run_evaluation", lambda path, cfg: seen.append(path) or run_mod.EvalResult(
        metrics={keys.ICL_AVG: 0.25}))
    sweep = load_sweep_config("cpu-small", ["eval_config=configs/eval/quick.yaml"])
    fitted = FitResult(train_run.info.run_id, {}, None, str(model), "train-x")
    scores = evaluate_trial(sweep, fitted, uri)
    got = tracking.client(uri).get_run(train_run.info.run_id)
    assert seen == [str(model)] and scores == {keys.ICL_AVG: 0.25}
    assert got.data.metrics["eval/icl/avg_accuracy"] == 0.25 and got.data.tags["emo_ray.evaluated"] == "true"
    assert "hf_model_path" not in got.data.tags and got.info.status == "FINISHED"
    with pytest.raises(ValueError, match=f"trial run {train_run.info.run_id} exported no model"):
        evaluate_trial(sweep, FitResult(train_run.info.run_id, {}, None, None, "train-x"), uri)
