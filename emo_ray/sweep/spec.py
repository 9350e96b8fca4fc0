"""What a scaling-law sweep runs: objectives x model scales x data volumes x seeds.

A trial is one fine-tuning run (``emo_ray.train.fit``) followed by one evaluation
(``emo_ray.evaluation``); the paper's Figure 1 plots the average downstream accuracy of the
best hyperparameter per objective against model size and against fine-tuning data volume.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass

from emo_ray.config import Config, load_config
from emo_ray.losses import hyperparameters
from emo_ray.models import n_params

# Paper 4.2.2: "we tune gamma over {0.9, 0.8, 0.1} for TaiLr and MixCE and keep the best".
PAPER_GAMMAS = (0.9, 0.8, 0.1)


@dataclass(frozen=True)
class SweepSpec:
    name: str
    base_config: str
    """Training config every trial starts from (YAML under configs/)."""
    models: tuple = ("tiny-llama",)
    objectives: tuple = ("mle", "tailr", "mixce", "emo")
    gammas: tuple = PAPER_GAMMAS
    """Grid for objectives that take ``gamma``; the aggregation keeps the best per cell."""
    data_tokens: tuple = (8192,)
    seeds: tuple = (0,)
    epochs: float = 1.0
    """Passes over each data volume (sets ``train.max_steps``); 0 keeps the config's steps."""
    train_overrides: tuple = ()
    eval_config: str = ""
    """Evaluation config (configs/eval/*.yaml); empty: validation perplexity only."""
    eval_overrides: tuple = ()
    primary_metric: str = "icl/avg_accuracy"
    """What the scaling-law curves plot (falls back to ``val_ppl`` when absent)."""


@dataclass(frozen=True)
class Trial:
    model: str
    objective: str
    gamma: float | None
    tokens: int
    seed: int

    @property
    def key(self) -> str:
        g = "" if self.gamma is None else f"-g{self.gamma}"
        return f"{self.model}-{self.objective}{g}-{self.tokens}tok-s{self.seed}"


PRESETS: dict[str, SweepSpec] = {
    # Seconds per trial: what CI and `ray job submit` tests run.
    "cpu-small": SweepSpec(
        name="cpu-small", base_config="configs/tiny_smoke.yaml", models=("tiny-llama",),
        objectives=("mle", "emo"), data_tokens=(4096, 8192), epochs=1.0,
        train_overrides=("train.checkpoint_every=0", "data.block_size=64", "train.micro_batch_size=4"),
    ),
    # Runs end to end on a 2-core laptop (~2 h 10 min measured): two real model scales, real data, four objectives.
    # It shows the machinery, not the objectives' differences: a few thousand tokens move ICL
    # accuracy by less than the noise of 32 items; a laptop user with time widens the axes.
    "cpu": SweepSpec(
        name="cpu", base_config="configs/smollm2_wikitext2.yaml", models=("smollm2-135m", "gemma3-270m"),
        objectives=("mle", "tailr", "mixce", "emo"), gammas=(0.8,), data_tokens=(2048, 4096), epochs=1.0,
        # One single-threaded worker per trial, so two trials share the two cores: evaluation and
        # start-up are single-threaded, and with 2-worker trials one at a time a core sat idle
        # through them. Multi-worker DeepSpeed on CPU is what tests/train covers.
        train_overrides=("data.block_size=128", "train.micro_batch_size=8", "train.warmup_steps=1",
                         "train.checkpoint_every=0", "ray.num_workers=1"),
        eval_config="configs/eval/sweep_cpu.yaml",
    ),
    # The paper's Figure 1 on a GPU cluster (cluster.yaml): OPT and LLaMA, WikiText-103, 8-task ICL.
    "paper": SweepSpec(
        name="paper", base_config="configs/paper_cluster.yaml",
        models=("opt-1.3b", "opt-2.7b", "llama-7b", "llama-13b"),
        objectives=("mle", "tailr", "mixce", "emo"), gammas=PAPER_GAMMAS,
        data_tokens=(2_500_000, 10_000_000, 40_000_000), seeds=(0, 1, 2), epochs=1.0,
        eval_config="configs/eval/paper.yaml",
    ),
}


def get_preset(name: str) -> SweepSpec:
    if name not in PRESETS:
        raise ValueError(f"{name!r} is not a sweep preset; choose one of {sorted(PRESETS)}")
    return PRESETS[name]


def trials(spec: SweepSpec) -> list[Trial]:
    out = []
    for model, objective, tokens, seed in itertools.product(spec.models, spec.objectives, spec.data_tokens, spec.seeds):
        grid = spec.gammas if "gamma" in hyperparameters(objective) else (None,)
        out.extend(Trial(model, objective, g, tokens, seed) for g in grid)
    return out


# A trial keeps its fine-tuned weights, not its optimizer state: a sweep of 16 Gemma-3-270M /
# SmolLM2 trials kept 68 GB of DeepSpeed checkpoints and filled this disk; one LLaMA-13B trial
# would keep ~180 GB. A spec's train_overrides can set it back to "full".
TRIAL_DEFAULTS = ("train.final_checkpoint=weights",)


def trial_config(spec: SweepSpec, trial: Trial, extra: list[str] | None = None) -> Config:
    """The full training config of one trial (validated: a bad grid fails before Tune starts)."""
    base = load_config(spec.base_config, list(spec.train_overrides))
    over = [
        f"model.name={trial.model}",
        f"train.loss={trial.objective}",
        f"train.loss_kwargs={{gamma: {trial.gamma}}}" if trial.gamma is not None else "train.loss_kwargs={}",
        f"data.max_train_tokens={trial.tokens}",
        f"data.seed={trial.seed}",
        f"train.seed={trial.seed}",
    ]
    if spec.epochs:
        per_step = tokens_per_step(base)
        over.append(f"train.max_steps={max(1, math.ceil(spec.epochs * trial.tokens / per_step))}")
    return load_config(spec.base_config, [*TRIAL_DEFAULTS, *spec.train_overrides, *over, *(extra or [])])


def tokens_per_step(cfg: Config) -> int:
    return cfg.train.micro_batch_size * cfg.train.grad_accum * cfg.ray.num_workers * cfg.data.block_size


def compute_flops(spec: SweepSpec, trial: Trial) -> float | None:
    """Training compute 6·N·D (Kaplan et al.): N parameters, D tokens processed."""
    cfg = trial_config(spec, trial)
    n = n_params(trial.model)
    return None if n is None else 6.0 * n * cfg.train.max_steps * tokens_per_step(cfg)


def with_overrides(spec: SweepSpec, **changes) -> SweepSpec:
    return dataclasses.replace(spec, **{k: v for k, v in changes.items() if v is not None})
