"""What a scaling-law sweep runs: objectives (each with its hyperparameter sets) x model scales x
data volumes x seeds, as one typed config (``configs/sweeps/*.yaml``).

    sweep = load_sweep_config("cpu-small", ["grid.seeds=[0, 1]"])
    for trial in trials(sweep):
        cfg = trial_config(sweep, trial)        # a validated training Config, no text round trip

A trial is one fine-tuning run (``emo_ray.train.fit``) followed by one evaluation
(``emo_ray.evaluation``); the paper's Figure 1 plots the average downstream accuracy of the
best hyperparameters per objective against model size and against fine-tuning data volume.
The records themselves (``SweepConfig``, ``GridConfig``, ``Trial``) live in ``emo_ray.sweep.config``.
"""
from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

from emo_ray import typed_config
from emo_ray.config import Config, ConfigError, load_config
from emo_ray.plugins import import_plugins
from emo_ray.sweep.config import PRETRAINED, WHOLE_SPLIT, SweepConfig, Trial
from emo_ray.typed_config import REPO_ROOT, merge

SWEEP_CONFIG_DIR = REPO_ROOT / "configs" / "sweeps"


def sweep_config_path(name_or_path: str | Path) -> Path:
    """A sweep config by path, or by name in ``configs/sweeps/`` (``cpu-small``)."""
    p = Path(name_or_path).expanduser()
    if p.exists() or p.suffix in (".yaml", ".yml"):
        return typed_config.resolve_config_path(p)
    shipped = SWEEP_CONFIG_DIR / f"{name_or_path}.yaml"
    if shipped.exists():
        return shipped
    raise ConfigError(f"{name_or_path!r} is neither a sweep config file nor one of {list_sweeps()}")


def list_sweeps() -> list[str]:
    return sorted(p.stem for p in SWEEP_CONFIG_DIR.glob("*.yaml"))


def load_sweep_config(path: str | Path | None = None, overrides: list[str] | None = None, *,
                      tree: dict | None = None) -> SweepConfig:
    """YAML (a path or a name in ``configs/sweeps/``) + ``key=value`` overrides -> a validated
    ``SweepConfig``: the grid, every trial's training config and the evaluation config are all
    checked here, before Ray, MLflow or any trial starts."""
    raw = typed_config.load_tree(sweep_config_path(path) if path else None, overrides, tree)
    import_plugins(raw.get("plugins") or ())
    sweep = typed_config.build(SweepConfig, raw, "sweep")
    validate(sweep)
    return sweep


