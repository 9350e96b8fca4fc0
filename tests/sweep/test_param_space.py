"""The sweep travels to its trials through Tune's ``param_space``, which Tune resolves: a domain
that only sets its evaluation (``{"eval": {...}}``, figure1-cpu's) must not be read as Tune's
``eval`` sampling syntax (it was, and the sweep died before its first trial)."""
import dataclasses

from ray.tune.search.variant_generator import generate_variants

from emo_ray.sweep import load_sweep_config, trials
from emo_ray.sweep.spec import pretrained_trials
from emo_ray.sweep.trial import param_space, sweep_of

EVAL_ONLY_DOMAIN = "grid.domains={wikitext-2: {eval: {generation: {corpora: [wikitext-2]}}}}"


def test_every_trial_gets_the_sweep_back_whatever_its_domains_hold():
    sweep = load_sweep_config("cpu-small", ["eval_config=configs/eval/quick.yaml", EVAL_ONLY_DOMAIN, "evaluate_pretrained=true"])
    grid = trials(sweep) + pretrained_trials(sweep)
    space = param_space(dataclasses.asdict(sweep), grid, "sqlite:///x.db", "parent", "/runs/train")
    variants = [spec for _, spec in generate_variants(space)]  # what Tune does with it
    assert len(variants) == len(grid) == 5
    assert all(sweep_of(v) == sweep for v in variants)
    assert [v["trial"] for v in variants] == [t.to_dict() for t in grid]


def test_a_sweep_restored_from_before_travels_as_a_dict():
    sweep = load_sweep_config("cpu-small")
    assert sweep_of({"sweep": dataclasses.asdict(sweep)}) == sweep
