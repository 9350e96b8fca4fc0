"""The first phase of a run, on the driver: the model and the data, checked against each other
and the config, so that everything that can be wrong with the inputs fails here, before the MLflow
run opens or any process starts."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emo_ray import storage as storage_lib
from emo_ray.config import Config, ConfigError, to_flat
from emo_ray.typed_config import expand_path


@dataclass(frozen=True)
class PreparedInputs:
    """What the driver found out about the run's model and data."""

    model_path: str
    """The materialised model folder."""
    n_params: int
    packed: Any
    """The packed blocks (``emo_ray.data.prepare_blocks``): ``train``, ``validation``, their masks, ``stats``."""
    cost_model_path: str | None
    """``train.cost_embedding_model``'s materialised folder, None when the run uses its own head."""
    blocks_per_worker: int


def prepare_inputs(cfg: Config) -> PreparedInputs:
    """Materialise the model, pack the data and check that they fit each other and the config."""
    from emo_ray.data import prepare_blocks
    from emo_ray.models import load_tokenizer, materialize
    from emo_ray.models.size import count_parameters

    model_path = materialize(cfg.model.name)
    _check_model_fits(cfg, model_path)
    n_params = count_parameters(model_path)
    packed = prepare_blocks(cfg.data, load_tokenizer(model_path))
    check_vocab(packed, model_path)
    cost_model_path = _check_cost_embedding_model(cfg, model_path)
    if cfg.train.select_checkpoint == "best_val_loss" and not len(packed.validation):
        raise ConfigError("train.select_checkpoint=best_val_loss: the validation data holds no block of "
                          f"data.block_size={cfg.data.block_size} tokens")
    world = cfg.ray.num_workers
    per_worker = len(packed.train) // world
    if per_worker < cfg.train.micro_batch_size:
        raise ConfigError(
            f"{len(packed.train)} training blocks across {world} workers leave fewer than "
            f"train.micro_batch_size={cfg.train.micro_batch_size} per worker"
        )
    return PreparedInputs(model_path, n_params, packed, cost_model_path, per_worker)


def _check_model_fits(cfg: Config, model_path: str) -> None:
    from transformers import AutoConfig

    mc = AutoConfig.from_pretrained(model_path)
    limit = getattr(mc, "max_position_embeddings", None) or getattr(mc, "n_positions", None)
    if limit and cfg.data.block_size > limit:
        raise ConfigError(f"data.block_size {cfg.data.block_size} exceeds the model's {limit} positions")


def check_vocab(packed, model_path: str) -> None:
    """Every token id the tokenizer produced must index the model's embedding (a tokenizer of
    another model fails here, not with an IndexError in a worker minutes later)."""
    from transformers import AutoConfig

    vocab = getattr(AutoConfig.from_pretrained(model_path), "vocab_size", None)
    top = max((int(b.max()) for b in (packed.train, packed.validation) if getattr(b, "size", 0)), default=-1)
    if vocab and top >= vocab:
        raise ConfigError(f"the tokenizer produced token id {top}, but the model at {model_path} has "
                          f"vocab_size={vocab}: tokenizer and model do not match")


def check_cost_model(cfg: Config) -> str | None:
    """The sweep pre-flight's form of ``_check_cost_embedding_model``: the cost head fetched (a hub
    model: config and head shard only, into the shared cache) or one ConfigError, before any trial."""
    from emo_ray.models import materialize

    return _check_cost_embedding_model(cfg, materialize(cfg.model.name))


def _check_cost_embedding_model(cfg: Config, model_path: str) -> str | None:
    """``train.cost_embedding_model``, materialised once here (a hub model: only its config and the
    shard holding its head, into the shared cache the workers read), and its vocabulary checked against
    the trained model's (hidden sizes may differ); None when the run uses its own head or its
    objective has no cost embedding (then the setting is ignored, like ``train.cost_embedding``)."""
    from emo_ray.losses import get_spec

    if not cfg.train.cost_embedding_model or not get_spec(cfg.train.loss).needs_cost_embedding:
        return None
    from emo_ray.models import materialize
    from emo_ray.models.cost_embedding import fetch_cost_head, head_vocab_size

    try:
        path = materialize(cfg.train.cost_embedding_model)
        if not Path(path).is_dir():  # a hub id: only its config and the head's shard, fetched once here
            path = fetch_cost_head(path)
    except FileNotFoundError as e:
        raise ConfigError(f"train.cost_embedding_model: {e}") from None
    other, own = head_vocab_size(path), head_vocab_size(model_path)
    if other != own:
        raise ConfigError(f"train.cost_embedding_model {cfg.train.cost_embedding_model!r} has vocab_size={other}, "
                          f"but the trained model {cfg.model.name!r} has vocab_size={own}: they must be equal")
    return path


def _short_model(name: str) -> str:
    return name.rstrip("/").split("/")[-1]


def default_run_name(cfg: Config, train_tokens: int) -> str:
    """``{objective}-{model}-{tokens}tok-s{seed}``, e.g. ``emo-smollm2-135m-65536tok-s42``."""
    return f"{cfg.train.loss}-{_short_model(cfg.model.name)}-{train_tokens}tok-s{cfg.train.seed}"


def _expand_data_path(value: str) -> str:
    parts = []
    for p in str(value).split(","):
        p = p.strip()
        if not p or p.startswith("hf:") or storage_lib.is_uri(p):
            parts.append(p)
        else:
            parts.append(os.path.abspath(expand_path(p)))
    return ",".join(parts)


def dataset_name(path: str) -> str:
    first = path.split(",")[0]
    if first.startswith("hf:"):
        return first[3:]
    p = Path(first)
    return f"{p.parent.name}/{p.stem}" if p.suffix else p.name


def run_params(cfg: Config, prepared: PreparedInputs) -> dict:
    """The run's params: the flattened config with data paths expanded, and what the driver
    found out (model folder and size, data volume, the cost head's folder)."""
    flat = to_flat(cfg)
    for k in ("data.train", "data.validation"):
        if flat.get(k):
            flat[k] = _expand_data_path(flat[k])
    params = {**flat, "model.path": prepared.model_path, "model.n_params": prepared.n_params,
              **{f"data.{k}": v for k, v in prepared.packed.stats.items()}}
    if prepared.cost_model_path:
        params["train.cost_embedding_model_path"] = prepared.cost_model_path
    return params


def ray_datasets(packed):
    """``(Ray Dataset of the training blocks, validation blocks for the workers)``. Instruction data
    (``data.format=instruction``) carries its loss mask: a second column, and ``{"data": ids,
    "loss_mask": mask}`` for validation."""
    import ray.data

    if packed.train_mask is None:
        return ray.data.from_numpy(packed.train), packed.validation
    import numpy as np

    from emo_ray.train.batches import MASK_COLUMN

    # One (n, 2, T) array split into two columns: the ids and their mask stay one row.
    train_ds = ray.data.from_numpy(np.stack([packed.train, packed.train_mask.astype(np.int64)], axis=1))
    train_ds = train_ds.map_batches(lambda b: {"data": b["data"][:, 0], MASK_COLUMN: b["data"][:, 1]},
                                    batch_format="numpy").materialize()  # before the workers hold the CPUs
    return train_ds, {"data": packed.validation, MASK_COLUMN: packed.validation_mask}
