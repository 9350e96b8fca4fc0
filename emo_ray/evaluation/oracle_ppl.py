"""Oracle perplexity: how likely a separate (oracle) model finds the generations.

Each continuation is scored given its prompt; the corpus-level number is
``exp(sum NLL / sum tokens)`` over the continuations of one seed. The human continuations are
scored the same way, as the reference point.

``score_continuations`` is the one way any model scores continuations on Ray Data: the oracle
here, and the evaluated model (recall) and the surrogate (precision) in ``precision_recall.py``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from emo_ray.inference.executor import ExecutionConfig, ModelActor, map_rows
from emo_ray.models.loading import Fp32Head


HEAD_CHUNK_TOKENS = 256
"""Continuation tokens per output-head chunk: a chunk's fp32 logits are ``256 x V`` (268 MB for
Gemma-3's 262,144-token vocabulary, where a whole batch of 16 x ~90 tokens was 1.4 GB, twice over
with its log-softmax); below ~128 rows the GEMM re-reads the fp32 head per chunk and slows down."""


class ContinuationNLL(ModelActor):
    """Ray Data stage: rows ``prefix, continuation`` -> ``nll_sum, n_tokens`` of the continuation.

    ``fp32_head=False`` (opt-in, ``oracle.fp32_head``) runs the output head in the body's bf16 too:
    the head is most of the oracle's work (Gemma-3-270M: 168M of its 268M weights, ~80 % of the
    FLOPs per continuation token) and fp32 GEMMs run at a fifth of bf16's rate on this CPU
    (benchmarks/README.md); the logits are then rounded to 2^-9 of their size."""

    def __init__(self, model_path: str, threads: int = 1, device: str = "cpu", dtype: str = "fp32",
                 fp32_head: bool = True):
        super().__init__(threads, device)
        from emo_ray.models.loading import load_for_eval

        # dtype: execution.dtype; the head stays fp32 (unless fp32_head=False) and the
        # log-sum-exp / NLL sums run in fp32
        self.model, self.tokenizer = load_for_eval(model_path, device, dtype=dtype, fp32_head=fp32_head)

    @torch.no_grad()
    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        seqs, starts = [], []
        for prefix, cont in zip(batch["prefix"], batch["continuation"]):
            p = self.tokenizer(prefix)["input_ids"]
            c = self.tokenizer(cont, add_special_tokens=False)["input_ids"]
            if not p:  # nothing to condition on: the first continuation token is not scored
                p, c = c[:1], c[1:]
            seqs.append(p + c)
            starts.append(len(p))
        from emo_ray.models.loading import input_device, pad_batch

        device = input_device(self.model)
        ids, mask = pad_batch(seqs, side="right", device=device)
        target = torch.zeros((len(seqs), ids.shape[1] - 1), dtype=torch.bool)
        for r, (s, st) in enumerate(zip(seqs, starts)):
            target[r, st - 1 : len(s) - 1] = True  # logits at t predict token t + 1
        head = self.model.get_output_embeddings()
        softcap = getattr(self.model.config.get_text_config(), "final_logit_softcapping", None)
        if head is not None and not softcap:
            # The head only where a continuation token is predicted: the prefix positions' logits
            # are never used, and the (fp32) head is the part bf16 does not speed up.
            hidden = self.model.base_model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state[:, :-1]
            sel = target.to(hidden.device)
            nll_tok = token_nll(hidden[sel], ids[:, 1:][sel], head)
            nll = torch.zeros(target.shape, dtype=torch.float64).masked_scatter_(target, nll_tok).sum(-1).numpy()
        else:
            logits = self.model(input_ids=ids, attention_mask=mask).logits.float()
            logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1).double().cpu()
            nll = (-logp * target).sum(-1).numpy()
        return batch.assign(nll_sum=nll, n_tokens=target.sum(-1).numpy().astype(np.int64))


def token_nll(hidden: torch.Tensor, tokens: torch.Tensor, head, chunk: int = HEAD_CHUNK_TOKENS) -> torch.Tensor:
    """``-log softmax(head(hidden))[token]`` per row of ``hidden`` (K, d), float64 on the CPU.

    Computed as ``logsumexp(logits) - logits[token]`` a chunk of rows at a time into one reused
    logits buffer, the exponentials in place: the same fp32 arithmetic as ``log_softmax`` +
    ``gather`` up to rounding in the last bits, without the second ``K x V`` buffer, one pass less
    over the logits, and no fresh (page-faulted) buffer per chunk (benchmarks/README.md,
    "Evaluation stages")."""
    out = torch.empty(hidden.shape[0], dtype=torch.float64)
    weight = getattr(head, "weight", None)
    into_buffer = isinstance(head, torch.nn.Linear | Fp32Head) and head.bias is None and weight.dtype == torch.float32
    buf = torch.empty((min(chunk, hidden.shape[0]), weight.shape[0]), device=weight.device) if into_buffer else None
    for s in range(0, hidden.shape[0], chunk):
        h = hidden[s : s + chunk]
        # An fp32 head writes into the buffer (torch.mm(out=) is F.linear's GEMM); others allocate.
        logits = torch.mm(h.float(), weight.t(), out=buf[: len(h)]) if into_buffer else head(h).float()
        picked = logits.gather(-1, tokens[s : s + chunk].to(logits.device).unsqueeze(-1)).squeeze(-1)
        top = logits.amax(-1, keepdim=True)
        lse = top.squeeze(-1) + logits.sub_(top).exp_().sum(-1).log()
        out[s : s + chunk] = (lse - picked).double().cpu()
    return out


def score_continuations(rows: list[dict], model_path: str, *, execution: ExecutionConfig, batch_size: int,
                        fp32_head: bool = True) -> list[dict]:
    """``rows`` (``prefix``, ``continuation`` and any passthrough keys) scored by ``model_path``
    (a loadable folder or hub id): each row comes back with ``nll_sum`` and ``n_tokens``."""
    return map_rows(rows, ContinuationNLL, {"model_path": model_path, "fp32_head": fp32_head}, execution=execution,
                    batch_size=batch_size)


def mean_token_nll(nll_sums, n_tokens) -> float:
    """Token-weighted mean NLL (nats per token), ``sum NLL / sum tokens``: the log of
    ``corpus_perplexity`` over the same rows."""
    total = float(np.sum(n_tokens))
    if total == 0:
        raise ValueError("no tokens to compute a perplexity over")
    return float(np.sum(nll_sums) / total)


def corpus_perplexity(nll_sums, n_tokens) -> float:
    return float(np.exp(mean_token_nll(nll_sums, n_tokens)))
