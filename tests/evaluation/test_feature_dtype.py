"""Issue 27, item 7: the feature cache key and the features' identity name the dtype the GPU
actors compute in, not the one a CPU-only driver would pick for ``dtype: auto``."""
from __future__ import annotations

import pytest

from emo_ray import precision
from emo_ray.evaluation import featurize as fz
from emo_ray.inference.executor import ExecutionConfig

GPU_RAY = ExecutionConfig(executor="ray", gpus_per_actor=1, cpus_per_actor=1, dtype="auto", progress_bar=False)


@pytest.fixture
def cpu_driver_bf16_gpus(monkeypatch):
    """The driver has no CUDA (``cuda_has_bf16`` is False here); a task run on an actor slot
    sees a bf16-capable GPU, as on an A100 node. Records each probe."""
    monkeypatch.setattr(precision, "cuda_has_bf16", lambda: False)
    monkeypatch.setattr(fz, "_ACTOR_DTYPE", {}, raising=False)
    probes = []

    def on_gpu_node(execution, fn, *args, **kwargs):
        probes.append(execution)
        with pytest.MonkeyPatch.context() as m:
            m.setattr(precision, "cuda_has_bf16", lambda: True)
            return fn(*args, **kwargs)

    monkeypatch.setattr(fz, "on_actor_slot", on_gpu_node, raising=False)
    return probes


def test_auto_resolves_on_the_actor_slot_not_the_driver(cpu_driver_bf16_gpus):
    assert precision.resolve("auto", "cuda") == "fp32"  # what the driver alone would say
    assert fz.resolved_dtype(GPU_RAY) == "bf16"
    assert fz.resolved_dtype(GPU_RAY) == "bf16"
    assert len(cpu_driver_bf16_gpus) == 1  # one probe per execution shape, not one per call


def test_cache_key_and_actors_use_the_resolved_dtype(cpu_driver_bf16_gpus, monkeypatch, tmp_path):
    monkeypatch.setenv("EMO_RAY_CACHE", str(tmp_path))
    seen = {}

    def fake_map_rows(rows, actor_cls, ctor_kwargs, *, execution, batch_size):
        seen["dtype"] = execution.dtype
        return [{"features": [0.5, 1.0]} for _ in rows]

    monkeypatch.setattr("emo_ray.inference.executor.map_rows", fake_map_rows)
    texts = ["one", "two"]
    fz.featurize(texts, "m", pooling="mean", max_tokens=8, batch_size=2, execution=GPU_RAY, cache=True)
    assert seen["dtype"] == "bf16"  # the actors compute exactly what the key says, never "auto"
    bf16_key = fz.feature_cache_path(fz.featurizer_identity("m", "mean", 8, -1, "bf16"), texts)
    fp32_key = fz.feature_cache_path(fz.featurizer_identity("m", "mean", 8, -1, "fp32"), texts)
    assert bf16_key.exists() and not fp32_key.exists()


def test_fixed_dtype_and_local_actors_resolve_in_process(cpu_driver_bf16_gpus):
    assert fz.resolved_dtype(ExecutionConfig(executor="ray", gpus_per_actor=1, dtype="fp16")) == "fp16"
    assert fz.resolved_dtype(ExecutionConfig(executor="local", gpus_per_actor=1, dtype="auto")) == "fp32"
    assert not cpu_driver_bf16_gpus  # neither needs a probe