def validate(sweep: SweepConfig) -> None:
    from emo_ray.losses import check_hparams, get_spec

    g = sweep.grid
    checks = [
        (bool(sweep.name) and "/" not in sweep.name, f"name must be a non-empty folder name, got {sweep.name!r}"),
        (len(g.models) >= 1, "grid.models needs at least one model"),
        (len(g.objectives) >= 1, "grid.objectives needs at least one objective"),
        (len(g.data_tokens) >= 1 and all(_is_volume(t) for t in g.data_tokens),
         f"grid.data_tokens: expected positive token counts or {WHOLE_SPLIT!r} (the whole training split), "
         f"got {list(g.data_tokens)}"),
        (WHOLE_SPLIT not in g.data_tokens or not sweep.epochs,
         f"grid.data_tokens {WHOLE_SPLIT!r}: a whole split's steps cannot follow from epochs={sweep.epochs} "
         f"before it is tokenised; set epochs: 0 and give train.max_steps (per domain)"),
        (len(g.seeds) >= 1, "grid.seeds needs at least one seed"),
        (len(set(g.seeds)) == len(g.seeds), f"grid.seeds has duplicates: {list(g.seeds)}"),
        (len(set(g.models)) == len(g.models), f"grid.models has duplicates: {list(g.models)}"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ConfigError(msg)
    if PRETRAINED in g.objectives:
        raise ConfigError(f"grid.objectives: {PRETRAINED!r} is reserved for the untrained-model row (evaluate_pretrained)")
    _validate_domains(sweep)
    for name, sets in g.objectives.items():
        where = f"grid.objectives.{name}"
        try:
            get_spec(name)
        except ValueError as e:
            raise ConfigError(f"grid.objectives: {e}") from None
        if not isinstance(sets, list) or not sets or not all(isinstance(s, dict) for s in sets):
            raise ConfigError(f"{where}: expected a non-empty list of hyperparameter mappings "
                              f"(e.g. [{{}}] or [{{gamma: 0.9}}, {{gamma: 0.8}}]), got {sets!r}")
        for i, hp in enumerate(sets):
            try:
                check_hparams(name, hp)
            except ValueError as e:
                raise ConfigError(f"{where}[{i}]: {e}") from None
        if len({json.dumps(s, sort_keys=True) for s in sets}) != len(sets):
            raise ConfigError(f"{where}: the same hyperparameter set is listed twice: {sets}")
    for t in trials(sweep):
        try:
            trial_config(sweep, t)
        except ConfigError as e:
            where = f"grid.domains.{t.domain}: " if t.domain else ""
            raise ConfigError(f"{where}trial {t.key}: {e}") from None
    if sweep.eval_config:
        for domain in domain_names(sweep):
            try:
                eval_config(sweep, domain=domain)
            except ConfigError as e:
                raise ConfigError(f"grid.domains.{domain}: eval: {e}" if domain else str(e)) from None


def _is_volume(t) -> bool:
    return t == WHOLE_SPLIT or (isinstance(t, int) and not isinstance(t, bool) and t > 0)


DOMAIN_KEYS = ("train", "eval")


def _validate_domains(sweep: SweepConfig) -> None:
    for name, spec in sweep.grid.domains.items():
        where = f"grid.domains.{name}"
        if not isinstance(name, str) or not name or "/" in name:
            raise ConfigError(f"{where}: a domain name must be a non-empty string without '/'")
        if spec is None:
            continue
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: expected a mapping {{train: ..., eval: ...}}, got {spec!r}")
        unknown = sorted(set(spec) - set(DOMAIN_KEYS))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; a domain takes {list(DOMAIN_KEYS)}")
        for k in DOMAIN_KEYS:
            if not isinstance(spec.get(k) or {}, dict):
                raise ConfigError(f"{where}.{k}: expected a nested mapping of config overrides, got {spec[k]!r}")
        if (spec.get("eval") or {}) and not sweep.eval_config:
            raise ConfigError(f"{where}.eval: the sweep has no eval_config to apply these overrides to")


def domain_names(sweep: SweepConfig) -> list[str]:
    """The sweep's domains; ``[""]`` (one implicit domain) when ``grid.domains`` is empty."""
    return list(sweep.grid.domains) or [""]


def _domain_overrides(sweep: SweepConfig, domain: str, part: str) -> dict:
    if not domain:
        return {}
    if domain not in sweep.grid.domains:
        raise ConfigError(f"unknown domain {domain!r}; grid.domains has {list(sweep.grid.domains)}")
    return dict((sweep.grid.domains[domain] or {}).get(part) or {})


def trials(sweep: SweepConfig) -> list[Trial]:
    """The fine-tuning trials: models x objectives (x hyperparameter sets) x data x seeds x domains."""
    g = sweep.grid
    out = []
    for domain, model, (loss, sets), tokens, seed in itertools.product(
            domain_names(sweep), g.models, g.objectives.items(), g.data_tokens, g.seeds):
        n = 0 if tokens == WHOLE_SPLIT else int(tokens)
        out.extend(Trial(model, loss, dict(hp), n, int(seed), domain) for hp in sets)
    return out


def pretrained_trials(sweep: SweepConfig) -> list[Trial]:
    """One evaluation of each untrained model per domain (``evaluate_pretrained``, needs an
    ``eval_config``): no training, so no tokens, seed or hyperparameters."""
    if not (sweep.evaluate_pretrained and sweep.eval_config):
        return []
    return [Trial(model, PRETRAINED, {}, 0, 0, domain)
            for domain, model in itertools.product(domain_names(sweep), sweep.grid.models)]


def all_trials(sweep: SweepConfig) -> list[Trial]:
    """What Tune runs: the fine-tuning trials, then the pre-trained evaluations."""
    return trials(sweep) + pretrained_trials(sweep)


# A trial keeps its fine-tuned weights, not its optimizer state: a sweep of 16 Gemma-3-270M /
# SmolLM2 trials kept 68 GB of DeepSpeed checkpoints and filled this disk; one LLaMA-13B trial
# would keep ~180 GB. A sweep's train_overrides can set it back to "full".
TRIAL_DEFAULTS = {"train": {"final_checkpoint": "weights"}}


def _trial_tree(sweep: SweepConfig, trial: Trial) -> dict:
    return {
        "model": {"name": trial.model},
        "train": {"loss": trial.loss, "loss_kwargs": dict(trial.loss_kwargs), "seed": trial.seed},
        "data": {"max_train_tokens": trial.tokens, "seed": trial.seed},
    }


def trial_config(sweep: SweepConfig, trial: Trial, extra: dict | None = None) -> Config:
    """The full training config of one trial: the base config, the sweep's overrides, the trial's
    own fields, then ``extra`` (tracking, storage), all as typed mappings. A domain's ``train``
    overrides merge right after the sweep's."""
    if trial.pretrained:
        raise ConfigError(f"trial {trial.key} evaluates the untrained model: it has no training config")
    tree = merge(merge(TRIAL_DEFAULTS, sweep.train_overrides), _domain_overrides(sweep, trial.domain, "train"))
    base = load_config(sweep.train_config, tree={**tree, **_plugins(sweep)})
    tree = merge(tree, _trial_tree(sweep, trial))
    if sweep.epochs:
        steps = max(1, math.ceil(sweep.epochs * trial.tokens / tokens_per_step(base)))
        tree = merge(tree, {"train": {"max_steps": steps}})
    tree = merge(tree, extra or {})
    return load_config(sweep.train_config, tree={**tree, **_plugins(sweep, base)})


def _plugins(sweep: SweepConfig, base: Config | None = None) -> dict:
    names = (*(base.plugins if base else ()), *sweep.plugins)
    return {"plugins": list(dict.fromkeys(names))} if names else {}


def eval_config(sweep: SweepConfig, extra: dict | None = None, domain: str = ""):
    """The evaluation config each trial runs (``sweep.eval_config`` + overrides + the domain's
    ``eval`` overrides + ``extra``)."""
    from emo_ray.evaluation import load_eval_config

    tree = merge(merge(sweep.eval_overrides, _domain_overrides(sweep, domain, "eval")), extra or {})
    return load_eval_config(sweep.eval_config, tree=tree)


def tokens_per_step(cfg: Config) -> int:
    return cfg.train.micro_batch_size * cfg.train.grad_accum * cfg.ray.num_workers * cfg.data.block_size


def compute_flops(sweep: SweepConfig, trial: Trial, cfg: Config | None = None) -> float | None:
    """Training compute 6·N·D (Kaplan et al.): N parameters (the registry's figure: a dry run
    loads no model), D tokens processed. None for a model the registry does not know."""
    from emo_ray.models import n_params

    cfg = cfg or trial_config(sweep, trial)
    n = n_params(trial.model)
    return None if n is None else 6.0 * n * cfg.train.max_steps * tokens_per_step(cfg)
