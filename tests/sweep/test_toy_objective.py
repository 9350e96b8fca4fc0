"""A new objective with its own hyperparameter is swept without touching ``emo_ray/sweep/``:
registered by a plugin file and named in the sweep config's grid. The grid is checked here; the
real sweep of it (local Ray, Tune over Train, MLflow, the end-of-sweep report choosing between its
hyperparameter sets) runs in tests/sweep/test_sweep_resume.py, the one real sweep driver test."""
from __future__ import annotations

import textwrap

TOY = textwrap.dedent('''
    """A toy objective: MLE scaled by ``scale`` (its gradient, not its optimum, depends on it)."""
    from emo_ray.losses import LOSSES, LossSpec
    from emo_ray.losses.common import IGNORE_INDEX, LossOutput, masked_mean, target_nll


    def scaled_mle_loss(logits, labels, *, scale: float = 1.0, ignore_index: int = IGNORE_INDEX):
        mle, mask = target_nll(logits, labels, ignore_index)
        loss = scale * masked_mean(mle, mask)
        return LossOutput(loss, int(mask.sum()), {"mle": float(masked_mean(mle.detach(), mask))})


    LOSSES.setdefault("toy_scaled_mle", LossSpec(scaled_mle_loss))
''')
TOY_GRID = "grid.objectives={toy_scaled_mle: [{scale: 0.1}, {scale: 3.0}]}"


def write_toy_plugin(folder) -> str:
    plugin = folder / "toy_objective.py"
    plugin.write_text(TOY)
    return str(plugin)


def test_a_plugin_objective_and_its_hyperparameter_make_the_grid(tmp_path, restore_registry):
    from emo_ray.sweep import load_sweep_config, trials

    sweep = load_sweep_config("cpu-small", [f"plugins=[{write_toy_plugin(tmp_path)}]", "name=toy", TOY_GRID,
                                            "grid.data_tokens=[2048]", f"storage_path={tmp_path / 'runs'}"])
    assert [(t.loss, t.loss_kwargs) for t in trials(sweep)] == [("toy_scaled_mle", {"scale": 0.1}),
                                                                ("toy_scaled_mle", {"scale": 3.0})]
