"""Decoding strategies for open-ended generation, as pure functions of next-token logits.

The paper (4.1) samples with unbiased ancestral sampling (top_k=0, top_p=1, temperature 1) so
that the metrics judge the model distribution itself, not a truncation of it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Decoder:
    top_k: int = 0
    """Keep the k most likely tokens (0: all)."""
    top_p: float = 1.0
    """Keep the smallest set of tokens with probability mass >= top_p (1: all)."""
    temperature: float = 1.0
    greedy: bool = False


DECODERS: dict[str, Decoder] = {
    "ancestral": Decoder(),
    "greedy": Decoder(greedy=True),
    "top_k_50": Decoder(top_k=50),
    "top_p_0.95": Decoder(top_p=0.95),
    "temperature_0.7": Decoder(temperature=0.7),
}


def get_decoder(name: str) -> Decoder:
    try:
        return DECODERS[name]
    except KeyError:
        raise ValueError(f"{name!r} is not a decoder; valid: {sorted(DECODERS)}") from None


def next_token_probs(logits: torch.Tensor, dec: Decoder) -> torch.Tensor:
    """(B, V) logits -> (B, V) sampling distribution after temperature, top-k and top-p."""
    logits = logits.float() / dec.temperature
    if dec.top_k > 0:
        kth = torch.topk(logits, min(dec.top_k, logits.size(-1)), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if dec.top_p < 1.0:
        sorted_p, order = torch.sort(probs, dim=-1, descending=True)
        # Drop a token when the mass before it already reaches top_p (the top token always stays).
        drop_sorted = (sorted_p.cumsum(-1) - sorted_p) >= dec.top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        probs = probs.masked_fill(drop, 0.0)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def choose(logits: torch.Tensor, dec: Decoder, generators: list[torch.Generator]) -> torch.Tensor:
    """Next token per row; row r draws from its own generator so that a prompt's sample does not
    depend on which other prompts share its batch."""
    if dec.greedy:
        return logits.argmax(-1)
    probs = next_token_probs(logits, dec)
    # Inverse-CDF draw: one uniform per row from its own generator, located in the row's float64
    # cumulative distribution (the first index whose CDF exceeds u * total). Exact, like
    # ``torch.multinomial``, which for one draw spends a fp32 exponential per vocabulary entry
    # (49,152 per row and token for SmolLM2: ~45 % of a batch-128 sampling step on one CPU thread,
    # benchmarks/README.md). A token of probability 0 is never chosen: its CDF equals its
    # predecessor's.
    if len(generators) != probs.size(0):
        raise ValueError(f"{probs.size(0)} rows but {len(generators)} generators")
    cdf = probs.double().cumsum(-1)
    u = torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in generators])  # host, as the generators
    target = u.unsqueeze(-1) * cdf[:, -1:]
    return torch.searchsorted(cdf, target, right=True).squeeze(-1).clamp_(max=probs.size(-1) - 1)
