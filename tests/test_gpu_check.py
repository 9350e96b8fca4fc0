"""scripts/gpu_check.sh: its CPU dry path runs here; the real run runs where there is a GPU."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import fresh_store

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def _gpu_check_module():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _run(*args, timeout=300):
    return subprocess.run([str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})


def test_dry_run_validates_every_config_and_prints_the_plan(tmp_path):
    r = _run("--dry-run", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout
    # five training runs, the ZeRO-3 reload and two evaluations, each validated by `emo-ray show-config`
    assert out.count("config ok:") == 8, out
    assert "[train] zero2-chunked" in out and "[train] zero2-reference" in out and "[train] zero3" in out
    assert "[eval] eval-cuda" in out
    # issue 27: fp16 LoRA chunked-vs-reference pair, ZeRO-3 export reload, longest MMLU items
    assert "[train] fp16-lora-auto" in out and "[train] fp16-lora-reference" in out
    assert "loss_impl=auto, zero_stage=0, precision=fp16, use_gpu=true" in out
    assert "[reload] zero3-reload" in out and "[eval] icl-long-mmlu" in out
    assert "model.gradient_checkpointing=true" in out and "model=opt-125m" in out
    for needle in ("loss_impl=chunked, zero_stage=2, precision=bf16, use_gpu=true",
                   "loss_impl=reference, zero_stage=2, precision=bf16, use_gpu=true",
                   "zero_stage=3, precision=bf16, use_gpu=true",
                   "gpus_per_actor=1.0", "name=smollm2-135m"):
        assert needle in out, needle
    assert "emo-ray train configs/smollm2_wikitext2.yaml" in out
    assert "emo-ray eval configs/eval/quick.yaml" in out
    assert "every config above is valid; nothing was run" in out
    assert not (tmp_path / "mlflow.db").exists(), "a dry run must not run anything"


def test_dry_run_fails_on_an_invalid_config():
    gc = _gpu_check_module()
    step = gc.plan(Path("/tmp/x"), 5)[0]
    step.argv.append("train.zero_stag=3")
    with pytest.raises(SystemExit, match="zero2-chunked: config invalid: .*zero_stag"):
        gc.validate(step)


def test_plan_covers_what_the_check_claims():
    gc = _gpu_check_module()
    steps = gc.plan(Path("/tmp/x"), 30)
    train = {s.name: s.argv for s in steps if s.kind == "train"}
    assert {"zero2-chunked", "zero2-reference", "zero3", "fp16-lora-auto", "fp16-lora-reference"} == set(train)
    for argv in train.values():
        assert "model.name=smollm2-135m" in argv and "train.precision=bf16" in argv and "ray.use_gpu=true" in argv
        assert "ray.num_workers=1" in argv  # one GPU
    assert "train.loss_impl=chunked" in train["zero2-chunked"] and "train.loss_impl=reference" in train["zero2-reference"]
    assert "train.zero_stage=3" in train["zero3"]
    assert {"fp16-lora-auto", "fp16-lora-reference"} <= set(train)
    for impl in ("auto", "reference"):
        argv = train[f"fp16-lora-{impl}"]
        assert {"train.precision=fp16", "train.zero_stage=0", f"train.loss_impl={impl}", "train.lora.rank=8"} <= set(argv)
    assert "model.gradient_checkpointing=true" in train["zero3"]
    (reload,) = [s for s in steps if s.kind == "reload"]
    assert reload.argv == train["zero3"]  # reads the ZeRO-3 run's own validation data
    ev, long_mmlu = [s for s in steps if s.kind == "eval"]
    assert "execution.gpus_per_actor=1" in ev.argv and "model=mlflow:{zero2-chunked}" in ev.argv
    assert "model=opt-125m" in long_mmlu.argv and "icl.tasks=[mmlu]" in long_mmlu.argv
    assert long_mmlu.env["EMO_RAY_DATA"].startswith("/tmp/x")


def test_lora_with_best_val_loss_export_is_refused_by_the_dry_run():
    """Issue 27.11 is caught before any GPU time: the same validation the dry run applies."""
    gc = _gpu_check_module()
    step = next(s for s in gc.plan(Path("/tmp/x"), 5) if s.name == "fp16-lora-auto")
    step.argv.append("train.select_checkpoint=best_val_loss")
    with pytest.raises(SystemExit, match="best_val_loss cannot be combined with train.lora"):
        gc.validate(step)


def test_longest_mmlu_root_keeps_only_the_longest_items_and_links_the_rest(tmp_path):
    import json

    gc = _gpu_check_module()
    src = tmp_path / "data"
    (src / "mmlu").mkdir(parents=True)
    (src / "sst2").mkdir()
    (src / "sst2" / "train.jsonl").write_text("{}\n")
    (src / "mmlu" / "dev.jsonl").write_text('{"text": "d"}\n')
    items = [{"text": "q" * n, "choices": ["a" * c for c in (1, 2, 3, 4)], "label": 0} for n in (5, 300, 40, 900, 7)]
    (src / "mmlu" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items))
    dest = gc.longest_mmlu_root(src, tmp_path / "long", n=2)
    kept = [json.loads(line) for line in (dest / "mmlu" / "test.jsonl").read_text().splitlines()]
    assert [len(r["text"]) for r in kept] == [900, 300]
    assert (dest / "mmlu" / "dev.jsonl").read_text() == '{"text": "d"}\n'
    assert (dest / "sst2" / "train.jsonl").exists()
    assert (src / "mmlu" / "test.jsonl").read_text().count("\n") == 5  # the real data is untouched


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch missing")
def test_without_cuda_the_real_run_refuses():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: test_real_run_on_gpu covers it")
    r = _run()
    assert r.returncode == 2
    assert "no CUDA device" in r.stderr


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


@pytest.mark.skipif(not _has_cuda(), reason="needs a CUDA GPU (scripts/gpu_check.sh proves the GPU path)")
def test_real_run_on_gpu(tmp_path):
    r = _run("--out", str(tmp_path), timeout=1800)
    sys.stdout.write(r.stdout[-5000:])
    assert r.returncode == 0, r.stdout[-5000:] + r.stderr[-5000:]
    assert "chunked vs reference first_loss" in r.stdout and "FAILED" not in r.stdout


def test_numbers_are_read_from_mlflow_as_the_worker_logs_them(tmp_path):
    """tokens/s, first-step loss, validation loss and the loss path, from a store shaped like a
    training run's (metric names of emo_ray/train/step.py)."""
    from mlflow import MlflowClient

    gc = _gpu_check_module()
    uri = fresh_store(tmp_path / "mlflow.db")
    client = MlflowClient(uri)
    exp = client.create_experiment("gpu-check")
    run = client.create_run(exp, run_name="gpu-check-zero2-chunked")
    rid = run.info.run_id
    norms = [float("inf"), 0.8, 0.7, 0.6, 0.5]  # fp16: the first step overflowed at the initial scale
    for step, (tps, loss) in enumerate([(10.0, 3.0), (500.0, 2.9), (1000.0, 2.8), (1100.0, 2.7), (1200.0, 2.6)], 1):
        client.log_metric(rid, "train/tokens_per_s", tps, step=step)
        client.log_metric(rid, "train/loss", loss, step=step)
        client.log_metric(rid, "train/grad_norm", norms[step - 1], step=step)
    client.log_metric(rid, "val/loss", 2.5, step=5)
    client.log_param(rid, "train.chunked_loss", "True")
    client.set_terminated(rid)
    assert gc.run_id_by_name(uri, "gpu-check-zero2-chunked") == rid
    numbers = gc.train_numbers(uri, rid)
    assert numbers == {"tokens_per_s": 1100.0, "first_loss": 3.0, "first_grad_norm": 0.8, "val_loss": 2.5,
                       "chunked": "True"}


def test_peak_memory_without_nvidia_smi_reads_zero(monkeypatch):
    gc = _gpu_check_module()
    monkeypatch.setenv("PATH", "/nonexistent")
    with gc.PeakMemory(interval=0.01) as mem:
        pass
    assert mem.peak_mib == 0 and gc.PeakMemory.now() == 0


def test_write_long_mmlu_only_writes_the_data_root(tmp_path, monkeypatch):
    import json

    gc = _gpu_check_module()
    src = tmp_path / "data" / "mmlu"
    src.mkdir(parents=True)
    rows = [{"text": "x" * n, "choices": ["a", "b"], "label": 0} for n in range(1, 200)]
    (src / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setenv("EMO_RAY_DATA", str(tmp_path / "data"))
    assert gc.main(["--write-long-mmlu", str(tmp_path / "long")]) == 0
    kept = (tmp_path / "long" / "mmlu" / "test.jsonl").read_text().splitlines()
    assert len(kept) == gc.LONG_MMLU_ITEMS and json.loads(kept[0])["text"] == "x" * 199
