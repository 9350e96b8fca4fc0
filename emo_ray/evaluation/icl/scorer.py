"""Lowest-perplexity ICL inference (paper 4.2, Appendix A.4): score every filled prompt of an item.

Two scorers with the same output, the negative log-likelihood of each candidate's *whole* prompt
(demonstrations included, as OpenICL's ``PPLInferencer`` computes it):

* ``score_plain``: one forward pass per candidate prompt (what OpenICL does).
* ``score_shared_prefix``: the candidates of an item differ only in their label words, so the
  demonstrations and the test input (their longest common *token* prefix) run once; the KV cache of
  that prefix is repeated for each candidate and only the label continuation runs per candidate.
  Items of a batch are left-padded so that their prefixes run in one forward pass.

The common prefix is taken on token ids of the full prompts, not on strings, so a label word that
merges with the preceding space into one BPE token changes nothing: both scorers see exactly the
same token sequences and differ only by float rounding.

Shapes: an item is ``C`` candidates, each a list of token ids; the result per item is
``CandidateNLL`` with arrays of shape ``(C,)``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from emo_ray.models.loading import input_device, pad_batch


@dataclass(frozen=True)
class CandidateNLL:
    """Per candidate of one item: summed NLL (float64) over the predicted tokens (every token but
    the first), and the number of tokens of the full prompt."""

    nll_sum: np.ndarray
    n_tokens: np.ndarray

    @property
    def n_predicted(self) -> np.ndarray:
        return self.n_tokens - 1


def _token_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(N, T, V) logits predicting (N, T) targets -> (N, T) NLL in float64 (summing many fp32
    terms in fp32 would make the two scorers disagree in the last digits more than needed)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1).double()


def _masked(nll: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``nll`` where ``mask`` is set, exactly 0 elsewhere."""
    return torch.where(mask.bool(), nll, torch.zeros((), dtype=nll.dtype, device=nll.device))


def _check(items: Sequence[Sequence[Sequence[int]]]) -> None:
    for i, cands in enumerate(items):
        if not cands:
            raise ValueError(f"item {i} has no candidates")
        for c in cands:
            if len(c) < 2:
                raise ValueError(f"item {i}: a candidate prompt of {len(c)} token(s) has no token to predict")


@torch.no_grad()
def score_plain(model, items: Sequence[Sequence[Sequence[int]]], *, batch_items: int = 4) -> list[CandidateNLL]:
    """One forward pass per candidate prompt; the candidates of ``batch_items`` items share a
    right-padded batch."""
    _check(items)
    device = input_device(model)
    out: list[CandidateNLL] = []
    for start in range(0, len(items), batch_items):
        batch = items[start : start + batch_items]
        flat = [list(c) for cands in batch for c in cands]
        ids, mask = pad_batch(flat, side="right", device=device)
        logits = model(input_ids=ids, attention_mask=mask).logits
        # where, not a product: a padding position's value (even a NaN from a low-precision
        # kernel on a row it never scores) must not reach the sum (NaN * 0 is NaN).
        nll = _masked(_token_nll(logits[:, :-1], ids[:, 1:]), mask[:, 1:]).sum(-1).cpu().numpy()
        k = 0
        for cands in batch:
            out.append(CandidateNLL(nll[k : k + len(cands)].copy(), np.array([len(c) for c in cands])))
            k += len(cands)
    return out


def common_prefix_length(cands: Sequence[Sequence[int]]) -> int:
    """Longest common token prefix, leaving at least one token of every candidate to score
    with the cache (a candidate that is a prefix of another still gets its last token scored).
    0 when the candidates differ in their first token: nothing to share."""
    limit = min(len(c) for c in cands) - 1
    n = 0
    while n < limit and all(c[n] == cands[0][n] for c in cands):
        n += 1
    return n


@torch.no_grad()
def score_shared_prefix(model, items: Sequence[Sequence[Sequence[int]]], *, batch_items: int = 4) -> list[CandidateNLL]:
    """Run each item's shared prefix once and every candidate's remaining tokens on its KV cache.

    ``batch_items`` items go through one prefix pass (left-padded) and one continuation pass of
    ``batch_items * C`` rows (right-padded). Items of one batch must have the same number of
    candidates ``C`` (true within a task: C is the number of labels).
    """
    _check(items)
    out: list[CandidateNLL] = []
    for start in range(0, len(items), batch_items):
        batch = items[start : start + batch_items]
        n_cands = {len(c) for c in batch}
        if len(n_cands) != 1:
            raise ValueError(f"items of one batch must have the same number of candidates, got {sorted(n_cands)}")
        C = n_cands.pop()
        shared = [k for k, c in enumerate(batch) if common_prefix_length(c) > 0]
        # Candidates that differ from their first token share nothing: score them plainly.
        scored = dict(zip(shared, _score_batch(model, [batch[k] for k in shared], C))) if shared else {}
        alone = [k for k in range(len(batch)) if k not in scored]
        if alone:
            scored.update(zip(alone, score_plain(model, [batch[k] for k in alone], batch_items=len(alone))))
        out.extend(scored[k] for k in range(len(batch)))
    return out


def _score_batch(model, batch, C: int) -> list[CandidateNLL]:
    B = len(batch)
    device = input_device(model)
    plen = [common_prefix_length(c) for c in batch]
    # Prefix pass, left-padded so that every row's last prefix token sits at position P - 1.
    ids, mask = pad_batch([cands[0][: plen[b]] for b, cands in enumerate(batch)], side="left", device=device)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    pre = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
    # A token counts when it and the token predicting it are real (not left padding).
    prefix_nll = _masked(_token_nll(pre.logits[:, :-1], ids[:, 1:]), mask[:, :-1] * mask[:, 1:]).sum(-1)  # (B,)
    last_logp = torch.log_softmax(pre.logits[:, -1].float(), dim=-1)  # (B, V): predicts 1st continuation token
    cache = pre.past_key_values
    del pre
    cache.batch_repeat_interleave(C)  # rows b*C .. b*C+C-1 hold item b's prefix

    conts = [list(c[plen[b] :]) for b, cands in enumerate(batch) for c in cands]
    cids, cmask = pad_batch(conts, side="right", device=device)
    T = cids.shape[1]
    prefix_rows = torch.arange(B, device=device).repeat_interleave(C)
    full_mask = torch.cat([mask[prefix_rows], cmask], dim=1)
    cpos = torch.tensor(plen, device=device)[prefix_rows].unsqueeze(1) + torch.arange(T, device=device)
    logits = model(input_ids=cids, attention_mask=full_mask, position_ids=cpos, past_key_values=cache, use_cache=True).logits
    first = -last_logp[prefix_rows].gather(-1, cids[:, :1]).squeeze(-1).double()  # (B*C,)
    rest = (_token_nll(logits[:, :-1], cids[:, 1:]) * cmask[:, 1:]).sum(-1)
    total = ((first + rest).view(B, C) + prefix_nll.unsqueeze(1)).cpu()
    return [
        CandidateNLL(total[b].numpy().copy(), np.array([len(c) for c in cands])) for b, cands in enumerate(batch)
    ]


SCORERS = {"plain": score_plain, "shared_prefix": score_shared_prefix}
"""Scorer by name; both return the same NLLs up to float rounding."""


def get_scorer(name: str):
    try:
        return SCORERS[name]
    except KeyError:
        raise ValueError(f"{name!r} is not an ICL scorer; valid: {sorted(SCORERS)}") from None
