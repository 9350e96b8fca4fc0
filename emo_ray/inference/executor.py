"""Run a model over rows: Ray Data ``map_batches`` over an actor pool, or the same actor locally.

Every stage (sampling, featurizing, oracle scoring, ICL scoring) is a callable class that loads
its model once in ``__init__`` and maps a pandas batch to a pandas batch. On a cluster the pool
size and the GPUs per actor come from ``ExecutionConfig``; on this CPU machine an actor's CPUs are
its torch threads. The evaluation and the oracle-corpus sampler share this executor (and its
config section), which is why it sits below both of them.
"""
from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Literal

from emo_ray.bounds import Bounds

ENV = {"TOKENIZERS_PARALLELISM": "false"}


@dataclass(frozen=True)
class ExecutionConfig:
    """Where the stage actors run; the ``execution`` section of the evaluation and oracle-corpus configs."""

    executor: Literal["ray", "local"] = "ray"
    """``ray``: Ray Data ``map_batches`` over actor pools; ``local``: the same actor classes called
    in this process (unit tests, or inside a trial that must not start more Ray work)."""
    address: str = ""
    """``ray.init`` address; empty joins ``$RAY_ADDRESS`` or starts a local in-process cluster."""
    num_actors: Annotated[int, Bounds(ge=1)] = 1
    """Actor pool size of every map stage (one model replica per actor)."""
    cpus_per_actor: Annotated[float, Bounds(gt=0)] = 2.0
    """CPUs reserved per actor; also its torch thread count."""
    gpus_per_actor: Annotated[float, Bounds(ge=0)] = 0.0
    """GPUs per actor on a cluster (the model then runs on ``cuda``)."""
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """Weights of every evaluation model (sampling, MAUVE features, oracle perplexity, ICL
    scoring). ``auto``: bf16 where the hardware has it (CUDA with bf16, a CPU with avx512_bf16 /
    AMX), fp32 otherwise. NLL and log-softmax sums stay fp32. ``fp16``: GPU only."""
    progress_bar: bool = True


class ModelActor:
    """Base of the stage actors: thread count and device from the execution config."""

    def __init__(self, threads: int, device: str):
        import torch

        torch.set_num_threads(max(1, threads))
        self.device = device


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Work done in the driver (retriever embeddings) with the thread count of one actor: on
    shared cores, surplus OpenMP threads spin against other jobs and slow everything down."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def actor_kwargs(execution: ExecutionConfig) -> dict:
    return {"threads": int(execution.cpus_per_actor), "device": "cuda" if execution.gpus_per_actor > 0 else "cpu",
            "dtype": execution.dtype}  # every stage actor resolves it (auto: bf16 where the hardware has it)


@contextlib.contextmanager
def ray_session(execution: ExecutionConfig) -> Iterator[None]:
    """Join the running Ray (inside a trial, or ``address``) or start a local one for the duration
    (``emo_ray.ray_runtime``, the same start-up as training)."""
    if execution.executor != "ray":
        yield
        return
    from emo_ray import ray_runtime

    # Logical CPUs for the whole pool plus one for Ray Data's own tasks, even on 2 cores (actors
    # set their own thread counts).
    need = math.ceil(execution.num_actors * execution.cpus_per_actor) + 1
    env = {k: os.environ.get(k, v) for k, v in ENV.items()}
    with ray_runtime.ray_session(address=execution.address, num_cpus=need, env=env, dashboard=False):
        yield


def map_rows(rows: list[dict], actor_cls, ctor_kwargs: dict, *, execution: ExecutionConfig, batch_size: int) -> list[dict]:
    """Apply ``actor_cls(**ctor_kwargs)`` to ``rows`` in batches of ``batch_size``; returns the
    output rows in input order (rows carry a ``row`` index for that)."""
    if not rows:
        return []
    rows = [{**r, "row": i} for i, r in enumerate(rows)]
    kwargs = {**ctor_kwargs, **actor_kwargs(execution)}
    if execution.executor == "local":
        out = _map_local(rows, actor_cls, kwargs, batch_size, execution.progress_bar)
    else:
        out = _map_ray(rows, actor_cls, kwargs, batch_size, execution)
    out.sort(key=lambda r: r["row"])
    for r in out:
        r.pop("row")
    return out


