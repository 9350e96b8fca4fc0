"""``emo-ray``: one grammar for every subcommand, field docs in --help, one-line errors (exit 2)
before anything starts."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from emo_ray.cli import main

ROOT = Path(__file__).resolve().parent.parent

# (subcommand and config, bad key, bad type, out of range)
CASES = {
    "train": (["train", "configs/tiny_smoke.yaml"], "train.lrr=1", "train.max_steps=ten", "train.loss_kwargs={gamma: 1.5}"),
    "eval": (["eval", "configs/eval/quick.yaml"], "icl.num_itemz=3", "icl.num_items=x", "icl.num_items=-3"),
    "sweep": (["sweep", "cpu-small"], "grid.seedz=[1]", "grid.data_tokens=[2k]", "grid.objectives={mixce: [{gamma: -5}]}"),
    "show-config": (["show-config", "configs/tiny_smoke.yaml"], "data.blok_size=3", "data.block_size=[1]",
                    "data.validation_fraction=1.5"),
}
EXPECT = {0: "unknown key", 1: "expected", 2: "must"}


@pytest.mark.parametrize("cmd", sorted(CASES))
@pytest.mark.parametrize("which", [0, 1, 2], ids=["bad-key", "bad-type", "out-of-range"])
def test_every_subcommand_answers_a_config_error_in_one_line_with_exit_2(cmd, which, tmp_path, monkeypatch, capsys):
    argv, *bad = CASES[cmd]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    argv = [a if not a.startswith("configs/") else str(ROOT / a) for a in argv]
    if cmd == "train" and which == 2:
        bad[2] = "train.loss=tailr"  # the range check belongs to the objective's hyperparameters
        argv = [*argv, "train.loss_kwargs={gamma: 1.5}"]
    assert main([*argv, bad[which]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"emo-ray {cmd}: config error:"), err
    assert EXPECT[which] in err[0] or "must lie" in err[0] or "[0, 1]" in err[0], err
    assert not any(tmp_path.iterdir()), "nothing may be written before the config is valid"


def test_the_errors_name_the_key_and_the_valid_choices(capsys):
    assert main(["train", str(ROOT / "configs/tiny_smoke.yaml"), "train.cost_embedding=learned"]) == 2
    assert "train.cost_embedding: 'learned' is not one of ['fixed', 'adaptive']" in capsys.readouterr().err
    assert main(["train", str(ROOT / "configs/tiny_smoke.yaml"), "train.loss=mixce", "train.loss_kwargs={gamma: -5}"]) == 2
    assert "loss 'mixce': gamma must lie in [0, 1], got -5" in capsys.readouterr().err
    assert main(["sweep", "gpu-huge"]) == 2
    assert "['cluster-smoke', 'cpu', 'cpu-small', 'figure1-cpu', 'paper', 'table1', 'table1-cpu', 'table3']" in capsys.readouterr().err


def test_help_lists_every_field_with_its_default_and_doc(capsys):
    from emo_ray.config import Config
    from emo_ray.cli.help import describe_fields

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for key, default, _ in describe_fields(Config()):
        assert f"  {key} = {default}" in out
    assert "train.final_checkpoint = full" in out and "about 4x smaller" in out  # a field's doc
    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    out = capsys.readouterr().out
    assert "grid.objectives = " in out and "hyperparameter sets" in out


def test_version_and_listings(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("emo-ray 0.")
    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    for section, item in [("losses:", "emo_mode2"), ("sweeps:", "cpu-small"), ("configs:", "configs/tiny_smoke.yaml"),
                          ("tasks:", "rotten_tomatoes"), ("corpora:", "webtext"), ("models:", "smollm2-135m")]:
        assert section in out and item in out
    assert main(["ls", "tasks"]) == 0 and "sst2" in capsys.readouterr().out


def test_show_config_guesses_the_kind(capsys):
    assert main(["show-config", "cpu-small", "grid.seeds=[3]"]) == 0
    assert "seeds:\n  - 3" in capsys.readouterr().out
    assert main(["show-config", str(ROOT / "configs/eval/quick.yaml")]) == 0
    assert "icl:" in capsys.readouterr().out
    corpus = str(ROOT / "configs/oracle/cpu_test_corpus.yaml")
    assert main(["show-config", corpus]) == 0
    assert "prefix_tokens: 16" in capsys.readouterr().out
    assert main(["show-config", corpus, "gen_tokens=3"]) == 2
    assert "corpus definition; it takes no key=value overrides" in capsys.readouterr().err


def test_ls_configs_names_each_kind(capsys):
    assert main(["ls", "configs"]) == 0
    kinds = {ln.split()[0]: ln.split()[1] for ln in capsys.readouterr().out.splitlines()}
    assert kinds["configs/oracle/cpu_test_corpus.yaml"] == "corpus"
    assert kinds["configs/oracle/cpu_sample.yaml"] == "sample-corpus"
    assert kinds["configs/sweeps/table1-cpu.yaml"] == "sweep"
    assert kinds["configs/eval/table1_cpu.yaml"] == "eval"
    assert kinds["configs/tiny_smoke.yaml"] == "train"


def test_entry_scripts_are_thin_wrappers_without_path_hacks(tmp_path):
    for script in ("sweeps/scaling_law.py", "evals/evaluate.py"):
        assert "sys.path" not in (ROOT / script).read_text()
    out = subprocess.run([sys.executable, str(ROOT / "sweeps/scaling_law.py"), "cpu-small", "--dry-run"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "sweep 'cpu-small': 4 trials" in out.stdout and not any(tmp_path.iterdir())


def test_aggregate_of_an_unknown_run_is_one_line_exit_2(tmp_path, capsys):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()  # an existing store (a missing one: tests/reliability/test_early_checks.py)
    capsys.readouterr()  # MLflow's own log lines of the store's creation
    assert main(["aggregate", "0123456789abcdef", "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("emo-ray aggregate: error: run '0123456789abcdef'"), err


def test_a_diverged_run_is_one_line_exit_3(monkeypatch, capsys):
    """The worker's TrainingDiverged reaches the driver inside Ray's error text."""
    import emo_ray.train

    def fit(cfg):
        try:
            raise RuntimeError("worker rank 0 failed:\nTraceback ...\nemo_ray.train.worker.TrainingDiverged: "
                               "TrainingDiverged: non-finite loss (nan) at step 3")
        except RuntimeError as inner:
            raise RuntimeError("Training failed due to worker errors") from inner

    monkeypatch.setattr(emo_ray.train, "fit", fit)
    assert main(["train", str(ROOT / "configs/tiny_smoke.yaml")]) == 3
    assert capsys.readouterr().err.strip() == "emo-ray train: TrainingDiverged: non-finite loss (nan) at step 3"
