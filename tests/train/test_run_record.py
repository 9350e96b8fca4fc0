"""What a resume may change: every config field is classified, by field metadata
(``typed_config.NEUTRAL``), as changing the trained weights or not."""
from __future__ import annotations

import dataclasses

import pytest

from emo_ray import typed_config
from emo_ray.config import Config, ConfigError, to_flat
from emo_ray.train.run_record import check_resume, trained_config

# Fields that change what a run trains (the weights it produces or the model it exports); every
# other field must carry ``metadata=typed_config.NEUTRAL`` on itself or its section. A new field
# fails the first test until its author decides which it is.
CHANGES_WEIGHTS = {
    "model.name", "model.gradient_checkpointing", "plugins",
    "data.train", "data.validation", "data.text_field", "data.block_size", "data.validation_fraction",
    "data.max_train_tokens", "data.max_train_documents", "data.max_validation_blocks", "data.seed",
    "data.format", "data.instruction_field", "data.input_field", "data.output_field", "data.prompt_template",
    "train.loss", "train.loss_kwargs", "train.cost_embedding", "train.cost_embedding_model", "train.loss_impl",
    "train.loss_chunk_size", "train.max_steps", "train.micro_batch_size", "train.grad_accum", "train.lr",
    "train.weight_decay", "train.betas", "train.optimizer_impl", "train.warmup_steps", "train.schedule",
    "train.min_lr_ratio", "train.clip_grad_norm", "train.seed", "train.zero_stage", "train.precision",
    "train.lora.rank", "train.lora.alpha", "train.lora.dropout", "train.lora.target_modules",
    "train.eval_every", "train.select_checkpoint",  # which validated weights are exported
    "train.overflow_patience", "train.dead_patience",  # whether a run stops as diverged
}


def test_every_config_field_is_classified():
    leaves = set(to_flat(Config()))
    neutral = typed_config.neutral_keys(Config)
    unclassified = sorted(leaves - neutral - CHANGES_WEIGHTS)
    assert not unclassified, (f"{unclassified}: mark each metadata=typed_config.NEUTRAL in emo_ray/config.py if it "
                              "does not change the trained weights, else add it to CHANGES_WEIGHTS here")
    assert not neutral & CHANGES_WEIGHTS, sorted(neutral & CHANGES_WEIGHTS)
    assert CHANGES_WEIGHTS <= leaves, sorted(CHANGES_WEIGHTS - leaves)  # no stale names
    # what the hand-kept list held before the metadata: all of it still neutral
    assert {"train.log_every", "train.checkpoint_every", "train.keep_checkpoints", "train.debug_fail_at_step",
            "train.final_checkpoint", "ray.run_name", "ray.num_workers", "tracking.experiment"} <= neutral


def _other(value):
    """A different value of the same kind (validation is not the point here)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, tuple):
        return value + ("x",)
    if isinstance(value, dict):
        return {**value, "x": 1}
    raise AssertionError(type(value))


def _changed(cfg, dotted: str):
    *path, leaf = dotted.split(".")
    if not path:
        return dataclasses.replace(cfg, **{leaf: _other(getattr(cfg, leaf))})
    section = getattr(cfg, path[0])
    return dataclasses.replace(cfg, **{path[0]: _changed(section, ".".join([*path[1:], leaf]))})


@pytest.mark.parametrize("key", sorted(set(to_flat(Config()))))
def test_a_resume_refuses_exactly_the_fields_that_change_the_weights(key):
    cfg = Config()
    record = {"config": trained_config(cfg)}
    changed = _changed(cfg, key)
    assert to_flat(changed)[key] != to_flat(cfg)[key]
    if key in typed_config.neutral_keys(Config):
        assert check_resume(changed, record, allow_changed=False) == []
    else:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            check_resume(changed, record, allow_changed=False)
