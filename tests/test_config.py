from pathlib import Path

import pytest

from emo_ray.config import ConfigError, from_flat, load_config, to_flat
from emo_ray.typed_config import expand_path

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load_and_round_trip(path):
    cfg = load_config(path)
    assert from_flat(to_flat(cfg)) == cfg


def test_overrides_are_typed_yaml():
    cfg = load_config(None, ["train.loss=mixce", "train.loss_kwargs={gamma: 0.1}", "train.lr=3e-4", "ray.use_gpu=true",
                             "train.precision=bf16"])
    assert cfg.train.loss == "mixce" and cfg.train.loss_kwargs == {"gamma": 0.1}
    assert cfg.train.lr == pytest.approx(3e-4) and cfg.ray.use_gpu is True


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["train.los=emo"], r"unknown key\(s\) \['los'\].*'loss'"),
        (["trian.loss=emo"], r"unknown key\(s\) \['trian'\].*'train'"),
        (["train.max_steps=ten"], "train.max_steps: expected an integer"),
        (["train.max_steps=true"], "expected an integer"),
        (["train.cost_embedding=learned"], r"not one of \['fixed', 'adaptive'\]"),
        (["train.loss=emd"], "not a supported loss"),
        (["train.loss=tailr", "train.loss_kwargs={gama: 1}"], "takes no hyperparameter 'gama'"),
        (["train.zero_stage=4"], "zero_stage must be 0-3"),
        (["train.precision=fp16"], "needs ray.use_gpu"),
        (["train.max_steps=0"], "max_steps must be positive"),
        (["train"], "not key=value"),
        (["train.loss=tailr", "train.loss_kwargs={gamma: 1.5}"], r"gamma must lie in \[0, 1\], got 1.5"),
        (["train.log_every=0"], "log_every must be at least 1"),
        (["train.keep_checkpoints=0"], "keep_checkpoints must be at least 1"),
        (["train.seed=-1"], "train.seed must be >= 0"),
        (["train.betas=[0.9]"], "betas must be two numbers"),
        (["train.betas=[0.9, x]"], r"train.betas\[1\]: expected a number"),
        (["train.lr=.inf"], "train.lr must be a finite positive number"),
        (["train.loss_kwargs={gamma: 0.5"], "is not a YAML value"),
        (["plugins=[no_such_module_x]"], "cannot import 'no_such_module_x'"),
    ],
)
def test_bad_configs_fail_early_and_say_why(overrides, message):
    with pytest.raises((ConfigError, ValueError), match=message):
        load_config(None, overrides)


def test_missing_config_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("nope.yaml")


def test_data_dir_expansion(monkeypatch):
    monkeypatch.setenv("EMO_RAY_DATA", "/somewhere")
    assert expand_path("${EMO_RAY_DATA}/wikitext-2") == "/somewhere/wikitext-2"
    with pytest.raises(ConfigError, match="unset environment variable"):
        expand_path("${NOT_SET_ANYWHERE_X}/a")


def test_a_partly_given_section_keeps_the_rest_of_its_parents_default():
    """The evaluation config's tracking section defaults to its own experiment; naming only the run
    keeps it (the section is one class shared by training, evaluation and sweeps)."""
    from emo_ray.evaluation.config import load_eval_config

    assert load_eval_config(None, ["tracking.run_name=x"]).tracking.experiment == "emo-ray-eval"
    assert load_config(None, ["tracking.run_name=x"]).tracking.experiment == "emo-ray"


def test_a_plugin_file_registers_an_objective_usable_by_name(tmp_path, restore_registry):
    plugin = tmp_path / "my_loss.py"
    plugin.write_text(
        "from emo_ray.losses import LOSSES, LossSpec\n"
        "from emo_ray.losses.mle import mle_loss\n"
        "def my_loss(logits, labels, *, alpha: float = 1.0, ignore_index: int = -100):\n"
        "    return mle_loss(logits, labels, ignore_index=ignore_index)\n"
        "LOSSES.setdefault('my_plugin_loss', LossSpec(my_loss))\n")
    cfg = load_config(None, [f"plugins=[{plugin}]", "train.loss=my_plugin_loss", "train.loss_kwargs={alpha: 2.0}"])
    assert cfg.train.loss_kwargs == {"alpha": 2.0} and from_flat(to_flat(cfg)) == cfg
    with pytest.raises(ConfigError, match="takes no hyperparameter 'beta'"):
        load_config(None, [f"plugins=[{plugin}]", "train.loss=my_plugin_loss", "train.loss_kwargs={beta: 2.0}"])


