"""The sampler stage: continuations of token prefixes, one reproducible draw per (prompt, seed).

Each (prompt, seed) row draws from its own ``torch.Generator`` seeded by both (``row_seed``): its
random numbers do not depend on the batch or actor it lands in, and in fp32 neither does its sample.
In bf16 the rows sharing a decode change the matmuls' rounding and so, now and then, a drawn token
(benchmarks/README.md, "Evaluation stages"); the same rows in the same batches reproduce exactly.
Used by the open-ended evaluation
(paper 4.1) and by the oracle-corpus sampler (paper 4.1.3), which is why it sits below both.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from emo_ray.inference.decoders import choose, get_decoder
from emo_ray.inference.executor import ModelActor


def row_seed(seed: int, prompt_id: int) -> int:
    return (seed * 1_000_003 + prompt_id) % (2**63 - 1)


class Sampler(ModelActor):
    """Ray Data stage: rows ``prompt_id, seed, decoder, prefix_ids`` -> ``gen_ids, generation, ended``.
    Up to ``gen_tokens`` new tokens; EOS cannot be drawn among the first ``min_tokens`` (HF's
    ``min_new_tokens``), so ``min_tokens == gen_tokens`` forces the length."""

    def __init__(self, model_path: str, gen_tokens: int, threads: int = 1, device: str = "cpu", dtype: str = "fp32",
                 min_tokens: int = 0, pad_prefixes: bool = False):
        super().__init__(threads, device)
        from emo_ray.models.loading import load_for_eval

        # dtype: execution.dtype; in bf16 the head stays fp32, so sampling probabilities are fp32
        self.model, self.tokenizer = load_for_eval(model_path, device, dtype=dtype)
        if not 0 <= min_tokens <= gen_tokens:
            raise ValueError(f"min_tokens must lie in [0, gen_tokens={gen_tokens}], got {min_tokens}")
        self.gen_tokens, self.min_tokens = gen_tokens, min_tokens
        # Opt-in: the whole batch as one left-padded decode (see ``sample``); off, rows of equal
        # prefix length sample together (the samples the evaluation has always produced).
        self.pad_prefixes = pad_prefixes
        self.eos = self.model.generation_config.eos_token_id
        self.eos = set(self.eos if isinstance(self.eos, list) else [self.eos] if self.eos is not None else [])

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        out = []
        # Word-window prefixes differ in length: equal lengths sample together, without padding.
        length = batch["prefix_ids"].map(lambda p: 0 if self.pad_prefixes else len(p))
        for (decoder, _), group in batch.groupby([batch["decoder"], length], sort=False):
            prefixes = [list(p) for p in group["prefix_ids"]]
            gens = [torch.Generator().manual_seed(row_seed(int(s), int(p))) for s, p in zip(group["seed"], group["prompt_id"])]
            ids, ended = sample(self.model, prefixes, get_decoder(decoder), gens, self.gen_tokens, self.eos,
                                min_new=self.min_tokens, pad=self.pad_prefixes)
            texts = [self.tokenizer.decode(g, skip_special_tokens=True) for g in ids]
            out.append(group.assign(gen_ids=[np.array(g, dtype=np.int64) for g in ids], generation=texts, ended=ended))
        return pd.concat(out).loc[batch.index]


@torch.no_grad()
def sample(model, prefixes: list[list[int]], decoder, generators, max_new: int, eos: set[int], *, min_new: int = 0,
           pad: bool = False):
    """Sample up to ``max_new`` tokens after ``prefixes``; a row stops at EOS (which
    is not kept). For the first ``min_new`` steps the EOS logits are -inf before the decoder sees
    them, as HF ``generate(min_new_tokens=...)`` does (``MinNewTokensLengthLogitsProcessor``, a
    logits processor applied before top-k / top-p), which the official ``test_batch`` uses to get
    exactly ``decode_newlen`` tokens. Returns (token lists, ended-by-EOS flags). Inputs go to the
    model's device; the draws happen on CPU with the rows' own generators.

    Without ``pad`` the prefixes must have one length. With ``pad`` they may differ: they are
    left-padded (masked, positions counted from each row's first real token), so a batch of
    mixed-length word-window prompts decodes as one. Each row then draws from the same
    distribution with the same generator calls (one uniform per token), but its logits come from
    differently shaped bf16 matmuls and attention, which moves them in the last bits and so,
    now and then, a drawn token: samples differ from the unpadded ones (benchmarks/README.md,
    "Evaluation stages")."""
    if not pad and len({len(p) for p in prefixes}) != 1:
        raise ValueError("prefixes of one batch must have the same length (or pass pad=True)")
    from emo_ray.models.loading import input_device, pad_batch

    device = input_device(model)
    ids, mask = pad_batch(prefixes, side="left", device=device)
    extra = {}
    if pad:
        position = (mask.cumsum(-1) - 1).clamp_(min=0)
        extra = {"attention_mask": mask, "position_ids": position}
    # The head on the last position only: the prefix positions' logits were computed and thrown
    # away (B x T x V fp32). The same rows' fp32 head products either way (checked bit for bit in
    # tests/evaluation/test_generation.py).
    out = model(input_ids=ids, use_cache=True, logits_to_keep=1, **extra)
    cache = out.past_key_values
    banned = torch.tensor(sorted(eos), dtype=torch.long)
    B = len(prefixes)
    tokens = [[] for _ in range(B)]
    done = [False] * B
    for step in range(max_new):
        logits = out.logits[:, -1].cpu()
        if step < min_new and banned.numel():
            logits = logits.index_fill(-1, banned, float("-inf"))
        nxt = choose(logits, decoder, generators)
        for r in range(B):
            if not done[r]:
                t = int(nxt[r])
                if t in eos:
                    done[r] = True
                else:
                    tokens[r].append(t)
        if all(done) or step == max_new - 1:
            break
        if pad:
            mask = torch.cat([mask, mask.new_ones(B, 1)], -1)
            position = position[:, -1:] + 1
            extra = {"attention_mask": mask, "position_ids": position}
        out = model(input_ids=nxt.view(B, 1).to(device), past_key_values=cache, use_cache=True, **extra)
        cache = out.past_key_values
    return tokens, done