class _StageBar:
    """The bar of one stage over its rows, named after the running section and the actor class
    (``icl sst2 / ICLScorer``); nothing when ``execution.progress_bar`` is off."""

    def __init__(self, total: int, actor_cls, enabled: bool):
        from emo_ray import console

        desc = " / ".join(x for x in (console.current_stage(), actor_cls.__name__) if x)
        self.bar = console.Bar(total, desc, unit="rows", every=0.25) if enabled else None
        self.n = 0

    def add(self, n: int) -> None:
        self.n += n
        if self.bar:
            self.bar.update(self.n)

    def close(self) -> None:
        if self.bar:
            self.bar.close()


_IDLE: dict = {}
"""At most one idle local actor of a class that opts in (``reusable = True``), with the
constructor arguments it was built with (the key)."""


def local_actor(actor_cls, kwargs: dict):
    """The local actor for ``actor_cls(**kwargs)``: the idle one when the last local stage built
    the same (a ``reusable`` class: MAUVE featurizes the human windows, the generations and the
    ceiling's second windows in three calls, one model load instead of three), else a new one.
    Any other stage first drops the idle actor, so at most one extra model is ever held."""
    key = (actor_cls, repr(sorted(kwargs.items())))
    idle = _IDLE.pop(key, None)
    release_local_actors()
    actor = idle if idle is not None else actor_cls(**kwargs)
    if getattr(actor_cls, "reusable", False):
        _IDLE[key] = actor
    return actor


def release_local_actors() -> None:
    """Drop the idle local actor (and its model) now rather than at the next stage."""
    _IDLE.clear()


def _map_local(rows, actor_cls, kwargs, batch_size, progress) -> list[dict]:
    import pandas as pd

    actor = local_actor(actor_cls, kwargs)
    out: list[dict] = []
    bar = _StageBar(len(rows), actor_cls, progress)
    try:
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            out.extend(actor(pd.DataFrame(chunk)).to_dict("records"))
            bar.add(len(chunk))
    finally:
        bar.close()
    return out


def actor_accelerator(execution: ExecutionConfig) -> str | None:
    """GPU actors ask for the accelerator type of the node their driver runs on: a sweep trial's
    driver is pinned to its training node type (emo_ray.sweep.runner.trial_pins), so evaluation
    reuses those warm nodes and never lands on a smaller GPU that the model does not fit."""
    from emo_ray.placement import current_node_accelerator

    return current_node_accelerator() if execution.gpus_per_actor > 0 else None


def _map_ray(rows, actor_cls, kwargs, batch_size, execution: ExecutionConfig) -> list[dict]:
    import ray.data

    from emo_ray import console

    ctx = ray.data.DataContext.get_current()
    # Ray Data's own progress block (7 lines every few seconds, not naming the task) only when
    # verbose; our stage bar below says which section and stage is running.
    ctx.enable_progress_bars = execution.progress_bar and console.verbose()
    ctx.print_on_execution_start = console.verbose()
    # One block per batch: the pool pulls batches as actors free up (a slow actor does not hold
    # a large block hostage).
    n_blocks = max(1, math.ceil(len(rows) / batch_size))
    ds = ray.data.from_items(rows, override_num_blocks=n_blocks)
    ds = ds.map_batches(
        actor_cls,
        fn_constructor_kwargs=kwargs,
        batch_size=batch_size,
        batch_format="pandas",
        # A fixed pool, never larger than the number of batches (an idle actor still loads its
        # model; and Ray warns when a pool's minimum exceeds its inputs).
        compute=ray.data.ActorPoolStrategy(size=max(1, min(int(execution.num_actors), n_blocks))),
        num_cpus=execution.cpus_per_actor,
        num_gpus=execution.gpus_per_actor or None,
        accelerator_type=actor_accelerator(execution),
    )
    out: list[dict] = []
    bar = _StageBar(len(rows), actor_cls, execution.progress_bar)
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="pandas"):
            out.extend(batch.to_dict("records"))
            bar.add(len(batch))
    finally:
        bar.close()
    return out
