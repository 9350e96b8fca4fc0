"""Lowest-perplexity ICL inference (paper 4.2, Appendix A.4): score every filled prompt of an item.

Two scorers with the same output, the negative log-likelihood of each candidate's *whole* prompt
(demonstrations included, as OpenICL's ``PPLInferencer`` computes it):

* ``score_plain``: one forward pass per candidate prompt (what OpenICL does).
* ``score_shared_prefix``: the candidates of an item differ only in their label words, so the
  demonstrations and the test input (their longest common *token* prefix) run once; then each
  item's candidate continuations run in one pass on a stride-0 view of that item's row of the
  prefix KV cache, whose layers do not keep what the pass appends. Items of a batch are
  left-padded so that their prefixes run in one forward pass.
  (Repeating the cache for every candidate held B x C copies of the prefix: ~33 GB for LLaMA-13B
  at 2k-token MMLU prompts, beside its 26 GB of weights; issue 27.3.)

* ``score_rank_only``: ``score_shared_prefix`` without the output head on the shared prefix of an
  item whose candidates all have the same number of tokens. There the prefix NLL is one constant
  added to every candidate and divided by one length, so it cannot change which candidate has the
  lowest perplexity under any normalization (``icl.predict``); such an item's ``nll_sum`` holds
  its candidates' own tokens only. Items whose candidates differ in length (TREC's label words)
  are scored whole. The head is ``vocab x d`` per position (49,152 x 576 fp32 for SmolLM2, about a
  quarter of the scoring time on CPU), run on the ~300 prefix positions only to be subtracted away.

All group items into batches of at most ``batch_items`` items and ``batch_tokens`` padded tokens
per forward pass: a batch of long prompts is smaller, so the fp32 logits and log-probabilities of a
pass (2 x 4 B x vocabulary per token) stay bounded whatever the prompt lengths.

The common prefix is taken on token ids of the full prompts, not on strings, so a label word that
merges with the preceding space into one BPE token changes nothing: both scorers see exactly the
same token sequences and differ only by float rounding.

Shapes: an item is ``C`` candidates, each a list of token ids; the result per item is
``CandidateNLL`` with arrays of shape ``(C,)``.
"""
from __future__ import annotations

import copy
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


BATCH_TOKENS = 8192
"""Default bound on rows x padded length of one forward pass: ~2.6 GB of fp32 logits and
log-probabilities at LLaMA's 32k vocabulary."""


def token_batches(items: Sequence, batch_items: int, batch_tokens: int, cost) -> list[list[int]]:
    """Consecutive item indices grouped into batches of at most ``batch_items`` items whose
    ``cost(batch)`` (padded tokens of the batch's largest pass) is at most ``batch_tokens``; an item
    over the budget on its own still forms a batch of one."""
    if batch_items < 1 or batch_tokens < 1:
        raise ValueError(f"batch_items and batch_tokens must be >= 1, got {batch_items} and {batch_tokens}")
    batches: list[list[int]] = []
    for i in range(len(items)):
        last = batches[-1] if batches else None
        if last and len(last) < batch_items and cost([items[k] for k in last] + [items[i]]) <= batch_tokens:
            last.append(i)
        else:
            batches.append([i])
    return batches


def _plain_cost(batch) -> int:
    return sum(len(cands) for cands in batch) * max(len(c) for cands in batch for c in cands)


def _prefix_cost(batch) -> int:
    """The prefix pass (items x longest prefix) dominates; a continuation pass is one item's."""
    return len(batch) * max(max(len(c) for c in cands) for cands in batch)


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
def score_plain(model, items: Sequence[Sequence[Sequence[int]]], *, batch_items: int = 4,
                batch_tokens: int = BATCH_TOKENS) -> list[CandidateNLL]:
    """One forward pass per candidate prompt; the candidates of up to ``batch_items`` items (and
    ``batch_tokens`` padded tokens) share a right-padded batch."""
    _check(items)
    device = input_device(model)
    out: list[CandidateNLL] = []
    for group in token_batches(items, batch_items, batch_tokens, _plain_cost):
        batch = [items[k] for k in group]
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


def equal_lengths(cands: Sequence[Sequence[int]]) -> bool:
    """Every candidate has the same number of tokens: the shared prefix cannot change the ranking."""
    return len({len(c) for c in cands}) == 1


@torch.no_grad()
def score_shared_prefix(model, items: Sequence[Sequence[Sequence[int]]], *, batch_items: int = 4,
                        batch_tokens: int = BATCH_TOKENS, rank_only: bool = False) -> list[CandidateNLL]:
    """Run each item's shared prefix once and every candidate's remaining tokens on its KV cache.

    Up to ``batch_items`` items (and ``batch_tokens`` padded prefix tokens) go through one prefix
    pass (left-padded); then each item's candidate continuations run in one pass on its cache row.
    Items of one batch must have the same number of candidates (true within a task). With
    ``rank_only`` the prefix NLL of equal-length items is left out (``score_rank_only``).
    """
    _check(items)
    out: list[CandidateNLL] = []
    for group in token_batches(items, batch_items, batch_tokens, _prefix_cost):
        batch = [items[k] for k in group]
        n_cands = {len(c) for c in batch}
        if len(n_cands) != 1:
            raise ValueError(f"items of one batch must have the same number of candidates, got {sorted(n_cands)}")
        shared = [k for k, c in enumerate(batch) if common_prefix_length(c) > 0]
        # Candidates that differ from their first token share nothing: score them plainly.
        scored = dict(zip(shared, _score_batch(model, [batch[k] for k in shared], rank_only))) if shared else {}
        alone = [k for k in range(len(batch)) if k not in scored]
        if alone:
            scored.update(zip(alone, score_plain(model, [batch[k] for k in alone], batch_items=len(alone),
                                                 batch_tokens=batch_tokens)))
        out.extend(scored[k] for k in range(len(batch)))
    return out


