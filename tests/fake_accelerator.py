"""A fake CUDA device for CPU-only CI: catches the tensors a stage leaves on the wrong device.

``FakeCuda`` is a ``TorchFunctionMode``. Every tensor really lives in CPU memory (so every kernel
runs and every data-dependent step, ``.item()``, sampling, ``.tolist()``, works), but the mode
keeps a tag on the tensors that a real run would hold on the GPU and reports their device as
``cuda:0``. Code under test therefore sees what it would see on a GPU node: ``model.device`` is
``cuda:0``, ``actor_kwargs`` hands ``device="cuda"`` to a stage, ``model.to("cuda")`` works.

The rules are CUDA's, checked at every torch call the Python code makes:

* a tensor is on the device when it was created with ``device=cuda...`` (``torch.tensor``,
  ``zeros``, ``arange``, ``full``, ...), moved with ``.to(cuda)`` / ``.cuda()``, or computed from
  a tensor on the device; ``.cpu()`` / ``.to("cpu")`` bring a copy back to the host;
* one call mixing a device tensor with a host tensor of one or more dimensions raises
  ``DeviceMismatch`` (CUDA: "Expected all tensors to be on the same device"). Host 0-dim tensors
  are allowed, as CUDA allows them as scalars; so are the cross-device copies CUDA allows
  (``copy_``, assigning into a slice, indexing a device tensor with host indices);
* ``.numpy()`` / ``np.asarray`` on a device tensor raises ``DeviceMismatch`` (CUDA: "can't
  convert cuda:0 device type tensor to numpy. Use Tensor.cpu()");
* a CPU ``torch.Generator`` driving a sampling op on a device tensor raises (CUDA: "Expected a
  'cuda' device type for generator").

What it cannot see: ops that C++ runs without returning to Python (autograd's backward kernels,
the insides of one aten op), so a wrong device *inside* a kernel is out of reach; none of the
project's code is there.
"""
from __future__ import annotations

import traceback

import torch
from torch.overrides import TorchFunctionMode

DEVICE = torch.device("cuda", 0)
TAG = "_emo_fake_cuda"


class DeviceMismatch(AssertionError):
    """A tensor met a tensor on another device, or a device tensor went to numpy."""


def on_device(t) -> bool:
    return isinstance(t, torch.Tensor) and t.__dict__.get(TAG, False)


def _tag(out):
    if isinstance(out, torch.Tensor):
        out.__dict__[TAG] = True
    elif isinstance(out, (list, tuple)):
        for o in out:
            _tag(o)
    return out


def _is_device(d) -> bool:
    if d is None or isinstance(d, torch.dtype):
        return False
    if isinstance(d, torch.Tensor):
        return on_device(d)
    if isinstance(d, int):
        return True  # an ordinal: a CUDA device
    try:
        return torch.device(d).type == "cuda"
    except (RuntimeError, TypeError):
        return False


def _as_device_arg(d):
    """Where a ``to``/factory argument points: 'cuda', 'cpu' or None (no device given)."""
    if d is None or isinstance(d, torch.dtype):
        return None
    if isinstance(d, torch.Tensor):
        return "cuda" if on_device(d) else "cpu"
    if isinstance(d, (str, torch.device, int)):
        return "cuda" if _is_device(d) else "cpu"
    return None


def _tensors(obj, out):
    if isinstance(obj, torch.Tensor):
        out.append(obj)
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            _tensors(o, out)
    elif isinstance(obj, dict):
        for o in obj.values():
            _tensors(o, out)
    return out


T = torch.Tensor
HOST_READS = {T.tolist, T.item, T.__int__, T.__float__, T.__bool__, T.__index__, T.__len__, T.__repr__,
              T.__format__, T.dim, T.numel, T.size, T.__hash__}
NUMPY = {T.numpy, T.__array__}
COPIES = {T.copy_}
INPLACE_DUNDERS = {"__iadd__", "__isub__", "__imul__", "__itruediv__", "__ifloordiv__", "__imod__",
                   "__ipow__", "__iand__", "__ior__", "__ixor__", "__ilshift__", "__irshift__"}
METADATA = {torch._has_compatible_shallow_copy_type}  # compares tensor types, touches no data


