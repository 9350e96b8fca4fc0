from pathlib import Path

import pytest

from emo_ray.config import ConfigError, expand_path, from_flat, load_config, to_flat

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
        (["train.precision=bf16"], "needs ray.use_gpu"),
        (["train.max_steps=0"], "max_steps must be positive"),
        (["train"], "not key=value"),
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