def _read_only(layer):
    """Make ``layer.update`` return the concatenated keys and values without keeping them: the
    (C x (P + T)) concatenation lives while one layer's attention runs, not for the whole pass."""
    update = layer.update

    def update_without_storing(key_states, value_states, *args, **kwargs):
        keys, values = layer.keys, layer.values
        out = update(key_states, value_states, *args, **kwargs)
        layer.keys, layer.values = keys, values
        return out

    layer.update = update_without_storing
    return layer


def _item_cache(cache, b: int, rows: int):
    """Row ``b`` of ``cache`` seen as ``rows`` rows, without a copy: each layer's keys and values
    are a stride-0 view of that row (``expand``), and the layers do not store what the
    continuation appends. ``cache`` itself is never modified."""
    item = copy.copy(cache)
    item.layers = []
    for layer in cache.layers:
        view = copy.copy(layer)
        view.keys = layer.keys[b : b + 1].expand(rows, *layer.keys.shape[1:])
        view.values = layer.values[b : b + 1].expand(rows, *layer.values.shape[1:])
        item.layers.append(_read_only(view))
    return item


def score_rank_only(model, items: Sequence[Sequence[Sequence[int]]], *, batch_items: int = 4,
                    batch_tokens: int = BATCH_TOKENS) -> list[CandidateNLL]:
    """``score_shared_prefix`` that skips the prefix NLL where it cannot change the ranking."""
    return score_shared_prefix(model, items, batch_items=batch_items, batch_tokens=batch_tokens, rank_only=True)


def _prefix_nll(pre, ids, mask, skip: list[bool]) -> torch.Tensor:
    """(B,) float64 NLL of each row's prefix tokens, 0 where ``skip``. A token counts when it and
    the token predicting it are real (not left padding)."""
    if all(skip):
        return torch.zeros(len(ids), dtype=torch.float64, device=ids.device)
    nll = _masked(_token_nll(pre.logits[:, :-1], ids[:, 1:]), mask[:, :-1] * mask[:, 1:]).sum(-1)
    return nll.masked_fill(torch.tensor(skip, device=nll.device), 0.0)


def _score_batch(model, batch, rank_only: bool = False) -> list[CandidateNLL]:
    device = input_device(model)
    plen = [common_prefix_length(c) for c in batch]
    skip = [rank_only and equal_lengths(c) for c in batch]
    # Prefix pass, left-padded so that every row's last prefix token sits at position P - 1. Its
    # head runs on the last position only when no row's prefix NLL is wanted.
    ids, mask = pad_batch([cands[0][: plen[b]] for b, cands in enumerate(batch)], side="left", device=device)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    pre = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                **({"logits_to_keep": 1} if all(skip) else {}))
    prefix_nll = _prefix_nll(pre, ids, mask, skip)  # (B,)
    last_logp = torch.log_softmax(pre.logits[:, -1].float(), dim=-1)  # (B, V): predicts 1st continuation token
    cache = pre.past_key_values
    del pre
    # (B, C) on the device, read back once: no host sync per item, the passes queue up.
    totals = torch.stack([
        _continuations_nll(model, cache, b, mask[b : b + 1], plen[b], last_logp[b], [c[plen[b] :] for c in cands])
        + prefix_nll[b]
        for b, cands in enumerate(batch)
    ]).cpu().numpy()
    return [CandidateNLL(totals[b].copy(), np.array([len(c) for c in cands])) for b, cands in enumerate(batch)]


def _continuations_nll(model, cache, b: int, prefix_mask, plen: int, first_logp, conts) -> torch.Tensor:
    """(C,) float64 NLLs of one item's candidate continuations (right-padded into one pass) on
    row ``b`` of the prefix cache, seen as C rows without copying it."""
    cids, cmask = pad_batch([list(c) for c in conts], side="right", device=prefix_mask.device)
    C, T = cids.shape
    first = -first_logp[cids[:, 0]].double()  # the prefix pass already predicted each first token
    if T == 1:
        return first
    full_mask = torch.cat([prefix_mask.expand(C, -1), cmask], dim=1)
    cpos = plen + torch.arange(T, device=cids.device).expand(C, T)
    logits = model(input_ids=cids, attention_mask=full_mask, position_ids=cpos,
                   past_key_values=_item_cache(cache, b, C), use_cache=True).logits
    return first + _masked(_token_nll(logits[:, :-1], cids[:, 1:]), cmask[:, 1:]).sum(-1)


SCORERS = {"plain": score_plain, "shared_prefix": score_shared_prefix, "rank_only": score_rank_only}
"""Scorer by name: ``plain`` and ``shared_prefix`` return the same NLLs up to float rounding,
``rank_only`` the same predictions."""


def get_scorer(name: str):
    try:
        return SCORERS[name]
    except KeyError:
        raise ValueError(f"{name!r} is not an ICL scorer; valid: {sorted(SCORERS)}") from None
