"""Issue 27, item 9: all ICL tasks of an evaluation are scored through one actor pool, so the
scored model loads once, not once per task; the per-task results stay those of a task alone."""
from __future__ import annotations

import numpy as np
import pytest

from emo_ray.evaluation.config import EvalConfig, ICLConfig
from emo_ray.evaluation.icl.evaluate_task import evaluate_task
from emo_ray.evaluation.run import run_evaluation
from tests.evaluation.conftest import LOCAL, write_task


@pytest.fixture
def two_tasks(tmp_path) -> tuple[str, str]:
    """Two toy tasks of 3 items each: with ``batch_items=1`` (batches of 4 rows) the joint pass
    has a batch holding items of both tasks."""
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    return (write_task(tmp_path / "a", name="toy_a", demonstrations=2),
            write_task(tmp_path / "b", name="toy_b", template='"{text}" Sentiment: {label}', demonstrations=1))


@pytest.fixture
def count_loads(monkeypatch) -> list[str]:
    """The model paths ``load_for_eval`` was asked for (the stage actors' model loads)."""
    from emo_ray.models import loading

    loads, real = [], loading.load_for_eval

    def counted(path, *a, **k):
        loads.append(str(path))
        return real(path, *a, **k)

    monkeypatch.setattr(loading, "load_for_eval", counted)
    return loads


def test_all_tasks_score_through_one_model_load(tiny_path, two_tasks, count_loads):
    icl = ICLConfig(tasks=two_tasks, batch_items=1, num_items=0)
    cfg = EvalConfig(generation_enabled=False, icl=icl, execution=LOCAL)
    joint = run_evaluation(tiny_path, cfg)
    assert count_loads == [tiny_path]  # one load for both tasks (one per task before)
    assert joint.metrics["icl/n_tasks"] == 2.0

    count_loads.clear()
    for task, name in zip(two_tasks, ("toy_a", "toy_b")):
        alone = evaluate_task(tiny_path, task, cfg)
        ours, ref = joint.tables[f"icl/{name}.json"], alone.tables[f"icl/{name}.json"]
        assert list(ours["prediction"]) == list(ref["prediction"]) and list(ours["item"]) == list(ref["item"])
        assert list(ours["n_tokens"]) == list(ref["n_tokens"])
        np.testing.assert_allclose(np.array(list(ours["nll_sum"])), np.array(list(ref["nll_sum"])), rtol=1e-5)
        for m in ("accuracy", "prior_baseline", "n_items", "n_skipped", "n_demonstrations_dropped"):
            assert joint.metrics[f"icl/{name}/{m}"] == alone.metrics[f"icl/{name}/{m}"]
    assert len(count_loads) == 2  # the single-task path still works on its own
