"""``execution.dtype``: every evaluation stage loads its body in the resolved dtype, keeps the head
and the NLL / log-softmax sums in fp32, and ``auto`` resolves to bf16 on a bf16-capable CPU."""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from emo_ray import precision
from emo_ray.inference.executor import ExecutionConfig
from emo_ray.models.loading import Fp32Head, eval_dtype, load_for_eval


def body_dtypes(model) -> set:
    head = model.get_output_embeddings()
    head_ids = {id(p) for p in head.parameters()} if head is not None else set()
    return {p.dtype for p in model.parameters() if id(p) not in head_ids}


def test_load_for_eval_bf16_body_fp32_head(tiny_path):
    model, _ = load_for_eval(tiny_path, "cpu", dtype="bf16")
    assert body_dtypes(model) == {torch.bfloat16}
    assert isinstance(model.get_output_embeddings(), Fp32Head)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[1, 2, 3, 4]])).logits
    assert logits.dtype == torch.float32
    fp32, _ = load_for_eval(tiny_path, "cpu", dtype="fp32")
    assert {p.dtype for p in fp32.parameters()} == {torch.float32}
    with torch.no_grad():
        ref = fp32(input_ids=torch.tensor([[1, 2, 3, 4]])).logits
    assert float((logits - ref).abs().max()) < 0.05 * float(ref.abs().max())


def test_auto_dtype_follows_the_cpu(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    assert eval_dtype("auto", "cpu") == torch.bfloat16
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    assert eval_dtype("auto", "cpu") == torch.float32
    assert eval_dtype("fp32", "cpu") == torch.float32 and eval_dtype(torch.float64) == torch.float64


def test_execution_dtype_config_field():
    from emo_ray.evaluation.config import load_eval_config, EvalConfigError

    assert ExecutionConfig().dtype == "auto"
    with pytest.raises(EvalConfigError, match="fp16"):
        load_eval_config(None, ["execution.dtype=fp16"])


def test_every_stage_takes_dtype(tiny_path):
    from emo_ray.evaluation.featurize import Featurizer
    from emo_ray.inference.sampler import Sampler
    from emo_ray.evaluation.icl.evaluate_task import ICLScorer
    from emo_ray.evaluation.oracle_ppl import ContinuationNLL

    for stage in (Sampler(tiny_path, gen_tokens=4, dtype="bf16"), Featurizer(tiny_path, "mean", 16, dtype="bf16"),
                  ContinuationNLL(tiny_path, dtype="bf16"), ICLScorer(tiny_path, "shared_prefix", 2, dtype="bf16")):
        assert body_dtypes(stage.model) == {torch.bfloat16}, type(stage).__name__


def test_oracle_nll_bf16_close_to_fp32_and_fp32_sums(tiny_path):
    from emo_ray.evaluation.oracle_ppl import ContinuationNLL

    batch = pd.DataFrame({"prefix": ["Hello there", "A"], "continuation": [" general Kenobi", " longer continuation here"]})
    ref = ContinuationNLL(tiny_path, threads=1)(batch)
    out = ContinuationNLL(tiny_path, threads=1, dtype="bf16")(batch)
    for a, b in zip(out["nll_sum"], ref["nll_sum"]):
        assert isinstance(a, float) and math.isclose(a, b, rel_tol=2e-2)
    assert list(out["n_tokens"]) == list(ref["n_tokens"])


def test_feature_cache_key_includes_dtype():
    from emo_ray.evaluation.featurize import featurizer_identity

    assert featurizer_identity("m", "mean", 16) == featurizer_identity("m", "mean", 16, dtype="fp32")
    assert featurizer_identity("m", "mean", 16, dtype="bf16") != featurizer_identity("m", "mean", 16)
