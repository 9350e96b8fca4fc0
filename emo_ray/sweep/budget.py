"""Wall-clock estimate of a CPU sweep for ``--dry-run``: core-seconds per stage from measured
single-thread throughputs (SmolLM2-135M, bf16; benchmarks/README.md, docs/sweeps.md "Budget"),
scaled linearly with the model's parameters. A plan, not a promise: it is as good as the
measurements, which were taken with another job on the machine. GPU sweeps get no estimate."""
from __future__ import annotations

from dataclasses import dataclass

REFERENCE_PARAMS = 135e6
"""The measured model (SmolLM2-135M); other sizes scale by their parameter count."""
TRAIN_TOK_S = 71.5
"""Training tokens/s of one single-thread worker while another trial runs (143 tok/s measured for
2 workers at 1024 tokens/step, halved when two trials share the two cores)."""
TRIAL_START_S = 60.0
VALIDATION_TOK_S = 400.0
SAMPLE_TOK_S = 270.0
"""Sampling at batch 125 (inverse-CDF draws)."""
FEATURIZE_TEXTS_S = 10.7
"""MAUVE featurisation with Gemma-3-270M (16 texts/s measured, taken 1.5x slower)."""
ORACLE_TOK_S = 160.0
EVAL_LOAD_S = 100.0
"""Model loads and k-means per evaluation."""
ICL_S_PER_ITEM = 1.2
"""ICL with 8 retrieved demonstrations and prefix sharing, bf16 (SST-2: 1.18 s/item)."""
NEW_TOKENS = 80
"""Tokens per continuation of the official protocol (WikiText-2, WebText)."""


@dataclass(frozen=True)
class Budget:
    train_s: float
    eval_s: float
    cores: int

    @property
    def core_hours(self) -> float:
        return (self.train_s + self.eval_s) / 3600

    @property
    def wall_hours(self) -> float:
        return self.core_hours / self.cores

    def line(self) -> str:
        return (f"estimated CPU time ≈ {self.core_hours:.1f} core-hours (training {self.train_s / 3600:.1f}, evaluation "
                f"{self.eval_s / 3600:.1f}) = {self.wall_hours:.1f} h on {self.cores} cores (docs/sweeps.md, Budget)")


def evaluation_seconds(ecfg, scale: float) -> float:
    """One evaluation: sampling, MAUVE featurisation, the oracle, ICL, loads."""
    s = EVAL_LOAD_S
    if ecfg.generation_enabled:
        g = ecfg.generation
        prompts = g.num_prompts or 250
        per_corpus = prompts * len(g.seeds) * len(g.decoders)
        sampled = per_corpus * NEW_TOKENS
        oracle = (sampled + prompts * NEW_TOKENS) / ORACLE_TOK_S if ecfg.oracle.enabled else 0.0
        s += len(g.corpora) * (sampled / SAMPLE_TOK_S * scale + (per_corpus + prompts) / FEATURIZE_TEXTS_S + oracle)
    if ecfg.icl_enabled:
        s += len(ecfg.icl.tasks) * (ecfg.icl.num_items or 1000) * ICL_S_PER_ITEM * scale
    return s


def estimate(trained: list, configs: list, evaluations: list, cores: int) -> Budget | None:
    """``trained``/``configs``: the trials and their training configs; ``evaluations``: one
    (eval config, model parameters) per evaluation (trials and pre-trained). None on GPUs."""
    from emo_ray.models import n_params

    if not configs or configs[0].ray.use_gpu:
        return None
    train = 0.0
    for t, cfg in zip(trained, configs):
        scale = (n_params(cfg.model.name) or REFERENCE_PARAMS) / REFERENCE_PARAMS
        steps_tokens = cfg.train.max_steps * cfg.train.micro_batch_size * cfg.data.block_size * cfg.train.grad_accum
        val = (cfg.data.max_validation_blocks or 64) * cfg.data.block_size
        train += TRIAL_START_S + (steps_tokens / TRAIN_TOK_S + val / VALIDATION_TOK_S) * scale * cfg.ray.num_workers
    evals = sum(evaluation_seconds(e, (n or REFERENCE_PARAMS) / REFERENCE_PARAMS) for e, n in evaluations)
    return Budget(train, evals, cores)


def describe(sweep, trained: list, configs: list, pre: list) -> list[str]:
    """The estimate line of ``--dry-run``: every trained trial's training and evaluation, and the
    pre-trained evaluations; none on GPUs."""
    import os

    from emo_ray.models import n_params
    from emo_ray.sweep.spec import domain_names, eval_config

    evaluations = []
    if sweep.eval_config:
        ecfgs = {d: eval_config(sweep, domain=d) for d in domain_names(sweep)}
        evaluations = [(ecfgs[t.domain], n_params(t.model)) for t in [*trained, *pre]]
    b = estimate(trained, configs, evaluations, os.cpu_count() or 1)
    return [b.line()] if b else []
