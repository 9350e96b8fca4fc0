"""Open-ended generation (paper 4.1): prompts cut from a corpus and sampled continuations.

Prompts are token windows of the evaluated model's tokenizer (Table 4 lengths, see
``corpora.py``), so every prompt of a corpus has the same length and a sampling batch needs no
padding. Each (prompt, seed) row draws from its own ``torch.Generator`` seeded by both: a sample
is reproducible whatever batch or actor it lands in.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from emo_ray.evaluation.corpora import Corpus
from emo_ray.evaluation.decoders import choose, get_decoder
from emo_ray.evaluation.executor import ModelActor
from emo_ray.evaluation.rows import read_rows

WIKITEXT_HEADING = re.compile(r"^\s*=( =)* .* =( =)*\s*$")


@dataclass(frozen=True)
class Prompt:
    prompt_id: int
    prefix_ids: list[int]
    reference_ids: list[int]
    prefix: str
    reference: str


def text_units(corpus: Corpus) -> list[str]:
    """Documents, or paragraphs (non-heading lines) for ``unit='paragraph'``."""
    units = []
    for row in read_rows(corpus.source):
        text = row.get(corpus.text_field)
        if not isinstance(text, str):
            raise ValueError(f"{corpus.source}: row without a string field {corpus.text_field!r} (keys {sorted(row)})")
        if corpus.unit == "paragraph":
            units.extend(p.strip() for p in text.split("\n") if p.strip() and not WIKITEXT_HEADING.match(p))
        else:
            units.append(" ".join(text.split("\n")) if corpus.newlines_to_spaces else text)
    return [u for u in units if u.strip()]


def make_prompts(corpus: Corpus, tokenizer, *, num_prompts: int, seed: int) -> tuple[list[Prompt], dict]:
    """A seeded sample of ``num_prompts`` windows (all if 0) and counts of what was dropped."""
    window = corpus.prefix_tokens + corpus.gen_tokens
    specials = tokenizer("")["input_ids"]  # e.g. a BOS the model expects in front of every prompt
    windows, too_short = [], 0
    units = text_units(corpus)
    for unit in units:
        ids = tokenizer(unit, add_special_tokens=False)["input_ids"]
        n = min(corpus.windows_per_unit, len(ids) // window)
        too_short += n == 0
        windows.extend(ids[k * window : (k + 1) * window] for k in range(n))
    random.Random(seed).shuffle(windows)
    available = len(windows)
    if num_prompts:
        if len(windows) < num_prompts:
            raise ValueError(
                f"{corpus.source}: only {len(windows)} windows of {window} tokens, {num_prompts} prompts asked for"
            )
        windows = windows[:num_prompts]
    prompts = [
        Prompt(
            i,
            specials + w[: corpus.prefix_tokens],
            w[corpus.prefix_tokens :],
            tokenizer.decode(w[: corpus.prefix_tokens]),
            tokenizer.decode(w[corpus.prefix_tokens :]),
        )
        for i, w in enumerate(windows)
    ]
    return prompts, {"units": len(units), "units_too_short": too_short, "windows": available}


def row_seed(seed: int, prompt_id: int) -> int:
    return (seed * 1_000_003 + prompt_id) % (2**63 - 1)


class Sampler(ModelActor):
    """Ray Data stage: rows ``prompt_id, seed, decoder, prefix_ids`` -> ``gen_ids, generation, ended``."""

    def __init__(self, model_path: str, gen_tokens: int, threads: int = 1, device: str = "cpu", dtype: str = "fp32"):
        super().__init__(threads, device)
        from emo_ray.models.loading import load_for_eval

        # dtype: execution.dtype; in bf16 the head stays fp32, so sampling probabilities are fp32
        self.model, self.tokenizer = load_for_eval(model_path, device, dtype=dtype)
        self.gen_tokens = gen_tokens
        self.eos = self.model.generation_config.eos_token_id
        self.eos = set(self.eos if isinstance(self.eos, list) else [self.eos] if self.eos is not None else [])

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        out = []
        for decoder, group in batch.groupby("decoder", sort=False):
            prefixes = [list(p) for p in group["prefix_ids"]]
            gens = [torch.Generator().manual_seed(row_seed(int(s), int(p))) for s, p in zip(group["seed"], group["prompt_id"])]
            ids, ended = sample(self.model, prefixes, get_decoder(decoder), gens, self.gen_tokens, self.eos)
            texts = [self.tokenizer.decode(g, skip_special_tokens=True) for g in ids]
            out.append(group.assign(gen_ids=[np.array(g, dtype=np.int64) for g in ids], generation=texts, ended=ended))
        return pd.concat(out).loc[batch.index]


@torch.no_grad()
def sample(model, prefixes: list[list[int]], decoder, generators, max_new: int, eos: set[int]):
    """Sample up to ``max_new`` tokens after equal-length ``prefixes``; a row stops at EOS (which
    is not kept). Returns (token lists, ended-by-EOS flags). Inputs go to the model's device; the
    draws happen on CPU with the rows' own generators."""
    if len({len(p) for p in prefixes}) != 1:
        raise ValueError("prefixes of one batch must have the same length")
    from emo_ray.models.loading import input_device

    device = input_device(model)
    ids = torch.tensor(prefixes, device=device)
    out = model(input_ids=ids, use_cache=True)
    cache = out.past_key_values
    B = len(prefixes)
    tokens = [[] for _ in range(B)]
    done = [False] * B
    for step in range(max_new):
        nxt = choose(out.logits[:, -1].cpu(), decoder, generators)
        for r in range(B):
            if not done[r]:
                t = int(nxt[r])
                if t in eos:
                    done[r] = True
                else:
                    tokens[r].append(t)
        if all(done) or step == max_new - 1:
            break
        out = model(input_ids=nxt.view(B, 1).to(device), past_key_values=cache, use_cache=True)
        cache = out.past_key_values
    return tokens, done
