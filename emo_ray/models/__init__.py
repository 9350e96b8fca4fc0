"""Causal LMs by registry name, hub id or local folder, and EMO's cost embedding."""
from emo_ray.models.cost_embedding import COST_EMBEDDINGS, fixed_cost_embedding, gathered, head_weight
from emo_ray.models.loading import (
    EVAL_DTYPE, cache_dir, check_available, input_device, load_for_eval, load_model, load_tokenizer, materialize, pad_batch,
)
from emo_ray.models.registry import MODELS, ModelEntry, n_params

__all__ = [
    "COST_EMBEDDINGS", "EVAL_DTYPE", "MODELS", "ModelEntry", "cache_dir", "check_available", "fixed_cost_embedding",
    "gathered", "head_weight", "input_device", "load_for_eval", "load_model", "load_tokenizer", "materialize", "n_params",
    "pad_batch",
]
