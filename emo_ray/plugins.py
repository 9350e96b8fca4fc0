"""Plugins: the user's own Python (a module name or a ``.py`` file, the ``plugins`` field of a
training or sweep config), imported before the config is checked, in the driver and in every Ray
worker, so that an objective it registers (``LOSSES["name"] = LossSpec(fn)``) is known by name."""
from __future__ import annotations

from pathlib import Path

from emo_ray.typed_config import ConfigError, expand_path


def import_plugins(names) -> None:
    """Import each plugin once (a module name, or a path to a ``.py`` file)."""
    import hashlib
    import importlib
    import importlib.util
    import sys

    if isinstance(names, str):
        names = (names,)
    for name in names:
        if not isinstance(name, str):
            raise ConfigError(f"plugins: expected module names or .py paths, got {name!r}")
        if name.endswith(".py"):
            path = Path(expand_path(name)).resolve()
            mod_name = f"emo_ray_plugin_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
            if mod_name in sys.modules:
                continue
            if not path.exists():
                raise ConfigError(f"plugins: {path} does not exist")
            spec = importlib.util.spec_from_file_location(mod_name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module
            spec.loader.exec_module(module)
        else:
            try:
                importlib.import_module(name)
            except ImportError as e:
                raise ConfigError(f"plugins: cannot import {name!r} ({e})") from None
