"""LoRA through peft (emo_ray/train/lora.py) on the tiny model, without Ray or DeepSpeed: what
trains, what the merge computes, what the export writes, and the config errors."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from emo_ray.config import ConfigError, LoraConfig, load_config
from emo_ray.losses import LOSSES, has_chunked_form
from emo_ray.train.lora import (ADAPTER_DIR, apply_lora, export_merged, lora_layers, merge_in_place,
                                trainable_parameters)
from emo_ray.train.objective import build_objective

LORA = LoraConfig(rank=4, alpha=8.0, dropout=0.0, target_modules=("q_proj", "v_proj", "down_proj"))


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    from emo_ray.models.tiny import build_tiny

    return build_tiny(tmp_path_factory.mktemp("tiny"), hidden_size=32)


def load(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def cfg_with(*overrides):
    return load_config(None, ["train.lora.rank=4", "train.lora.alpha=8", "train.lora.dropout=0", *overrides])


def batch(seed=0, b=2, t=24):
    return torch.randint(0, 257, (b, t), generator=torch.Generator().manual_seed(seed))


def randomize_b(model, seed=1):
    """peft initialises B = 0 (the adapted model starts as the base); give B values so that the
    merge has something to add."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            w = layer.lora_B["default"].weight
            w.copy_(torch.randn(w.shape, generator=g) * 0.1)


def test_rank_zero_is_full_fine_tuning(tiny_path):
    model = load(tiny_path)
    assert apply_lora(model, LoraConfig()) is model
    assert all(p.requires_grad for p in model.parameters()) and not lora_layers(model)


@pytest.mark.parametrize("loss", list(LOSSES))
@pytest.mark.parametrize("impl", ["chunked", "reference"])
def test_only_adapter_weights_train(tiny_path, loss, impl):
    if impl == "chunked" and not has_chunked_form(loss):
        pytest.skip(f"{loss} has no chunked form")
    cfg = cfg_with(f"train.loss={loss}", f"train.loss_impl={impl}")
    model = apply_lora(load(tiny_path), cfg.train.lora)
    base = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    adapters = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert adapters and all(".lora_" in n for n in adapters)
    objective = build_objective(cfg, model)
    assert objective.chunked == (impl == "chunked")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for step in range(2):
        out = objective.compute(model, batch(step))
        assert torch.isfinite(out.loss)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
    after = dict(model.named_parameters())
    assert all(torch.equal(after[n], v) for n, v in base.items())  # bitwise
    # B starts at 0, so after the first step both A (second step) and B have moved
    assert all(not torch.equal(after[n], v) for n, v in adapters.items()), loss


def test_emo_loss_decreases_with_lora(tiny_path):
    cfg = cfg_with("train.loss=emo", "train.lora.rank=8", "train.lora.alpha=16")
    torch.manual_seed(0)
    model = apply_lora(load(tiny_path), cfg.train.lora)
    objective = build_objective(cfg, model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-2)
    ids = batch(0, b=4, t=32)
    losses = []
    for _ in range(15):
        out = objective.compute(model, ids)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(out.loss.item())
    assert losses[-1] < losses[0] - 0.02, losses
    assert min(losses[-3:]) < min(losses[:3])


def test_merge_is_base_plus_scaled_ba_and_keeps_logits(tiny_path, tmp_path):
    from peft import PeftModel

    model = apply_lora(load(tiny_path), LORA)
    randomize_b(model)
    model.eval()
    ids = batch(3)
    with torch.no_grad():
        peft_logits = model(input_ids=ids).logits
    expected = {}
    for name, layer in lora_layers(model).items():
        a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
        expected[f"{name}.weight"] = layer.get_base_layer().weight.detach() + (b @ a).detach() * (LORA.alpha / LORA.rank)
    assert len(expected) == 3 * 2  # 3 targets x 2 layers
    n_trainable = trainable_parameters(model)
    # A is (r, in), B is (out, r) per adapted layer
    want_trainable = sum(LORA.rank * (l.in_features + l.out_features) for l in lora_layers(model).values())

    export_merged(model, LORA, tmp_path / "hf", str(tiny_path))
    model.save_pretrained(tmp_path / "hf")
    assert not lora_layers(model)
    merged = load(tmp_path / "hf")  # a plain Hugging Face folder
    state = merged.state_dict()
    assert set(state) == set(load(tiny_path).state_dict())
    for key, want in expected.items():
        torch.testing.assert_close(state[key], want, rtol=0, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, peft_logits, rtol=1e-5, atol=1e-5)
    # the adapter alone loads with peft onto the base and gives the same logits
    reloaded = PeftModel.from_pretrained(load(tiny_path), tmp_path / "hf" / ADAPTER_DIR).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, peft_logits, rtol=1e-5, atol=1e-5)
    import json

    info = json.loads((tmp_path / "hf" / ADAPTER_DIR / "emo_ray_lora.json").read_text())
    assert info["rank"] == 4 and info["target_modules"] == list(LORA.target_modules)
    assert info["trainable_params"] == n_trainable == want_trainable


def test_fixed_cost_embedding_is_the_base_head(tiny_path, monkeypatch):
    base_head = load(tiny_path).lm_head.weight.detach().clone()
    cfg = cfg_with("train.loss=emo", "train.lora.target_modules=[q_proj, v_proj, o_proj, up_proj]")
    model = apply_lora(load(tiny_path), cfg.train.lora)
    assert type(model.get_output_embeddings()) is torch.nn.Linear and not model.lm_head.weight.requires_grad
    captured = {}
    import emo_ray.train.objective as objective_mod

    real = objective_mod.fixed_cost_embedding
    monkeypatch.setattr(objective_mod, "fixed_cost_embedding", lambda m: captured.setdefault("e", real(m)))
    build_objective(cfg, model)
    assert torch.equal(captured["e"], base_head)


def test_gradient_checkpointing_still_trains_adapters(tiny_path):
    model = load(tiny_path)
    model.gradient_checkpointing_enable()
    model = apply_lora(model, LORA)
    model.train()
    model(input_ids=batch(), labels=batch()).loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)


def test_merge_in_place_without_adapters_is_identity(tiny_path):
    model = load(tiny_path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    merge_in_place(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("override,match", [
    ("train.lora.rank=-1", "train.lora.rank must be >= 0"),
    ("train.lora.dropout=1.0", "train.lora.dropout"),
    ("train.lora.alpha=0", "train.lora.alpha"),
    ("train.lora.target_modules=[]", "at least one module"),
    ("train.zero_stage=3", "ZeRO-3"),
])
def test_config_errors(override, match):
    with pytest.raises(ConfigError, match=match):
        cfg_with(override)


def test_lora_off_accepts_zero3():
    assert load_config(None, ["train.zero_stage=3"]).train.lora.rank == 0


@pytest.mark.parametrize("targets,match", [
    (("q_proj", "qkv_proj"), r"\['qkv_proj'\] not found in LlamaForCausalLM; its linear layers are \[.*'q_proj'"),
    (("lm_head",), "output head"),
])
def test_unknown_or_head_target_is_a_clear_error_at_load(tiny_path, targets, match):
    with pytest.raises(ConfigError, match=match):
        apply_lora(load(tiny_path), dataclasses.replace(LORA, target_modules=targets))
