"""configs/sweeps/figure1-cpu.yaml (issue 23): the data axis of Figure 1 as the issue asks for it,
MAUVE at table1_cpu's validated setting, and a dry-run budget within 8 hours on 2 cores."""
from pathlib import Path

import pytest

from emo_ray.typed_config import default_data_dir
from emo_ray.evaluation.config import load_eval_config
from emo_ray.sweep import load_sweep_config, trial_config, trials
from emo_ray.sweep.spec import eval_config, pretrained_trials

# The config names the shared data (ICL label files are checked when it loads).
pytestmark = pytest.mark.skipif(not (Path(default_data_dir()) / "sst2").exists(),
                                reason="shared data not found (set EMO_RAY_DATA)")


def test_figure1_cpu_is_the_issue_23_data_axis():
    sweep = load_sweep_config("figure1-cpu")
    grid = trials(sweep)
    volumes = sorted({t.tokens for t in grid})
    assert len(volumes) >= 4 and volumes[-1] / volumes[0] >= 32 and sweep.epochs == 1.0  # one pass: x = tokens seen
    assert {t.model for t in grid} == {"smollm2-135m"} and {"mle", "emo"} <= {t.loss for t in grid}
    assert sorted({t.seed for t in grid}) == [0, 1, 2] and len(pretrained_trials(sweep)) == 1
    cfg = trial_config(sweep, grid[0])
    assert cfg.data.validation.endswith("wikitext-2/valid_tokens.jsonl") and cfg.data.train.endswith("train_partial.jsonl")
    ecfg = eval_config(sweep, domain=grid[0].domain)
    assert ecfg.icl_enabled and len(ecfg.icl.tasks) >= 4 and ecfg.icl.num_items >= 200
    assert ecfg.generation_enabled and list(ecfg.generation.corpora) == ["wikitext-2"]
    validated = load_eval_config("configs/eval/table1_cpu.yaml")
    assert ecfg.mauve == validated.mauve and ecfg.generation.num_prompts == validated.generation.num_prompts
    assert ecfg.protocol == validated.protocol
    assert not ecfg.oracle.enabled  # Figure 1 reads no oracle perplexity


def test_figure1_cpu_dry_run_budget_is_within_8_hours_on_2_cores():
    from emo_ray.sweep import budget
    from emo_ray.sweep.runner import describe

    sweep = load_sweep_config("figure1-cpu")
    grid = trials(sweep)
    configs = [trial_config(sweep, t) for t in grid]
    ecfg = eval_config(sweep, domain=grid[0].domain)
    b = budget.estimate(grid, configs, [(ecfg, 135e6)] * (len(grid) + 1), cores=2)
    assert b.wall_hours <= 8.0 and b.eval_s > b.train_s > 0
    assert "estimated CPU time" in describe(sweep)
    # The estimate grows with what is evaluated: twice the ICL items cost more than the budget left.
    more = budget.evaluation_seconds(ecfg, 1.0) - len(ecfg.icl.tasks) * ecfg.icl.num_items * budget.ICL_S_PER_ITEM
    assert more > 0
    # The oracle stage is left out of the estimate when it is off, and only then.
    from dataclasses import replace

    with_oracle = replace(ecfg, oracle=replace(ecfg.oracle, enabled=True))
    oracle_s = (250 * 2 + 250) * budget.NEW_TOKENS / budget.ORACLE_TOK_S
    assert budget.evaluation_seconds(with_oracle, 1.0) - budget.evaluation_seconds(ecfg, 1.0) == pytest.approx(oracle_s)
