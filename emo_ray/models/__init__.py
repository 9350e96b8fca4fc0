"""Causal LMs by registry name, hub id or local folder, and EMO's cost embedding."""
from emo_ray.models.cost_embedding import COST_EMBEDDINGS, fixed_cost_embedding, gathered, head_weight
from emo_ray.models.loading import cache_dir, check_available, load_model, load_tokenizer, materialize
from emo_ray.models.registry import MODELS, ModelEntry, n_params

__all__ = [
    "COST_EMBEDDINGS", "MODELS", "ModelEntry", "cache_dir", "check_available", "fixed_cost_embedding", "gathered",
    "head_weight", "load_model", "load_tokenizer", "materialize", "n_params",
]
