"""Run a model over rows: Ray Data ``map_batches`` over an actor pool, or the same actor locally.

Every stage (sampling, featurizing, oracle scoring, ICL scoring) is a callable class that loads
its model once in ``__init__`` and maps a pandas batch to a pandas batch. On a cluster the pool
size and the GPUs per actor come from ``ExecutionConfig``; on this CPU machine an actor's CPUs are
its torch threads.
"""
from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator

from emo_ray.evaluation.config import ExecutionConfig

ENV = {"TOKENIZERS_PARALLELISM": "false"}


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
    return {"threads": int(execution.cpus_per_actor), "device": "cuda" if execution.gpus_per_actor > 0 else "cpu"}


@contextlib.contextmanager
def ray_session(execution: ExecutionConfig) -> Iterator[None]:
    """Join the running Ray (inside a trial, or ``address``) or start a local one for the duration."""
    if execution.executor != "ray":
        yield
        return
    import ray

    started = False
    if not ray.is_initialized():
        os.environ.update({k: os.environ.get(k, v) for k, v in ENV.items()})
        kwargs: dict = {"include_dashboard": False, "runtime_env": {"env_vars": dict(ENV)}}
        if execution.address:
            kwargs["address"] = execution.address
        elif not os.environ.get("RAY_ADDRESS"):
            # Logical CPUs for the whole pool plus one for Ray Data's own tasks, even on 2 cores
            # (actors set their own thread counts).
            need = math.ceil(execution.num_actors * execution.cpus_per_actor) + 1
            kwargs["num_cpus"] = max(os.cpu_count() or 1, need)
        ray.init(**kwargs)
        started = True
    try:
        yield
    finally:
        if started:
            ray.shutdown()


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


def _map_local(rows, actor_cls, kwargs, batch_size, progress) -> list[dict]:
    import pandas as pd
    from tqdm import tqdm

    actor = actor_cls(**kwargs)
    out: list[dict] = []
    with tqdm(total=len(rows), desc=actor_cls.__name__, disable=not progress, leave=False) as bar:
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            out.extend(actor(pd.DataFrame(chunk)).to_dict("records"))
            bar.update(len(chunk))
    return out


def _map_ray(rows, actor_cls, kwargs, batch_size, execution: ExecutionConfig) -> list[dict]:
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = execution.progress_bar
    # One block per batch: the pool pulls batches as actors free up (a slow actor does not hold
    # a large block hostage).
    n_blocks = max(1, math.ceil(len(rows) / batch_size))
    ds = ray.data.from_items(rows, override_num_blocks=n_blocks)
    ds = ds.map_batches(
        actor_cls,
        fn_constructor_kwargs=kwargs,
        batch_size=batch_size,
        batch_format="pandas",
        concurrency=execution.num_actors,
        num_cpus=execution.cpus_per_actor,
        num_gpus=execution.gpus_per_actor or None,
    )
    return [dict(r) for r in ds.take_all()]
