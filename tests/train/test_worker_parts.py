"""The worker's separate concerns, each without Ray: its one input record, the divergence guard,
the best-checkpoint keeper."""
from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest

from emo_ray.config import load_config
from emo_ray.train.best_model import BestCheckpointKeeper, read_best
from emo_ray.train.divergence import DivergenceGuard
from emo_ray.train.worker_inputs import WorkerInputs


def test_worker_inputs_travel_as_one_pickled_record(tmp_path, restore_registry):
    plugin = tmp_path / "my_plugin.py"
    plugin.write_text("import emo_ray.losses as L\nL.LOSSES.setdefault('mle_copy', L.LOSSES['mle'])\n")
    cfg = load_config(None, [f"plugins=[{plugin}]", "train.loss=mle_copy", "train.loss_kwargs={}"])
    val = {"data": np.arange(6).reshape(2, 3), "loss_mask": np.ones((2, 3), dtype=np.int64)}
    inputs = WorkerInputs(cfg, "/models/m", "sqlite:///x.db", "run1", val, 8, None, "/runs/r/best_model")
    loop_config = pickle.loads(pickle.dumps(inputs.loop_config()))  # what Ray does with it
    assert list(loop_config) == ["inputs"]
    back = WorkerInputs.from_loop_config(loop_config)
    assert back.cfg == cfg and back.train_blocks_per_worker == 8 and back.best_model_dir == "/runs/r/best_model"
    assert np.array_equal(back.validation_blocks["data"], val["data"])
    with pytest.raises(AttributeError):
        back.model_path = "elsewhere"  # frozen: the workers read what the driver decided
    with pytest.raises(TypeError, match="must be a WorkerInputs"):
        WorkerInputs.from_loop_config({"inputs": {"config": {}}})


def test_divergence_guard_counts_dead_steps_and_overflow_skips():
    guard = DivergenceGuard(overflow_patience=2, dead_patience=3)
    assert guard.check(1, 2.0, 0.0, tokens=64, skipped_steps=0) is None
    assert guard.check(2, 2.0, 0.0, tokens=0, skipped_steps=0) is None  # no trained token: not counted, not reset
    assert guard.check(3, 2.0, 0.0, tokens=64, skipped_steps=0) is None
    assert guard.check(4, 2.0, 0.0, tokens=64, skipped_steps=0).startswith("TrainingDiverged: dead model")
    guard = DivergenceGuard(overflow_patience=2, dead_patience=3, skipped_steps=5)  # a resumed engine's count
    assert guard.check(1, 2.0, math.inf, tokens=64, skipped_steps=6) is None  # an fp16 overflow skip
    assert guard.check(2, 2.0, 1.0, tokens=64, skipped_steps=6) is None and guard.skips == 0
    assert guard.check(3, 2.0, math.inf, tokens=64, skipped_steps=6).startswith("TrainingDiverged: non-finite gradient")
    guard = DivergenceGuard(overflow_patience=2, dead_patience=3)
    for step, skipped in enumerate([1, 2], start=1):
        assert guard.check(step, 2.0, math.inf, tokens=64, skipped_steps=skipped) is None
    assert "3 consecutive overflow-skipped steps" in guard.check(3, 2.0, math.inf, tokens=64, skipped_steps=3)


def _saver(text: str):
    def save_hf(out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "weights.txt").write_text(text)
    return save_hf


def test_best_checkpoint_keeper_exports_the_lowest_validation_loss(tmp_path):
    dest = str(tmp_path / "best_model")
    keeper = BestCheckpointKeeper.start(True, dest, resumed=False, rank=0, device="cpu")
    keeper.offer({"val_loss": 2.0, "val_tokens": 10.0}, 2, _saver("step 2"))
    keeper.offer({"val_loss": 3.0, "val_tokens": 10.0}, 4, _saver("step 4"))  # worse: kept out
    keeper.offer({"val_loss": 0.0, "val_tokens": 0.0}, 5, _saver("step 5"))  # no tokens: no loss at all
    assert read_best(dest) == (2.0, 2) and keeper.metrics() == {"val_best_loss": 2.0, "val_best_step": 2}
    keeper.export_final(tmp_path / "final" / "hf", _saver("last weights"))
    assert (tmp_path / "final" / "hf" / "weights.txt").read_text() == "step 2"
    # a restarted attempt continues the stored best; a fresh start drops it
    assert BestCheckpointKeeper.start(True, dest, resumed=True, rank=0, device="cpu").metrics()["val_best_step"] == 2
    assert BestCheckpointKeeper.start(True, dest, resumed=False, rank=0, device="cpu").metrics()["val_best_step"] == 0
    assert read_best(dest) == (math.inf, 0)


def test_without_selection_the_last_weights_are_exported(tmp_path):
    keeper = BestCheckpointKeeper.start(False, "", resumed=False, rank=0, device="cpu")
    keeper.offer({"val_loss": 1.0, "val_tokens": 10.0}, 2, _saver("never"))
    assert keeper.metrics() == {}
    keeper.export_final(tmp_path / "hf", _saver("last weights"))
    assert (tmp_path / "hf" / "weights.txt").read_text() == "last weights"
