"""Records under faults (no Ray): evaluation onto a training run, tracking store checks, a fresh
store used by several processes at once, resume bookkeeping."""
from __future__ import annotations

import math
import multiprocessing as mp

import pytest

from emo_ray import tracking
from emo_ray.config import ConfigError, load_config
from tests.conftest import fresh_store


def test_failed_evaluation_onto_the_source_run_keeps_its_status(tmp_path, monkeypatch):
    import mlflow

    from emo_ray.evaluation import run as run_mod
    from emo_ray.evaluation.config import load_eval_config

    uri = fresh_store(tmp_path / "m.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    tracking.setup(uri, "train")
    with mlflow.start_run() as train_run:
        mlflow.log_param("gen/setting", "old")
    src = train_run.info.run_id
    monkeypatch.setattr(run_mod, "resolve_model", lambda ref, uri=None: ("/nowhere", src))
    # A re-evaluation with other settings: MLflow refuses to change a logged param.
    monkeypatch.setattr(run_mod, "run_evaluation", lambda path, cfg: run_mod.EvalResult(
        metrics={"icl/avg_accuracy": 0.5}, params={"gen/setting": "new"}))
    cfg = load_eval_config(None, ["tracking.log_to_source_run=true", f"tracking.tracking_uri={uri}"])
    with pytest.raises(Exception):
        run_mod.evaluate_and_log(f"mlflow:{src}", cfg)
    assert mlflow.MlflowClient(uri).get_run(src).info.status == "FINISHED"
    # and a good one lands on the run, still FINISHED
    monkeypatch.setattr(run_mod, "run_evaluation", lambda path, cfg: run_mod.EvalResult(
        metrics={"icl/avg_accuracy": 0.5, "bad": math.nan}, params={"gen/setting": "old"}))
    run_id, _ = run_mod.evaluate_and_log(f"mlflow:{src}", cfg)
    got = mlflow.MlflowClient(uri).get_run(src)
    assert run_id == src and got.info.status == "FINISHED"
    assert got.data.metrics["eval/icl/avg_accuracy"] == 0.5 and got.data.tags["emo_ray.evaluated"] == "true"


def test_store_checks_fail_early_in_one_line(tmp_path):
    not_db = tmp_path / "notes.db"
    not_db.write_text("hello, not a database\n")
    with pytest.raises(ConfigError, match="not an SQLite database"):
        tracking.setup(f"sqlite:///{not_db}", "x")
    with pytest.raises(ConfigError, match="does not exist or is not writable"):
        tracking.setup(f"sqlite:///{tmp_path / 'missing' / 'm.db'}", "x")
    with pytest.raises(ConfigError, match="unknown scheme"):
        tracking.setup("ftp://example.invalid/store", "x")
    assert tracking.check_store(f"sqlite:///{tmp_path / 'new.db'}") == tmp_path / "new.db"


def _first_use(uri, barrier, out):
    try:
        barrier.wait(timeout=60)
        tracking.setup(uri, "race")
        out.put("ok")
    except BaseException as e:  # noqa: BLE001
        out.put(f"{type(e).__name__}: {e}"[:300])


@pytest.mark.integration
def test_concurrent_first_use_of_a_fresh_store(tmp_path):
    """Several processes open the same fresh SQLite store at once: all succeed (the schema is
    created once, under a file lock)."""
    ctx = mp.get_context("spawn")
    n = 3
    barrier, out = ctx.Barrier(n), ctx.Queue()
    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    procs = [ctx.Process(target=_first_use, args=(uri, barrier, out)) for _ in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [out.get(timeout=5) for _ in range(n)] == ["ok"] * n


def test_resume_config_check_names_the_changed_keys(tmp_path):
    from emo_ray.train import run_record

    a = load_config(None, ["ray.run_name=r", "train.lr=1e-3"])
    b = load_config(None, ["ray.run_name=r", "train.lr=1e-2", "train.loss=mle", "train.log_every=5",
                           "ray.max_failures=2", "tracking.experiment=other"])
    record = {"config": run_record.trained_config(a)}
    with pytest.raises(ConfigError) as e:
        run_record.check_resume(b, record, allow_changed=False)
    assert "train.loss" in str(e.value) and "train.lr" in str(e.value) and "log_every" not in str(e.value)
    assert run_record.check_resume(b, record, allow_changed=True) == ["train.loss", "train.lr"]
    assert run_record.check_resume(a, record, allow_changed=False) == []
    assert run_record.check_resume(a, None, allow_changed=False) == []
    # a record written before a field existed: the missing key counts as its default
    older = {k: v for k, v in run_record.trained_config(a).items() if k != "data.format"}
    assert run_record.check_resume(a, {"config": older}, allow_changed=False) == []
    instr = load_config(None, ["ray.run_name=r", "train.lr=1e-3", "data.format=instruction"])
    assert run_record.check_resume(instr, {"config": older}, allow_changed=True) == ["data.format"]


def test_unwritable_storage_fails_before_anything_starts(tmp_path):
    from emo_ray.train import run_record

    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="not writable"):
        run_record.check_storage_writable(str(blocker / "runs"))
    run_record.check_storage_writable(str(tmp_path / "runs"))


def test_divergence_rule():
    from emo_ray.train.divergence import divergence

    assert divergence(3, 2.5, 1.0) is None
    assert divergence(7, math.nan, 1.0) == "TrainingDiverged: non-finite loss (nan) at step 7"
    assert divergence(7, math.inf, None).startswith("TrainingDiverged: non-finite loss")
    assert divergence(4, 2.5, math.inf) == "TrainingDiverged: non-finite gradient norm (inf) at step 4"
    assert divergence(4, 2.5, math.inf, consecutive_skips=1) is None  # an fp16 overflow skip
    assert divergence(4, 2.5, math.inf, consecutive_skips=11).startswith("TrainingDiverged")
    assert divergence(4, 2.5, math.inf, consecutive_skips=3, overflow_patience=2).startswith("TrainingDiverged")
    # a dead model: finite numbers, zero gradient norm step after step
    assert divergence(5, 10.8, 0.0, zero_grad_steps=2) is None
    assert divergence(6, 10.8, 0.0, zero_grad_steps=3).startswith("TrainingDiverged: dead model, gradient norm 0")
    assert divergence(6, 10.8, 0.0, zero_grad_steps=1, dead_patience=1).startswith("TrainingDiverged: dead model")


@pytest.mark.parametrize("name,body", [("bad.jsonl", b'{"text": "ok"}\n{"text": "caf\xe9"}\n'),
                                       ("bad.txt", b"fine line\nsecond \xff line\n")])
def test_non_utf8_data_names_file_and_line(tmp_path, name, body):
    from emo_ray.data.sources import DataError, read_documents

    f = tmp_path / name
    f.write_bytes(body)
    with pytest.raises(DataError, match=rf"{name}:2: not UTF-8 text"):
        read_documents(str(f))


def test_text_files_keep_their_lines(tmp_path):
    from emo_ray.data.sources import read_documents

    f = tmp_path / "crlf.txt"
    f.write_bytes("one\r\n\r\ntwo é\n".encode())
    assert read_documents(str(f)) == ["one", "two é"]


def test_feature_cache_writes_atomically(tmp_path, monkeypatch):
    """Each writer saves to a temporary file of its own and renames it: no fixed temp name."""
    import numpy as np

    from emo_ray.evaluation import featurize as fz

    target = tmp_path / "features" / "abc.npy"
    monkeypatch.setattr(fz, "feature_cache_path", lambda identity, texts: target)
    monkeypatch.setattr(fz, "featurizer_identity", lambda *a, **k: "id")
    monkeypatch.setattr(fz, "resolved_dtype", lambda execution: "float32")
    seen = []
    real_replace = __import__("os").replace

    def spy(src, dst):
        seen.append(str(src))
        target.parent.joinpath("abc.partial.npy").write_bytes(b"another writer's half file")
        return real_replace(src, dst)

    monkeypatch.setattr("os.replace", spy)
    monkeypatch.setattr("emo_ray.inference.executor.map_rows",
                        lambda rows, *a, **k: [{"features": [1.0, 2.0]} for _ in rows])
    out = fz.featurize(["a", "b"], "m", pooling="mean", max_tokens=8, batch_size=2, execution=None, cache=True)
    assert np.load(target).tolist() == out.tolist() == [[1.0, 2.0], [1.0, 2.0]]
    assert seen and seen[0] != str(target.with_suffix(".partial.npy"))
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".abc.")]  # no leftovers


def test_tokenizer_model_vocab_mismatch_fails_at_load(tmp_path):
    import json
    from types import SimpleNamespace

    import numpy as np

    from emo_ray.train import prepare

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": 100}))
    ok = SimpleNamespace(train=np.array([[1, 99]]), validation=np.zeros((0, 2), dtype=np.int64))
    prepare.check_vocab(ok, str(tmp_path))
    bad = SimpleNamespace(train=np.array([[1, 5]]), validation=np.array([[100, 3]]))
    with pytest.raises(ConfigError, match="token id 100.*vocab_size=100"):
        prepare.check_vocab(bad, str(tmp_path))


def test_unknown_model_name_is_one_clear_error_offline(monkeypatch):
    import huggingface_hub.constants

    from emo_ray.models import materialize

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(FileNotFoundError, match="neither a registry name .*tiny-llama.* nor a local folder"):
        materialize("no-such-model-xyz")
