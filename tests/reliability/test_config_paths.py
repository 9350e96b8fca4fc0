"""Config combinations that used to fail late or write in the wrong place are one stderr line and
exit 2 before anything starts (issue 25 item 2, issue 27 items 2 and 11)."""
from __future__ import annotations

import pytest
import torch

from emo_ray.cli import main
from emo_ray.config import ConfigError, load_config


@pytest.mark.parametrize("name", ["../x", "../../x", "a/b", "/abs", "a\\b", ".", ".."])
def test_run_name_that_is_not_one_path_component_is_refused(capsys, name):
    assert main(["show-config", "configs/tiny_smoke.yaml", f"ray.run_name={name!r}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ray.run_name must be one path component" in err[0]


@pytest.mark.parametrize("name", ["", "train-3", "table1-cpu_emo.seed0", "run..2"])
def test_plain_run_names_still_load(name):
    assert load_config(None, [f"ray.run_name={name!r}"]).ray.run_name == name


def test_lora_with_best_val_loss_selection_is_refused_at_load():
    with pytest.raises(ConfigError, match="best_val_loss cannot be combined with train.lora"):
        load_config("configs/lora_tiny.yaml", ["train.eval_every=2", "train.select_checkpoint=best_val_loss"])


def _tiny_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=11, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=False)
    return LlamaForCausalLM(cfg).float()


def _with_precision(cfg, precision):
    import dataclasses

    # fp16 needs a GPU at load time; the loss-path choice is made from the config alone.
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, precision=precision))


def test_fp16_never_takes_the_chunked_loss():
    """Under fp16 the chunked kernel's forward-computed logit gradient would be rounded to fp16
    before the loss scale applies (0 for p below fp16's range): auto falls back to the
    materialised loss, and an explicit chunked request is refused naming the precision."""
    from emo_ray.train.objective import build_objective, chunked_is_exact

    model = _tiny_model()
    auto = _with_precision(load_config(None, ["train.loss=emo", "train.loss_impl=auto"]), "fp16")
    assert not chunked_is_exact(auto, model)
    assert not build_objective(auto, model).chunked
    bf16 = _with_precision(auto, "bf16")
    assert chunked_is_exact(bf16, model) and build_objective(bf16, model).chunked
    forced = _with_precision(load_config(None, ["train.loss=emo", "train.loss_impl=chunked"]), "fp16")
    with pytest.raises(ValueError, match="precision fp16"):
        build_objective(forced, model)



def test_explicit_chunked_loss_under_fp16_is_refused_at_load():
    with pytest.raises(ConfigError, match="not exact under train.precision=fp16"):
        load_config(None, ["ray.use_gpu=true", "train.precision=fp16", "train.loss_impl=chunked"])
    assert load_config(None, ["ray.use_gpu=true", "train.precision=fp16", "train.loss_impl=auto"]).train.loss_impl == "auto"
