"""MAUVE features computed here, not by mauve-text (whose featurizer takes only gpt2/bert hub
names): final-layer hidden states of any causal LM, pooled per text.

``last`` pooling with gpt2-large and 1024 tokens reproduces mauve-text's own featurization (the
paper's setting). ``mean`` pooling is the offline choice: with a small local LM, mean-pooled
states separate human from word-shuffled text, where MiniLM sentence embeddings barely do.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import is_dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from emo_ray.inference.executor import ModelActor


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


def check_layer(featurizer: str, layer: int) -> None:
    """``mauve.layer`` against the featurizer's own config, when the config loads: a layer the
    model does not have would otherwise fail only after sampling, inside a Ray Data actor, with no
    MLflow record (issue 25.4). Unknown layer counts (a hub model not cached) are checked there."""
    if layer == -1:  # the final state: every model has it
        return
    from emo_ray.models.loading import num_hidden_layers

    n_layers = num_hidden_layers(featurizer)
    if n_layers is not None:
        _check_layer_index(featurizer, layer, n_layers)


def _check_layer_index(model: str, layer: int, n_layers: int) -> None:
    """``hidden_states`` holds the embeddings and every layer's output: ``n_layers + 1`` states,
    indexed from 0 or (Python style) from -1 at the end."""
    n_states = n_layers + 1
    if not -n_states <= layer < n_states:
        raise ValueError(f"mauve.layer={layer}: the featurizer {model} has {n_layers} layers, i.e. {n_states} "
                         f"hidden states (0 = embeddings); valid: {-n_states}..{n_states - 1}")


class Featurizer(ModelActor):
    """Ray Data stage: rows ``text`` -> ``features`` (float32 vector)."""

    reusable = True
    """Stateless between batches: the local executor keeps it for the next ``featurize`` call."""

    def __init__(self, model_path: str, pooling: str, max_tokens: int, layer: int = -1, threads: int = 1,
                 device: str = "cpu", dtype: str = "fp32"):
        super().__init__(threads, device)
        from emo_ray.models.loading import load_for_eval

        # dtype: execution.dtype (the body in bf16; pooling in fp32 below)
        self.model, self.tokenizer = load_for_eval(model_path, device, dtype=dtype, fp32_head=False)
        self.pool = get_pooling(pooling)
        self.max_tokens = max_tokens
        _check_layer_index(model_path, layer, self.model.config.get_text_config().num_hidden_layers)
        self.layer = layer

    @torch.no_grad()
    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        enc = [self.tokenizer(t, truncation=True, max_length=self.max_tokens)["input_ids"] for t in batch["text"]]
        if any(len(e) == 0 for e in enc):
            raise ValueError("an empty text reached the featurizer (empty generations must be filtered before)")
        from emo_ray.models.loading import input_device, pad_batch

        ids, mask = pad_batch(enc, side="right", device=input_device(self.model))  # pool_last reads right padding
        feats = self.pool(hidden_state(self.model.base_model, ids, mask, self.layer).float(), mask)
        return batch.assign(features=list(feats.cpu().numpy().astype(np.float32)))


class _Reached(Exception):
    """Raised by the forward hook on the last decoder layer a feature needs, carrying its output."""

    def __init__(self, hidden: torch.Tensor):
        super().__init__()
        self.hidden = hidden


def decoder_layers(base) -> torch.nn.ModuleList | None:
    """The decoder blocks of a base model (Llama / Gemma / Qwen ``layers``, GPT-2 ``h``), or None."""
    for name in ("layers", "h"):
        blocks = getattr(base, name, None)
        if isinstance(blocks, torch.nn.ModuleList):
            return blocks
    return None


def hidden_state(base, ids: torch.Tensor, mask: torch.Tensor, layer: int) -> torch.Tensor:
    """``hidden_states[layer]`` of ``base`` (the embeddings, every block's output, the final normed
    state last), computing no block after the one that produces it.

    MAUVE reads layer -8 of Gemma-3-270M: the old full forward ran 18 blocks for the output of the
    11th, i.e. 39 % of the featurizer's work thrown away. The early exit stops the forward with an
    exception from that block's forward hook; what it returns is the very tensor
    ``output_hidden_states`` records there (checked bit for bit in tests/evaluation/test_featurize.py),
    so the features do not change. The base model never builds the vocabulary projection."""
    blocks = decoder_layers(base)
    n_states = len(blocks) + 1 if blocks is not None else None
    index = layer % n_states if n_states else None
    if layer == -1 or index == n_states - 1:
        return base(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    if not index:  # the embeddings, or a layout without a block list: the full forward
        return base(input_ids=ids, attention_mask=mask, use_cache=False, output_hidden_states=True).hidden_states[layer]

    def stop(module, args, output):
        raise _Reached(output[0] if isinstance(output, tuple) else output)

    hook = blocks[index - 1].register_forward_hook(stop)
    try:
        base(input_ids=ids, attention_mask=mask, use_cache=False)
    except _Reached as reached:
        return reached.hidden
    finally:
        hook.remove()
    raise RuntimeError(f"block {index - 1} of {type(base).__name__} never ran")


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
    """``execution.dtype`` as the featurizer actors compute it (``auto`` -> bf16/fp32).

    ``auto`` is resolved where the features are computed, not in the caller: a sweep trial's
    driver runs on a node without CUDA (it would say fp32) while its GPU actors compute bf16, and
    a cache key or artifact identity saying fp32 would then label bf16 features (issue 27, item 7).
    ``featurize`` hands the resolved value to the actors, so they compute exactly what the key says."""
    from emo_ray.precision import resolve

    dtype = getattr(execution, "dtype", "fp32")
    device = "cuda" if getattr(execution, "gpus_per_actor", 0) > 0 else "cpu"
    if dtype != "auto" or device == "cpu" or getattr(execution, "executor", "local") != "ray":
        # Local actors run in this process: resolving here is resolving where they compute.
        return resolve(dtype, device, what="evaluation")
    key = (execution.address, float(execution.gpus_per_actor), float(execution.cpus_per_actor))
    if key not in _ACTOR_DTYPE:
        _ACTOR_DTYPE[key] = on_actor_slot(execution, resolve, dtype, device, what="evaluation")
    return _ACTOR_DTYPE[key]


_ACTOR_DTYPE: dict[tuple, str] = {}
"""Per process: the dtype a GPU actor slot resolved ``auto`` to (one probe per execution shape)."""


def on_actor_slot(execution, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` run as a Ray task with one featurizer actor's resources (GPUs and
    accelerator type), i.e. on the kind of node the actors get."""
    import ray

    from emo_ray.inference.executor import actor_accelerator

    remote = ray.remote(num_cpus=min(1.0, execution.cpus_per_actor), num_gpus=execution.gpus_per_actor,
                        accelerator_type=actor_accelerator(execution))(fn)
    return ray.get(remote.remote(*args, **kwargs))


def featurize(texts: list[str], model_path: str, *, pooling: str, max_tokens: int, batch_size: int,
              execution, cache: bool = False, layer: int = -1) -> np.ndarray:
    """(n, d) features of ``texts``; with ``cache`` they are read from / written to disk."""
    from emo_ray.inference.executor import map_rows

    dtype = resolved_dtype(execution)
    if is_dataclass(execution):  # the actors compute in the dtype the key names (stubs pass None)
        execution = replace(execution, dtype=dtype)
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