class FakeCuda(TorchFunctionMode):
    """``with FakeCuda() as dev:`` run a stage; ``dev.place(module)`` puts a built model on the
    device; ``dev.calls`` counts the torch calls that touched the device (proof the stage ran
    through the check)."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def place(self, module: torch.nn.Module) -> torch.nn.Module:
        for t in list(module.parameters()) + list(module.buffers()):
            _tag(t)
        return module

    def fail(self, message: str):
        stack = [f for f in traceback.extract_stack()[:-2] if "/emo_ray/" in f.filename or "/tests/" in f.filename]
        where = "".join(traceback.format_list(stack[-6:]))
        raise DeviceMismatch(f"{message}\n{where}")

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        # (property getters and setters arrive as method-wrappers, equal but not identical to
        # ``T.device.__get__``: compare them with ==)
        # --- what a tensor says about itself
        if func == T.device.__get__:
            return DEVICE if on_device(args[0]) else func(*args)
        if func == T.is_cuda.__get__:
            return on_device(args[0])
        if func == T.is_cpu.__get__:
            return not on_device(args[0])
        if func is T.get_device:
            return 0 if on_device(args[0]) else -1
        if func in NUMPY:
            if on_device(args[0]):
                self.fail(f"can't convert cuda:0 device type tensor to numpy ({func.__name__} on a device "
                          f"tensor of shape {tuple(args[0].shape)}). Use Tensor.cpu() first.")
            return func(*args, **kwargs)
        if func in HOST_READS or func in METADATA:
            return func(*args, **kwargs)
        # --- moves
        if func in (T.cpu, T.cuda):
            src = args[0]
            out = src.to("cpu", copy=True) if on_device(src) or func is T.cuda else src
            if func is T.cuda:
                self.calls += 1
                return _tag(out)
            return out
        if func is T.to:
            src, rest = args[0], list(args[1:])
            target = _as_device_arg(kwargs.get("device"))
            if target is None and rest:
                target = _as_device_arg(rest[0])
            if target is None:  # a dtype-only conversion stays where it is
                out = func(*args, **kwargs)
                return _tag(out) if on_device(src) else out
            if rest and _as_device_arg(rest[0]) is not None:
                other = rest.pop(0)
                if isinstance(other, torch.Tensor):
                    kwargs.setdefault("dtype", other.dtype)
            kwargs = {k: v for k, v in kwargs.items() if k != "device"}
            moved = on_device(src) != (target == "cuda")
            out = func(src, "cpu", *rest, **{**kwargs, "copy": kwargs.get("copy", False) or moved})
            if target == "cuda":
                self.calls += 1
                return _tag(out)
            return out
        if func == T.data.__set__:
            func(*args)
            if on_device(args[1]):
                _tag(args[0])
            else:
                args[0].__dict__.pop(TAG, None)
            return None
        # --- factories with an explicit device
        explicit = _as_device_arg(kwargs.get("device"))
        if explicit is not None:
            kwargs = {**kwargs, "device": "cpu"}
            out = func(*args, **kwargs)
            if explicit == "cuda":
                self.calls += 1
                return _tag(out)
            return out
        # --- everything else: one device per call
        tensors = _tensors(args, []) + _tensors(kwargs, [])
        dev = [t for t in tensors if on_device(t)]
        if not dev:
            return func(*args, **kwargs)
        self.calls += 1
        name = getattr(func, "__qualname__", getattr(func, "__name__", repr(func)))
        gen = kwargs.get("generator")
        if isinstance(gen, torch.Generator) and gen.device.type == "cpu":
            self.fail(f"{name}: a CPU torch.Generator drives a sampling op on a cuda:0 tensor")
        if func in COPIES:
            return _tag(func(*args, **kwargs)) if on_device(args[0]) else func(*args, **kwargs)
        if func in (T.__getitem__, T.__setitem__):
            self_, index = args[0], args[1]
            idx = _tensors(index, [])
            if not on_device(self_) and any(on_device(i) for i in idx):
                self.fail(f"{name}: a cpu tensor indexed with cuda:0 indices")
            if func is T.__setitem__:
                return func(*args, **kwargs)
            out = func(*args, **kwargs)
            return _tag(out) if on_device(self_) else out
        base = name.rsplit(".", 1)[-1]
        if base in INPLACE_DUNDERS or (base.endswith("_") and not base.endswith("__")):
            if isinstance(args[0], torch.Tensor) and not on_device(args[0]):
                self.fail(f"{name}: an in-place op on a cpu tensor with a cuda:0 operand")
        host = [t for t in tensors if not on_device(t) and t.dim() > 0]
        if host:
            shapes = ", ".join(f"{tuple(t.shape)}" for t in host[:3])
            self.fail(f"{name}: Expected all tensors to be on the same device, but found cuda:0 and cpu "
                      f"(host tensor(s) of shape {shapes})")
        return _tag(func(*args, **kwargs))
