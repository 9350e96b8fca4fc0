"""MAUVE features computed here, not by mauve-text (whose featurizer takes only gpt2/bert hub
names): final-layer hidden states of any causal LM, pooled per text.

``last`` pooling with gpt2-large and 1024 tokens reproduces mauve-text's own featurization (the
paper's setting). ``mean`` pooling is the offline choice: with a small local LM, mean-pooled
states separate human from word-shuffled text, where MiniLM sentence embeddings barely do.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from emo_ray.evaluation.executor import ModelActor


def pool_last(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, d), right-padded (B, T) mask -> (B, d): the state of each text's last token."""
    last = mask.sum(-1) - 1
    return hidden[torch.arange(hidden.size(0)), last]


def pool_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1)


POOLINGS = {"last": pool_last, "mean": pool_mean}


def get_pooling(name: str):
    try:
        return POOLINGS[name]
    except KeyError:
        raise ValueError(f"{name!r} is not a pooling; valid: {sorted(POOLINGS)}") from None


class Featurizer(ModelActor):
    """Ray Data stage: rows ``text`` -> ``features`` (float32 vector)."""

    def __init__(self, model_path: str, pooling: str, max_tokens: int, layer: int = -1, threads: int = 1,
                 device: str = "cpu", dtype: str = "fp32"):
        super().__init__(threads, device)
        from emo_ray.models.loading import load_for_eval

        # dtype: execution.dtype (the body in bf16; pooling in fp32 below)
        self.model, self.tokenizer = load_for_eval(model_path, device, dtype=dtype, fp32_head=False)
        self.pool = get_pooling(pooling)
        self.max_tokens = max_tokens
        n_states = self.model.config.get_text_config().num_hidden_layers + 1
        if not -n_states <= layer < n_states:
            raise ValueError(f"featurizer layer {layer} out of range for {n_states} hidden states")
        self.layer = layer

    @torch.no_grad()
    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        enc = [self.tokenizer(t, truncation=True, max_length=self.max_tokens)["input_ids"] for t in batch["text"]]
        if any(len(e) == 0 for e in enc):
            raise ValueError("an empty text reached the featurizer (empty generations must be filtered before)")
        from emo_ray.models.loading import input_device, pad_batch

        ids, mask = pad_batch(enc, side="right", device=input_device(self.model))  # pool_last reads right padding
        # The base model gives the hidden states (hidden_states[-1] is the final, normed one)
        # without paying for the vocabulary projection.
        out = self.model.base_model(input_ids=ids, attention_mask=mask, output_hidden_states=self.layer != -1)
        hidden = out.last_hidden_state if self.layer == -1 else out.hidden_states[self.layer]
        feats = self.pool(hidden.float(), mask).cpu().numpy().astype(np.float32)
        return batch.assign(features=list(feats))


def featurizer_identity(model_path: str, pooling: str, max_tokens: int, layer: int = -1, dtype: str = "fp32") -> str:
    """Name, pooling, truncation, compute dtype (fp32 keys are unchanged) and (for a folder) the
    weights' size and mtime: a retrained featurizer in the same folder does not reuse stale
    features, and bf16 features never mix with fp32 ones."""
    weights = [p for p in Path(model_path).glob("*.safetensors")] if Path(model_path).is_dir() else []
    stamp = [(p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in sorted(weights)]
    return json.dumps([str(model_path), pooling, max_tokens, stamp] + ([layer] if layer != -1 else [])
                      + ([dtype] if dtype != "fp32" else []))


def feature_cache_path(identity: str, texts: list[str]) -> Path:
    from emo_ray.models import cache_dir

    h = hashlib.sha256(identity.encode())
    for t in texts:
        h.update(hashlib.sha256(t.encode()).digest())
    return cache_dir().parent / "features" / f"{h.hexdigest()[:32]}.npy"


def resolved_dtype(execution) -> str:
    """``execution.dtype`` resolved for the featurizer's device (``auto`` -> bf16/fp32)."""
    from emo_ray.precision import resolve

    device = "cuda" if getattr(execution, "gpus_per_actor", 0) > 0 else "cpu"
    return resolve(getattr(execution, "dtype", "fp32"), device, what="evaluation")


def featurize(texts: list[str], model_path: str, *, pooling: str, max_tokens: int, batch_size: int,
              execution, cache: bool = False, layer: int = -1) -> np.ndarray:
    """(n, d) features of ``texts``; with ``cache`` they are read from / written to disk."""
    from emo_ray.evaluation.executor import map_rows

    dtype = resolved_dtype(execution)
    path = feature_cache_path(featurizer_identity(model_path, pooling, max_tokens, layer, dtype), texts) if cache else None
    if path is not None and path.exists():
        return np.load(path)
    rows = map_rows(
        [{"text": t} for t in texts], Featurizer,
        {"model_path": model_path, "pooling": pooling, "max_tokens": max_tokens, "layer": layer},
        execution=execution, batch_size=batch_size,
    )
    feats = np.stack([np.asarray(r["features"], dtype=np.float32) for r in rows])
    if path is not None:
        from emo_ray.storage import atomic_write

        # Concurrent trials writing the same features never read or clobber a half-written file.
        with atomic_write(path) as fh:
            np.save(fh, feats)
    return feats