def _bounded_fields(cls, prefix: str = ""):
    """``(dotted key, base type, Bounds)`` of every field whose type carries its valid range."""
    import dataclasses
    import typing

    from emo_ray.bounds import Bounds

    for name, tp in typing.get_type_hints(cls, include_extras=True).items():
        if dataclasses.is_dataclass(tp):
            yield from _bounded_fields(tp, f"{prefix}{name}.")
        elif typing.get_origin(tp) is typing.Annotated:
            base, *meta = typing.get_args(tp)
            yield from ((f"{prefix}{name}", base, m) for m in meta if isinstance(m, Bounds))


def _just_outside(base, b) -> list:
    """Values one step past each end of ``b`` (and, for a float, the non-finite ones)."""
    step = 1 if base is int else 0.5
    out = [b.ge - step if b.ge is not None else None, b.gt, b.le + step if b.le is not None else None, b.lt]
    return [v for v in out if v is not None] + ([float("inf"), float("nan")] if base is float else [])


def assert_bounds_enforced(key, base, bounds, defaults, load, error=ConfigError) -> None:
    """The default of ``key`` (read from ``defaults``) lies inside ``bounds``; each value just outside
    them, given to ``load(override)``, fails with one line naming the key path and the bound."""
    default = defaults
    for section in key.split("."):
        default = getattr(default, section)
    assert bounds.contains(default), f"{key}: its default {default!r} is outside its own bounds"
    for bad in _just_outside(base, bounds):
        with pytest.raises(error) as err:
            load(f"{key}={'.nan' if bad != bad else '.inf' if bad == float('inf') else bad}")
        msg = str(err.value)
        assert msg.startswith(f"config.{key} must {bounds.describe(base is int)}, got "), msg
        assert "\n" not in msg


BOUNDED = list(_bounded_fields(__import__("emo_ray.config", fromlist=["Config"]).Config))


def test_the_ranges_are_carried_by_the_types():
    """The range checks that restated each field's bounds by hand now live in the field types."""
    assert len(BOUNDED) >= 30
    assert {"train.lr", "train.zero_stage", "train.lora.dropout", "data.block_size", "ray.max_failures"} <= \
        {key for key, _, _ in BOUNDED}


@pytest.mark.parametrize("key, base, bounds", BOUNDED, ids=[key for key, _, _ in BOUNDED])
def test_a_value_out_of_range_names_the_field_and_the_bound(key, base, bounds):
    assert_bounds_enforced(key, base, bounds, load_config(None), lambda override: load_config(None, [override]))


@pytest.mark.parametrize(
    "override, message",
    [  # the wording users saw from the hand-written checks, kept
        ("train.zero_stage=4", "config.train.zero_stage must be 0-3, got 4"),
        ("train.max_steps=0", "config.train.max_steps must be positive, got 0"),
        ("train.lr=-1", "config.train.lr must be a finite positive number, got -1.0"),
        ("train.min_lr_ratio=1.5", r"config.train.min_lr_ratio must lie in \[0, 1\], got 1.5"),
        ("train.lora.dropout=1", r"config.train.lora.dropout must lie in \[0, 1\), got 1.0"),
        ("train.checkpoint_every=-1", r"config.train.checkpoint_every must be >= 0 \(0: only at the end\), got -1"),
        ("train.clip_grad_norm=.nan", r"config.train.clip_grad_norm must be finite and >= 0 \(0 disables\), got nan"),
        ("data.block_size=1", "config.data.block_size must be at least 2, got 1"),
        ("ray.max_failures=-2", r"config.ray.max_failures must be >= -1 \(-1: unlimited\), got -2"),
    ],
)
def test_range_errors_read_as_before(override, message):
    with pytest.raises(ConfigError, match=f"^{message}$"):
        load_config(None, [override])


def test_a_worker_rebuilding_the_config_checks_the_ranges_too():
    flat = to_flat(load_config(None))
    flat["train.max_steps"] = 0
    with pytest.raises(ConfigError, match="train.max_steps must be positive, got 0"):
        from_flat(flat)
