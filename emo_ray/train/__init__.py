"""Fine-tuning on Ray Train + DeepSpeed (``fit``) and the per-worker loop it runs."""
from emo_ray.train.launch import FitResult, fit

__all__ = ["FitResult", "fit"]
