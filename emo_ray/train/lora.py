"""LoRA continual fine-tuning through peft (issue 14): wrap a loaded model, merge, export.

The adapters are injected in place (``peft.inject_adapter_in_model``), so the model DeepSpeed
trains is still the Hugging Face ``...ForCausalLM``: the objective's chunked path
(``module.base_model`` for the hidden states, ``get_output_embeddings`` for the head), the
validation forward and the export code see the same module tree as without LoRA; only the
targeted ``nn.Linear`` layers become ``peft.tuners.lora.Linear`` (``W x + (alpha/r) B A x``,
Hu et al. 2021, eq. 3). The base weights are frozen (``requires_grad=False``) by peft, so the
optimizer (``deepspeed.initialize(model_parameters=trainable)``) gets the adapters only.

The output head is never a target: EMO's cost embedding (paper Sec. 4.2.1) and the chunked loss
read the head weight itself. The head therefore stays the frozen pre-trained head, and
``train.cost_embedding=adaptive`` equals ``fixed`` under LoRA (the live head never moves).

Export (``export_merged``): the run's model is the MERGED model (``W + (alpha/r) B A`` per
target, a plain Hugging Face folder that evaluation and sweeps load unchanged) plus the adapter
alone in ``adapter/`` (``PeftModel.from_pretrained(base, "<export>/adapter")`` loads it, as the
official DRSY/EMO ``continual_finetuning/merge_lora.py`` does before merging).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from emo_ray.config import ConfigError, LoraConfig

ADAPTER_DIR = "adapter"
"""Subfolder of the exported model holding the adapter alone (peft layout)."""

# Never LoRA targets: the cost embedding / chunked loss read the head weight directly, and
# embeddings are not nn.Linear.
_FORBIDDEN = frozenset({"lm_head", "embed_tokens", "embed_out", "wte"})


def linear_module_names(model: torch.nn.Module) -> set[str]:
    """Last name components of the model's ``nn.Linear`` layers, e.g. ``{"q_proj", "lm_head"}``."""
    return {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


def check_targets(model: torch.nn.Module, targets: tuple[str, ...]) -> None:
    """``ConfigError`` naming the valid choices if a target is not a linear layer of this model
    (or is the output head)."""
    head = model.get_output_embeddings()
    head_names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if m is head}
    valid = sorted(linear_module_names(model) - head_names - _FORBIDDEN)
    bad = [t for t in targets if t in head_names | _FORBIDDEN]
    if bad:
        raise ConfigError(f"train.lora.target_modules: {bad} is the output head/embedding, which EMO's cost "
                          f"embedding and the chunked loss read directly; choose among {valid}")
    unknown = [t for t in targets if t not in valid]
    if unknown:
        raise ConfigError(f"train.lora.target_modules: {unknown} not found in {type(model).__name__}; "
                          f"its linear layers are {valid}")


def peft_config(lora: LoraConfig):
    """The ``peft.LoraConfig`` of our typed ``train.lora`` section."""
    import peft

    return peft.LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                           target_modules=list(lora.target_modules), bias="none", task_type="CAUSAL_LM")


def apply_lora(model: torch.nn.Module, lora: LoraConfig) -> torch.nn.Module:
    """``model`` with LoRA adapters injected in place (rank > 0), only adapters trainable;
    ``model`` unchanged when ``lora.rank == 0``. Call after loading, before DeepSpeed."""
    if lora.rank == 0:
        return model
    import peft

    check_targets(model, lora.target_modules)
    model = peft.inject_adapter_in_model(peft_config(lora), model)
    if getattr(model, "is_activation_checkpointing", False):
        # frozen embeddings: checkpointed blocks would otherwise see inputs without grad and
        # give the adapters no gradient (transformers' documented fix for PEFT + checkpointing)
        model.enable_input_require_grads()
    return model


def trainable_parameters(model: torch.nn.Module) -> int:
    return sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters() if p.requires_grad)


def lora_layers(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """Qualified name -> peft LoRA layer, for every adapted module."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return {n: m for n, m in model.named_modules() if isinstance(m, BaseTunerLayer)}


def adapter_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The adapter weights under the key names ``PeftModel.save_pretrained`` writes
    (``base_model.model.<module>.lora_A.weight``), so ``PeftModel.from_pretrained`` loads them."""
    from peft import get_peft_model_state_dict

    return {f"base_model.model.{k}": v.detach().cpu().contiguous()
            for k, v in get_peft_model_state_dict(model).items()}


def save_adapter(model: torch.nn.Module, lora: LoraConfig, folder: Path, base_model: str) -> None:
    """The adapter alone in peft's layout (``adapter_config.json`` + ``adapter_model.safetensors``)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    cfg = peft_config(lora)
    cfg.base_model_name_or_path = base_model
    cfg.save_pretrained(str(folder))
    save_file(adapter_state_dict(model), str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})


@torch.no_grad()
def merge_in_place(model: torch.nn.Module) -> torch.nn.Module:
    """Fold every adapter into its base weight (``W <- W + (alpha/r) B A``, peft's
    ``lora.Linear.merge``) and put the plain base layer back: a plain Hugging Face model again.
    Mutates ``model`` (no second copy of the weights): call it on the last use of the module."""
    for name, layer in lora_layers(model).items():
        layer.merge()
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, layer.get_base_layer())
    for attr in ("peft_config",):  # set by peft on injection; a merged model is no peft model
        if attr in vars(model):
            delattr(model, attr)
    return model


def export_merged(module: torch.nn.Module, lora: LoraConfig, out: Path, base_model: str) -> None:
    """Rank 0's export under LoRA: ``out/adapter`` (the adapter alone), then merge in place so the
    caller's ``module.save_pretrained(out)`` writes the merged plain model. Records the LoRA
    settings next to it (``out/adapter/emo_ray_lora.json``) for people reading the folder."""
    save_adapter(module, lora, out / ADAPTER_DIR, base_model)
    (out / ADAPTER_DIR / "emo_ray_lora.json").write_text(json.dumps(
        {"rank": lora.rank, "alpha": lora.alpha, "dropout": lora.dropout,
         "target_modules": list(lora.target_modules), "trainable_params": trainable_parameters(module)}, indent=1))
    merge_in_place(module)
