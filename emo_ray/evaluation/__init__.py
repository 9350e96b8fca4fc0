"""Evaluation of EMO-trained models (paper 4.1 open-ended generation, 4.2 in-context learning)
on Ray Data. Named ``evaluation`` so it does not clash with the top-level ``evals/`` scripts."""
from emo_ray.evaluation.config import EvalConfig, EvalConfigError, from_flat, load_eval_config, to_flat
from emo_ray.evaluation.run import EvalResult, evaluate, evaluate_and_log, resolve_model, run_evaluation

__all__ = [
    "EvalConfig", "EvalConfigError", "EvalResult", "evaluate", "evaluate_and_log", "from_flat",
    "load_eval_config", "resolve_model", "run_evaluation", "to_flat",
]
