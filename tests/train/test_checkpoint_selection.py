"""train.eval_every / select_checkpoint / cost_embedding_model: config errors, the candidate store."""
from __future__ import annotations

import math

import pytest

from emo_ray.config import ConfigError, load_config
from emo_ray.train import best_model


@pytest.mark.parametrize("overrides,message", [
    (["train.eval_every=-1"], "train.eval_every must be >= 0"),
    (["train.select_checkpoint=best_val_loss"], "needs train.eval_every > 0"),
    (["train.select_checkpoint=best_val_loss", "train.eval_every=5", "data.validation_fraction=0"],
     "needs validation data"),
    (["train.select_checkpoint=best", "train.eval_every=5"], "select_checkpoint"),
    (["train.cost_embedding=adaptive", "train.cost_embedding_model=tiny-llama"], "cost_embedding=adaptive"),
])
def test_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_valid_selection_configs():
    cfg = load_config(None, ["train.select_checkpoint=best_val_loss", "train.eval_every=5"])
    assert (cfg.train.select_checkpoint, cfg.train.eval_every) == ("best_val_loss", 5)
    # explicit validation data instead of a held-out fraction
    cfg = load_config(None, ["train.select_checkpoint=best_val_loss", "train.eval_every=5",
                             "data.validation_fraction=0", "data.validation=${EMO_RAY_DATA}/wikitext-2/valid.jsonl"])
    assert cfg.data.validation_fraction == 0
    assert load_config(None, ["train.loss=emo_mode2", "train.cost_embedding_model=tiny-llama"]).train.cost_embedding_model


def test_cost_embedding_model_is_ignored_without_a_cost_embedding():
    """A sweep sets it once for every objective (table3, as the official LoRA script): MLE
    neither fails nor loads the other model."""
    from emo_ray.train.prepare import _check_cost_embedding_model

    cfg = load_config(None, ["train.loss=mle", "train.cost_embedding_model=/no/such/model"])
    assert _check_cost_embedding_model(cfg, "unused") is None


def test_vocab_mismatch_is_an_early_config_error(tmp_path, monkeypatch):
    from transformers import LlamaConfig, LlamaForCausalLM

    from emo_ray.train.prepare import _check_cost_embedding_model

    monkeypatch.setenv("EMO_RAY_CACHE", str(tmp_path / "cache"))
    LlamaForCausalLM(LlamaConfig(vocab_size=300, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=2)).save_pretrained(tmp_path / "v300")
    from emo_ray.models import materialize

    own = materialize("tiny-llama")
    cfg = load_config(None, [f"train.cost_embedding_model={tmp_path / 'v300'}"])
    with pytest.raises(ConfigError, match="vocab_size=300.*vocab_size=257"):
        _check_cost_embedding_model(cfg, own)
    cfg = load_config(None, ["train.cost_embedding_model=no/such/model/here"])
    with pytest.raises(ConfigError, match="train.cost_embedding_model"):
        _check_cost_embedding_model(cfg, own)
    assert _check_cost_embedding_model(load_config(None, []), own) is None


def _export(folder, content):
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_text(content)
    (folder / "config.json").write_text("{}")
    return folder


def test_candidate_is_overwritten_and_fetched(tmp_path):
    dest = str(tmp_path / "run" / "best_model")
    assert best_model.read_best(dest) == (math.inf, 0)
    best_model.store(_export(tmp_path / "a", "step 2"), dest, 1.5, 2)
    best_model.store(_export(tmp_path / "b", "step 4"), dest, 1.25, 4)
    assert best_model.read_best(dest) == (1.25, 4)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["best_model"]  # one copy, no leftovers
    best_model.fetch(dest, tmp_path / "out" / "hf")
    assert (tmp_path / "out" / "hf" / "model.safetensors").read_text() == "step 4"
    assert sorted(p.name for p in (tmp_path / "out" / "hf").iterdir()) == ["config.json", "model.safetensors"]
    best_model.remove(dest)
    assert best_model.read_best(dest) == (math.inf, 0)
