"""Oracle NLL of a continuation given its prompt, against a naive per-text reference."""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from emo_ray.evaluation.oracle_ppl import ContinuationNLL, corpus_perplexity


def test_matches_naive_reference(tiny_path, tiny):
    model, tok = tiny
    batch = pd.DataFrame({"prefix": ["Hello there", "A"], "continuation": [" general Kenobi", " longer continuation here"]})
    out = ContinuationNLL(tiny_path, threads=1)(batch)
    for (_, row), nll, n in zip(batch.iterrows(), out["nll_sum"], out["n_tokens"]):
        p, c = tok(row["prefix"])["input_ids"], tok(row["continuation"], add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([p + c])).logits[0].double(), -1)
        ref = -sum(float(logp[len(p) - 1 + k, t]) for k, t in enumerate(c))
        assert n == len(c)
        assert math.isclose(nll, ref, rel_tol=1e-5)


def test_corpus_perplexity():
    assert math.isclose(corpus_perplexity([2.0, 4.0], [2, 4]), math.e)
    with pytest.raises(ValueError, match="no tokens"):
        corpus_perplexity([], [])


@pytest.mark.parametrize("chunk", [1, 3, 64])
def test_token_nll_matches_log_softmax(chunk):
    """The chunked log-sum-exp equals ``-log_softmax(...)[token]`` to fp32 rounding, any chunking."""
    from emo_ray.evaluation.oracle_ppl import token_nll

    g = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(8, 50, bias=False)
    torch.nn.init.normal_(head.weight, std=3.0, generator=g)
    hidden, tokens = torch.randn(7, 8, generator=g), torch.randint(0, 50, (7,), generator=g)
    with torch.no_grad():
        ref = -torch.log_softmax(head(hidden).double(), -1).gather(-1, tokens[:, None]).squeeze(-1)
        got = token_nll(hidden, tokens, head, chunk=chunk)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_bf16_head_is_opt_in(tiny_path):
    from emo_ray.models.loading import Fp32Head

    assert isinstance(ContinuationNLL(tiny_path, dtype="bf16").model.get_output_embeddings(), Fp32Head)
    head = ContinuationNLL(tiny_path, dtype="bf16", fp32_head=False).model.get_output_embeddings()
    assert not isinstance(head, Fp32Head) and head.weight.dtype == torch.bfloat16


def test_token_nll_of_a_bf16_head_uses_its_own_logits():
    """A head that is not fp32 (``oracle.fp32_head: false``) is called as is; the NLL is taken
    over its (bf16-rounded) logits in fp32."""
    from emo_ray.evaluation.oracle_ppl import token_nll

    g = torch.Generator().manual_seed(1)
    head = torch.nn.Linear(8, 50, bias=False).to(torch.bfloat16)
    hidden, tokens = torch.randn(5, 8, generator=g).bfloat16(), torch.randint(0, 50, (5,), generator=g)
    with torch.no_grad():
        ref = -torch.log_softmax(head(hidden).double(), -1).gather(-1, tokens[:, None]).squeeze(-1)
        got = token_nll(hidden, tokens, head, chunk=2)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
