"""Parameter count of a model, from its config alone: the model is built on PyTorch's ``meta``
device (shapes, no storage), so counting SmolLM2 or LLaMA-13B costs milliseconds and no memory."""
from __future__ import annotations


def count_parameters(model_path: str) -> int:
    """Distinct parameters of the causal LM at ``model_path`` (a folder or hub id with a
    ``config.json``); tied weights (input embedding = output head) count once."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())  # parameters() yields a tied tensor once
