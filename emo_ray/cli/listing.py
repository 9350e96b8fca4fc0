"""The commands that only print: show-config (the resolved config) and ls (what is registered)."""
from __future__ import annotations

from emo_ray.cli.common import UsageError, guess_kind, load, split_overrides


def cmd_show_config(args) -> int:
    from emo_ray import typed_config

    config, overrides = split_overrides(args.config, args.overrides)
    kind = args.kind or (guess_kind(config) if config else "train")
    if kind == "corpus":
        from emo_ray.config import ConfigError
        from emo_ray.evaluation.corpora import CorpusError, load_corpus_file

        if overrides:
            raise UsageError(f"{config} is a corpus definition; it takes no key=value overrides")
        try:
            print(typed_config.to_yaml(load_corpus_file(config)), end="")
        except CorpusError as e:
            raise ConfigError(str(e)) from None
        return 0
    print(typed_config.to_yaml(load(kind, config, overrides, preflight=False)), end="")
    return 0


LISTINGS = ("losses", "sweeps", "configs", "tasks", "corpora", "models")


def cmd_ls(args) -> int:
    for what in [args.what] if args.what else LISTINGS:
        if not args.what:
            print(f"{what}:")
        for line in _LIST[what]():
            print(f"  {line}" if not args.what else line)
    return 0


def _ls_losses() -> list[str]:
    from emo_ray.losses import LOSSES, has_chunked_form, hparam_ranges, hyperparameters

    width = max(map(len, LOSSES))
    out = []
    for name, spec in LOSSES.items():
        ranges = hparam_ranges(name)
        hp = ", ".join(f"{k}={v!r}" + (f" in {ranges[k]}" if k in ranges else "")
                       for k, v in hyperparameters(name).items()) or "-"
        pinned = f"   pinned: {spec.pinned}" if spec.pinned else ""
        chunked = "" if has_chunked_form(name) else "   (materialised only)"
        out.append(f"{name:{width}s}  {hp}{pinned}{chunked}")
    return out


def _ls_sweeps() -> list[str]:
    from emo_ray.sweep.spec import SWEEP_CONFIG_DIR, list_sweeps
    from emo_ray.typed_config import REPO_ROOT, read_yaml

    out = []
    for name in list_sweeps():
        path = SWEEP_CONFIG_DIR / f"{name}.yaml"
        grid = read_yaml(path).get("grid", {})
        models = ",".join(grid.get("models", []))
        out.append(f"{name:10s} {path.relative_to(REPO_ROOT)}  models={models} objectives={','.join(grid.get('objectives', {}))}")
    return out


def _ls_configs() -> list[str]:
    from emo_ray.typed_config import REPO_ROOT

    out = []
    for path in sorted((REPO_ROOT / "configs").rglob("*.yaml")):
        first = next((ln.lstrip("# ").strip() for ln in path.read_text().splitlines() if ln.startswith("#")), "")
        out.append(f"{str(path.relative_to(REPO_ROOT)):38s} {guess_kind(str(path)):13s}  {first}")
    return out


def _ls_tasks() -> list[str]:
    from emo_ray.evaluation.icl.tasks import load_task, task_names

    return [f"{name:16s} {load_task(name).train}" for name in task_names()]


def _ls_corpora() -> list[str]:
    from emo_ray.evaluation.corpora import CORPORA

    return [f"{name:14s} {c.source}" for name, c in CORPORA.items()]


def _ls_models() -> list[str]:
    from emo_ray.models import MODELS
    from emo_ray.report.figure import human

    return [f"{name:14s} {e.source:12s} {human(e.n_params):>6s}  {e.ref}" + (f"   ({e.pip})" if e.pip else "")
            for name, e in MODELS.items()]


_LIST = {"losses": _ls_losses, "sweeps": _ls_sweeps, "configs": _ls_configs, "tasks": _ls_tasks,
         "corpora": _ls_corpora, "models": _ls_models}
