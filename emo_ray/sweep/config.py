"""The typed records of a sweep: the config (``configs/sweeps/*.yaml``: a grid of objectives x
model scales x data volumes x seeds, what every trial starts from) and one trial, a cell of the
grid. Loading, checking and expanding them into training configs is ``emo_ray.sweep.spec``."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Annotated

from emo_ray import typed_config
from emo_ray.bounds import Bounds
from emo_ray.config import TrackingConfig

WHOLE_SPLIT = "all"
"""``grid.data_tokens`` entry: train on the whole training split (paper 4.1.1); such a trial has
``tokens == 0``, the ``data.max_train_tokens`` value that means "all"."""


@dataclass(frozen=True)
class GridConfig:
    models: tuple[str, ...] = ("tiny-llama",)
    """The model-size axis: registry names, hub ids or local folders (each trial counts and logs
    its model's parameters, so any model sits on the curve)."""
    objectives: dict = field(default_factory=lambda: {"mle": [{}], "emo": [{}]})
    """Objective -> the hyperparameter sets to try, each a mapping of keywords the registered loss
    takes (``emo-ray ls losses``), e.g. ``{mle: [{}], tailr: [{gamma: 0.9}, {gamma: 0.8}]}``.
    The aggregation keeps the best set per cell, as the paper does for gamma (4.2.2)."""
    data_tokens: tuple[int | str, ...] = (8192,)
    """The data-volume axis: training tokens per trial (nested subsets of one corpus), or ``all``
    for the whole training split. A whole split's size is only known once it is tokenised, so its
    steps cannot follow from ``epochs``: a sweep with ``all`` sets ``epochs: 0`` and gives
    ``train.max_steps`` in the training config (per domain, in ``grid.domains.<d>.train``)."""
    seeds: tuple[Annotated[int, Bounds(ge=0)], ...] = (0,)
    """Training seeds (data order and initialisation of the run); curves show the seed mean."""
    domains: dict = field(default_factory=dict)
    """Domain name -> ``{train: <training-config overrides>, eval: <eval-config overrides>}``: one
    fine-tuning per corpus, evaluated on that corpus (paper Table 1), e.g. ``{wikitext-2: {train:
    {data: {train: ...}}, eval: {generation: {corpora: [wikitext-2]}}}}``. Merged after the sweep's
    ``train_overrides`` / ``eval_overrides``. Empty: one implicit domain."""


@dataclass(frozen=True)
class SweepConfig:
    name: str = "sweep"
    """The sweep's folder under ``storage_path`` and its MLflow parent run."""
    train_config: str = "configs/tiny_smoke.yaml"
    """Training config every trial starts from (``emo-ray ls configs``)."""
    train_overrides: dict = field(default_factory=dict)
    """Nested mapping merged into every trial's training config, e.g.
    ``{data: {block_size: 128}, ray: {num_workers: 1}}``."""
    epochs: Annotated[float, Bounds(ge=0, note="0 keeps the config's steps")] = 1.0
    """Passes over each data volume (sets ``train.max_steps``); 0 keeps the config's steps."""
    eval_config: str = ""
    """Evaluation after each trial (``configs/eval/*.yaml``); empty: validation perplexity only."""
    eval_overrides: dict = field(default_factory=dict)
    """Nested mapping merged into the evaluation config."""
    evaluate_pretrained: bool = True
    """Also evaluate each untrained model once per domain (a child run tagged
    ``emo_ray.kind=pretrained``): the "pre-trained" row of Table 3 and point of Figure 1. Needs
    ``eval_config``; without one there is nothing to evaluate and no such run is made."""
    grid: GridConfig = field(default_factory=GridConfig)
    primary_metric: str = "eval/icl/avg_accuracy"
    """MLflow metric the scaling-law curves plot (``val/ppl`` when the trials have none)."""
    storage_path: str = "runs/sweeps"
    """Checkpoints and Tune state (shared storage or ``s3://`` on a cluster)."""
    max_concurrent_trials: Annotated[int, Bounds(ge=0, note="0 = derive")] = 0
    """Trials at once; 0 derives it: on a cluster from the capacity the autoscaler can reach
    (node types x max workers, not only the GPUs up when the sweep starts), locally from the cores."""
    tracking: TrackingConfig = field(default_factory=lambda: TrackingConfig(experiment="emo-ray-sweeps"))
    plugins: tuple[str, ...] = ()
    """Modules or ``.py`` files imported first (own objectives), in the driver and every trial."""


PRETRAINED = "pretrained"
"""Objective label of a trial that only evaluates the untrained model (``evaluate_pretrained``)."""


@dataclass(frozen=True)
class Trial:
    """One cell of the grid: everything that distinguishes a trial's training config."""

    model: str
    loss: str
    loss_kwargs: dict
    tokens: int
    """Training tokens; 0: the whole training split (``grid.data_tokens: [all]``)."""
    seed: int
    domain: str = ""
    """Key of ``grid.domains`` ("" when the sweep has none); records written before domains
    existed load with the default."""

    @property
    def pretrained(self) -> bool:
        """An evaluation of the untrained model (no fine-tuning, ``loss == PRETRAINED``)."""
        return self.loss == PRETRAINED

    @property
    def hparams(self) -> str:
        """``gamma=0.8`` (empty for none): the hyperparameter set as a label."""
        return ",".join(f"{k}={v}" for k, v in sorted(self.loss_kwargs.items()))

    @property
    def key(self) -> str:
        """Descriptive and unique within a sweep: ``tailr-gamma=0.8-smollm2-135m-4096tok-s0``, with
        ``-<domain>`` appended when the sweep has domains; ``pretrained-smollm2-135m[-<domain>]``."""
        model = self.model.rstrip('/').split('/')[-1]
        dom = f"-{self.domain}" if self.domain else ""
        if self.pretrained:
            return f"{PRETRAINED}-{model}{dom}"
        hp = f"-{self.hparams}" if self.hparams else ""
        volume = WHOLE_SPLIT if self.tokens == 0 else f"{self.tokens}tok"
        return f"{self.loss}{hp}-{model}-{volume}-s{self.seed}{dom}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Trial:
        return typed_config.build(cls, d, "trial")
