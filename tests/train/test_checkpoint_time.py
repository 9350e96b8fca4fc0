"""Checkpoint I/O (issue 27.4): time-based checkpoints agreed on by every rank, and the full
checkpoints dropped once a ``final_checkpoint=weights`` run committed its final weights."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from emo_ray.config import ConfigError, load_config
from emo_ray.train.finalize import drop_superseded_checkpoints
from emo_ray.train.checkpoint_io import checkpoint_due, rank0_decides


def test_checkpoint_on_a_step_basis_as_before():
    due = [s for s in range(1, 11) if checkpoint_due(s, 10, every_steps=4, every_minutes=0, since_last_s=1e9)]
    assert due == [4, 8]  # never at the last step: the final save follows


def test_checkpoint_on_a_time_basis():
    kw = dict(every_steps=0, every_minutes=30)
    assert not checkpoint_due(5, 100, since_last_s=29 * 60, **kw)
    assert checkpoint_due(5, 100, since_last_s=30 * 60, **kw)
    assert not checkpoint_due(100, 100, since_last_s=90 * 60, **kw)
    assert not checkpoint_due(5, 100, every_steps=0, every_minutes=0, since_last_s=1e9)  # off


@pytest.mark.parametrize("value", ["-1", "nan", "inf"])
def test_checkpoint_every_minutes_is_validated(value):
    with pytest.raises(ConfigError, match="train.checkpoint_every_minutes"):
        load_config(None, [f"train.checkpoint_every_minutes={value}"])
    assert load_config(None, ["train.checkpoint_every_minutes=20"]).train.checkpoint_every_minutes == 20


def _decide(rank, world, port, cases, out_dir):
    """Every case's decision of this rank in one process group (a spawn costs seconds: one per rank)."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        for i, flags in enumerate(cases):
            decided = rank0_decides(flags[rank], torch.device("cpu"))
            (out_dir / f"{i}-rank{rank}").write_text(str(int(decided)))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_every_rank_follows_rank_zeros_clock(tmp_path):
    """Ranks whose clocks disagree must all save or all skip (the save is collective).

    The ranks are spawned processes and answer through files: nothing here may fork the test
    process, which holds the session's Ray driver (tests/conftest.py). A fork (e.g. a default
    ``multiprocessing.Manager()``) copies the driver's live gRPC connections into the child and
    left the driver's next call to Ray's GCS waiting forever: the next fit hung at its start."""
    import torch.multiprocessing as mp

    cases = ([True, False], [False, True])
    mp.spawn(_decide, args=(2, _free_port(), cases, tmp_path), nprocs=2, join=True)
    for i, flags in enumerate(cases):
        assert {r: (tmp_path / f"{i}-rank{r}").read_text() for r in range(2)} == {0: str(int(flags[0])), 1: str(int(flags[0]))}
    assert rank0_decides(True, torch.device("cpu")) is True  # one process: its own clock


def test_full_checkpoints_are_dropped_once_the_final_weights_are_committed(tmp_path):
    from ray.train import Checkpoint

    dirs = [tmp_path / f"checkpoint_{i}" for i in range(3)]
    for d in dirs:
        d.mkdir()
        (d / "mp_rank_00_model_states.pt").write_bytes(b"x" * 16)
    ckpts = [Checkpoint.from_directory(str(d)) for d in dirs]
    result = SimpleNamespace(checkpoint=ckpts[2], best_checkpoints=[(c, {}) for c in ckpts])
    assert sorted(drop_superseded_checkpoints(result)) == sorted(str(d) for d in dirs[:2])
    assert [d.exists() for d in dirs] == [False, False, True]
    assert drop_superseded_checkpoints(SimpleNamespace(checkpoint=None, best_checkpoints=[])) == []
