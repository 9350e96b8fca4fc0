"""Oracle perplexity: how likely a separate (oracle) model finds the generations.

Each continuation is scored given its prompt; the corpus-level number is
``exp(sum NLL / sum tokens)`` over the continuations of one seed. The human continuations are
scored the same way, as the reference point.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from emo_ray.evaluation.executor import ModelActor


class ContinuationNLL(ModelActor):
    """Ray Data stage: rows ``prefix, continuation`` -> ``nll_sum, n_tokens`` of the continuation."""

    def __init__(self, model_path: str, threads: int = 1, device: str = "cpu"):
        super().__init__(threads, device)
        from emo_ray.models import load_model

        self.model, self.tokenizer = load_model(model_path, device=device)
        self.model.eval()

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
        width = max(len(s) for s in seqs)
        ids = torch.zeros((len(seqs), width), dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        target = torch.zeros((len(seqs), width - 1), dtype=torch.bool)
        for r, (s, st) in enumerate(zip(seqs, starts)):
            ids[r, : len(s)] = torch.tensor(s)
            mask[r, : len(s)] = 1
            target[r, st - 1 : len(s) - 1] = True  # logits at t predict token t + 1
        logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits.float().cpu()
        logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1).double()
        nll = (-logp * target).sum(-1).numpy()
        return batch.assign(nll_sum=nll, n_tokens=target.sum(-1).numpy().astype(np.int64))


def corpus_perplexity(nll_sums, n_tokens) -> float:
    total = float(np.sum(n_tokens))
    if total == 0:
        raise ValueError("no tokens to compute a perplexity over")
    return float(np.exp(np.sum(nll_sums) / total))
