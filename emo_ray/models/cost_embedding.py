"""The cost embedding E of EMO (paper Sec. 3.3, 4.2.1): rows of the output head.

``fixed``: a frozen copy of the pre-trained head taken once before training.
``adaptive``: the live head at every step (detached by the loss).
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch

COST_EMBEDDINGS = ("fixed", "adaptive")


def head_weight(model) -> torch.nn.Parameter:
    head = model.get_output_embeddings()
    if head is None:
        raise ValueError(f"{type(model).__name__} has no output embeddings to take a cost embedding from")
    return head.weight


@contextlib.contextmanager
def gathered(param: torch.nn.Parameter):
    """Under ZeRO-3 a parameter reads as shape (0,) outside its module's forward: gather it."""
    if hasattr(param, "ds_id"):
        import deepspeed

        with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
            yield param
    else:
        yield param


def fixed_cost_embedding(model) -> torch.Tensor:
    """A detached copy of the head weight, gathered if ZeRO-3 partitioned it."""
    weight = head_weight(model)
    with gathered(weight):
        return weight.detach().clone()


def head_vocab_size(model_path: str) -> int | None:
    """The vocabulary size a model folder / hub id declares (its config's ``vocab_size``)."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(model_path)
    return getattr(cfg, "vocab_size", None) or getattr(cfg.get_text_config(), "vocab_size", None)


def _head_tensor_names(model_path: str) -> list[str]:
    """Names under which the model's output head weight may be stored: its own, and those of
    every parameter it is tied to (a tied checkpoint stores only the input embedding). Built on
    the meta device: nothing is allocated."""
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_path))
    weight = head_weight(model)
    return [n for n, p in model.named_parameters(remove_duplicate=False) if p is weight]


def _read_safetensors_head(model_path: str) -> torch.Tensor | None:
    """The head weight read alone from a local safetensors folder (a 13B model's head is 0.3 GB
    of its 26), or None when the folder has no safetensors files holding it."""
    from safetensors import safe_open

    folder = Path(model_path)
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    if not files:
        return None
    names = _head_tensor_names(model_path)
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            keys = set(st.keys())
            for n in names:
                if n in keys:
                    return st.get_tensor(n)
    return None


def load_other_head(model_path: str, *, vocab_size: int, dtype: torch.dtype, device="cpu") -> torch.Tensor:
    """``train.cost_embedding_model``: the output head ``(V, d_other)`` of another model, frozen,
    as the fixed cost embedding (the official continual fine-tuning reads LLaMA-2-13B's head
    while training smaller LLaMAs). Only its vocabulary must match: the cost is a cosine within
    the other model's embedding space (paper Sec. 3.3), whatever its hidden size.

    ``dtype``: the trained model's head dtype, what ``fixed_cost_embedding`` would give; the
    losses normalise it in at least fp32 (``normalize_cost_embedding``, the chunked path)."""
    other = head_vocab_size(model_path)
    if other != vocab_size:
        raise ValueError(f"train.cost_embedding_model {model_path!r} has vocab_size={other}, the trained model "
                         f"{vocab_size}: the cost embedding needs one row per token of the trained model")
    weight = _read_safetensors_head(model_path)
    if weight is None:  # hub id, .bin checkpoint...: load the whole model once
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
        weight = head_weight(model).detach().clone()
        del model
    if weight.dim() != 2 or weight.shape[0] != vocab_size:
        raise ValueError(f"train.cost_embedding_model {model_path!r}: head weight of shape {tuple(weight.shape)}, "
                         f"expected ({vocab_size}, d)")
    return weight.to(device=device, dtype=dtype).requires_grad_(False)


def _cost_head_folder(repo_id: str) -> Path:
    from emo_ray.models.loading import cache_dir

    return cache_dir() / "cost_heads" / repo_id.replace("/", "--")


def _head_shard(repo_id: str, folder: Path, download) -> str:
    """The safetensors file holding the head: the one the index's weight_map names for it, or
    the single ``model.safetensors`` of an unsharded repo."""
    from huggingface_hub.errors import RemoteEntryNotFoundError

    try:
        index = json.loads(Path(download("model.safetensors.index.json")).read_text())
    except RemoteEntryNotFoundError:
        return "model.safetensors"
    names = _head_tensor_names(str(folder))
    shard = next((index["weight_map"][n] for n in names if n in index.get("weight_map", {})), None)
    if shard is None:
        raise FileNotFoundError(f"{repo_id}: model.safetensors.index.json names no shard for the head ({names})")
    return shard


def fetch_cost_head(repo_id: str) -> str:
    """Download only ``config.json`` and the one safetensors shard holding the output head of hub
    model ``repo_id`` into the shared model cache, once (the driver does it; workers read the
    local folder with ``load_other_head``). LLaMA-2-13B's head is one 0.3 GB shard of 26 GB: a
    worker loading the whole model on CPU to read it cost minutes and 52 GB of host memory each.
    Gated or unknown repos give one FileNotFoundError naming the token file."""
    from filelock import FileLock
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    folder = _cost_head_folder(repo_id)
    done = folder / ".complete"
    if done.exists():
        return str(folder)
    folder.mkdir(parents=True, exist_ok=True)

    def download(filename: str) -> str:
        return hf_hub_download(repo_id, filename, local_dir=folder)

    with FileLock(str(folder) + ".lock"):
        try:
            download("config.json")
            download(_head_shard(repo_id, folder, download))
        except GatedRepoError:
            raise FileNotFoundError(
                f"{repo_id} is gated on the Hugging Face hub: accept its licence there, then put an access "
                f"token in {constants.HF_TOKEN_PATH} (chmod 600) or HF_TOKEN on the node that runs the driver "
                f"(docs/cluster.md, 'Gated cost models')") from None
        except RepositoryNotFoundError:
            raise FileNotFoundError(
                f"{repo_id}: no such model on the Hugging Face hub, or a private one and no valid token in "
                f"{constants.HF_TOKEN_PATH} / HF_TOKEN (docs/cluster.md, 'Gated cost models')") from None
        done.touch()
    return str(folder)
