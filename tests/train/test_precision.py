"""``train.precision`` / ``execution.dtype`` resolution (``emo_ray.precision``) and the MFU
denominator (``emo_ray.perf``)."""
from __future__ import annotations

import logging

import pytest
import torch

from emo_ray import perf, precision
from emo_ray.config import ConfigError, load_config


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.setattr(precision, "_said", set())


def test_auto_picks_bf16_on_this_cpu_exactly_when_it_has_avx512_bf16_or_amx():
    flags = precision.cpu_flags()
    native = bool({"avx512_bf16", "amx_bf16"} & flags)
    assert precision.cpu_has_bf16() == native
    assert precision.resolve("auto", "cpu") == ("bf16" if native else "fp32")


def test_auto_falls_back_to_fp32_without_the_instructions(monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    assert precision.resolve("auto", "cpu") == "fp32"
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    assert precision.resolve("auto", "cpu") == "bf16"
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"amx_bf16", "amx_tile"}))
    assert precision.torch_dtype("auto", "cpu") == torch.bfloat16


def test_explicit_values_and_fp16_on_cpu():
    assert precision.resolve("fp32", "cpu") == "fp32" and precision.resolve("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match="fp16"):
        precision.resolve("fp16", "cpu")
    with pytest.raises(ValueError, match="precision must be one of"):
        precision.resolve("int8", "cpu")


def test_choice_is_logged_once(caplog, monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    with caplog.at_level(logging.INFO, logger="emo_ray.precision"):
        for _ in range(3):
            precision.resolve("auto", "cpu", what="train")
    lines = [r.getMessage() for r in caplog.records if "precision auto" in r.getMessage()]
    assert lines == ["train: precision auto -> bf16 on cpu (avx512_bf16/amx_bf16 in the CPU flags)"]


def test_autocast_context():
    with precision.autocast("bf16", "cpu"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    with precision.autocast("fp32", "cpu"):
        assert not torch.is_autocast_enabled("cpu")


def test_config_accepts_bf16_on_cpu_and_refuses_fp16():
    assert load_config(None, ["train.precision=bf16"]).train.precision == "bf16"
    with pytest.raises(ConfigError, match="fp16 needs ray.use_gpu"):
        load_config(None, ["train.precision=fp16"])
    assert load_config(None, ["train.precision=fp16", "ray.use_gpu=true"]).train.precision == "fp16"


def test_mfu_and_cached_peak(tmp_path, monkeypatch):
    monkeypatch.setenv("EMO_RAY_CACHE", str(tmp_path))
    calls = []

    def fake(dtype, device="cpu", **kw):
        calls.append(dtype)
        return 4e11

    monkeypatch.setattr(perf, "measure_matmul", fake)
    assert perf.peak_flops(torch.bfloat16, "cpu", threads=1) == 4e11
    assert perf.peak_flops(torch.bfloat16, "cpu", threads=1) == 4e11
    assert calls == [torch.bfloat16]  # measured once per machine, then read from the cache
    assert perf.mfu(100_000_000, 200.0, 4e11) == pytest.approx(6 * 1e8 * 200 / 4e11)


def test_measure_matmul_runs():
    assert perf.measure_matmul(torch.float32, threads=1, shape=(64, 32, 64), repeats=1, min_time=0.01) > 0


def test_deepspeed_precision_config_per_device(monkeypatch):
    from emo_ray.train.deepspeed_setup import deepspeed_config, train_precision

    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"amx_bf16"}))
    cpu = load_config(None, ["train.precision=auto"])
    resolved = train_precision(cpu)
    assert resolved.name == "bf16" and resolved.autocast_dtype == torch.bfloat16
    assert resolved.weights_dtype == torch.float32  # CPU autocast: fp32 master weights in the module
    ds = deepspeed_config(cpu, resolved)  # CPU bf16 = autocast, DeepSpeed's own bf16/fp16 modes off
    assert ds["bf16"] == {"enabled": False} and ds["fp16"] == {"enabled": False}
    assert train_precision(load_config(None, ["train.precision=fp32"])).autocast_dtype is None
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2"}))
    assert train_precision(load_config(None, ["train.precision=auto"])).autocast_dtype is None
    monkeypatch.setattr(precision, "cuda_has_bf16", lambda: True)
    gpu = train_precision(load_config(None, ["ray.use_gpu=true"]))
    assert (gpu.name, gpu.autocast_dtype, gpu.weights_dtype) == ("bf16", None, torch.bfloat16)
    assert deepspeed_config(load_config(None, ["ray.use_gpu=true"]))["bf16"] == {"enabled": True}
    fp16 = load_config(None, ["ray.use_gpu=true", "train.precision=fp16"])
    assert deepspeed_config(fp16)["fp16"] == {"enabled": True} and train_precision(fp16).weights_dtype == torch.float16


def test_precision_is_resolved_once_per_worker(monkeypatch):
    """The worker resolves ``train.precision`` once and passes the result: DeepSpeed's config,
    the model's dtype and autocast read that object, never the setting again."""
    from emo_ray.train.deepspeed_setup import deepspeed_config, train_precision

    calls = []
    real = precision.resolve
    monkeypatch.setattr(precision, "resolve", lambda *a, **k: calls.append(a) or real(*a, **k))
    cfg = load_config(None, ["train.precision=auto"])
    resolved = train_precision(cfg)
    deepspeed_config(cfg, resolved)
    with resolved.autocast():
        pass
    assert len(calls) == 1
