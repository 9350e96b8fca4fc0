"""configs/sweeps/cluster-smoke.yaml (issue 27): the short sweep run through `ray job submit`
before `paper`: one trial per paper model, a checkpoint before an injected failure, evaluation on
the longest ICL items."""
from __future__ import annotations

from emo_ray.sweep import load_sweep_config, trial_config, trials
from emo_ray.sweep.spec import eval_config


def test_one_short_trial_per_paper_model():
    smoke, paper = load_sweep_config("cluster-smoke"), load_sweep_config("paper")
    ts = trials(smoke)
    assert sorted(t.model for t in ts) == sorted(paper.grid.models)
    assert smoke.train_config == paper.train_config  # the paper's own training path
    assert {t.loss for t in ts} <= {t.loss for t in trials(paper)}
    assert smoke.storage_path.startswith("/mnt/efs/")  # checkpoints reachable from every node


def test_each_trial_checkpoints_then_fails_once_and_can_resume():
    smoke = load_sweep_config("cluster-smoke")
    for t in trials(smoke):
        cfg = trial_config(smoke, t)
        every, fail, steps = cfg.train.checkpoint_every, cfg.train.debug_fail_at_step, cfg.train.max_steps
        assert 0 < every < fail < steps, (every, fail, steps)  # a checkpoint exists when it fails
        assert cfg.ray.max_failures >= 1  # Ray Train restarts it
        assert steps <= 100  # short


def test_evaluation_scores_the_longest_icl_prompts():
    ecfg = eval_config(load_sweep_config("cluster-smoke"))
    assert tuple(ecfg.icl.tasks) == ("mmlu",) and 0 < ecfg.icl.num_items <= 100
    assert ecfg.generation_enabled and ecfg.generation.num_prompts > 0
