"""The paper-protocol sweeps (docs/protocols.md) say what the paper and the official scripts did.

These read the YAML as data, so they hold whatever the loader's state; that every shipped sweep
config also *validates* (keys, trials, evaluation config) is tests/sweep/test_spec.py's job.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import yaml

from emo_ray.evaluation import load_eval_config
from emo_ray.evaluation.corpora import get_corpus
from emo_ray.losses import get_spec

ROOT = Path(__file__).resolve().parents[2]
TABLE4_DOMAINS = {"wikitext-2", "wikitext-103", "webtext", "ptb", "writingprompts", "ag_news"}


def raw(rel: str) -> dict:
    return yaml.safe_load((ROOT / rel).read_text())


def test_table1_is_gpt2_per_table4_domain_with_the_papers_grid():
    sweep = raw("configs/sweeps/table1.yaml")
    g = sweep["grid"]
    # [paper 4.1.1] the whole training split of every domain (its steps are per domain: epochs 0)
    assert g["models"] == ["gpt2"] and len(g["seeds"]) == 3 and g["data_tokens"] == ["all"] and sweep["epochs"] == 0
    assert set(g["domains"]) == TABLE4_DOMAINS
    for name, d in g["domains"].items():
        # each domain is evaluated on its own corpus, whose definition carries Table 4's lengths
        assert d["eval"]["generation"]["corpora"] == [name] and get_corpus(name).gen_tokens > 0
        assert d["train"]["data"]["train"]
    gammas = [{"gamma": 0.9}, {"gamma": 0.8}, {"gamma": 0.7}]
    assert g["objectives"] == {"mle": [{}], "tvd": gammas, "mixce": gammas, "emo": [{}]}


def test_table1_training_is_lr_5e_5_batch_32x256_and_validates_once_per_epoch():
    sweep, train = raw("configs/sweeps/table1.yaml"), raw("configs/table1_gpt2.yaml")
    t, d = train["train"], train["data"]
    per_step = t["micro_batch_size"] * t["grad_accum"] * train["ray"]["num_workers"]
    assert (t["lr"], per_step, d["block_size"]) == (5e-5, 32, 256)
    assert t["select_checkpoint"] == "best_val_loss"
    # [paper 4.1.1] 3 epochs, validated once per epoch, in every domain (and the config alone)
    for steps in [t] + [dom["train"]["train"] for dom in sweep["grid"]["domains"].values()]:
        assert steps["max_steps"] == 3 * steps["eval_every"]


def _comment_number(text: str, pattern: str) -> float:
    m = re.search(pattern, text)
    assert m, pattern
    return float(m.group(1).replace(",", "").replace("M", "e6"))


def test_table1_steps_per_epoch_follow_the_stated_split_sizes():
    text = (ROOT / "configs/sweeps/table1.yaml").read_text()
    domains = raw("configs/sweeps/table1.yaml")["grid"]["domains"]
    stated = dict(re.findall(r"#.*?~([\d.]+M) tokens.*?-> ([\d,]+) steps per epoch", text, flags=re.S))
    assert len(stated) == len(domains) - 1  # WebText's size is measured, stated differently
    for size, steps in stated.items():
        # steps per epoch: the split's 256-token blocks in batches of 32 (rounded as stated)
        assert abs(float(size[:-1]) * 1e6 / 8192 - int(steps.replace(",", ""))) / int(steps.replace(",", "")) < 0.01
        assert any(d["train"]["train"]["eval_every"] == int(steps.replace(",", "")) for d in domains.values())
    webtext = domains["webtext"]["train"]["train"]["eval_every"]
    assert webtext == int(_comment_number(text, r"~(\d+)k after the hold-out") * 1000 // 256 // 32)


def test_table1_eval_samples_five_times_per_prefix_with_gpt2_large_mauve():
    cfg = load_eval_config(ROOT / "configs/eval/table1.yaml")
    assert len(cfg.generation.seeds) == 5 and cfg.generation.decoders == ("ancestral",)
    assert cfg.mauve.featurizer == "gpt2-large" and not cfg.icl_enabled


@pytest.mark.parametrize("name", ["paper", "table3"])
def test_llama_sweeps_train_the_official_variants(name):
    sweep = raw(f"configs/sweeps/{name}.yaml")
    objectives = sweep["grid"]["objectives"]
    gammas = [{"gamma": 0.9}, {"gamma": 0.8}, {"gamma": 0.1}]
    assert objectives == {"mle": [{}], "tvd": gammas, "mixce": gammas, "emo_mode2_exclude_target": [{}]}
    # mode=emo2 of the official LLaMA scripts: mode 2, target excluded
    assert get_spec("emo_mode2_exclude_target").pinned == {"mode": 2, "level": "token", "ratio_cap": None,
                                                           "exclude_target": True}
    assert sweep["evaluate_pretrained"] is True and sweep["epochs"] == 1
    cfg = load_eval_config(ROOT / sweep["eval_config"])
    assert (cfg.icl.normalization, cfg.icl.wording, len(cfg.icl.tasks)) == ("openicl", "official", 8)


def test_continual_fine_tuning_volumes_are_the_papers():
    # [paper 4.2.1] 0.1B tokens of WikiText-103 (Table 3); [paper 4.2.3] Figure 1's data axis has
    # the text's 4M and 100M points
    assert raw("configs/sweeps/table3.yaml")["grid"]["data_tokens"] == [100_000_000]
    axis = raw("configs/sweeps/paper.yaml")["grid"]["data_tokens"]
    assert {4_000_000, 100_000_000} <= set(axis) and max(axis) == 100_000_000


@pytest.mark.parametrize("sweep_name,train_name", [("table3", "table3_llama_lora"), ("paper", "paper_cluster")])
def test_warmup_is_about_3_percent_of_the_steps(sweep_name, train_name):
    # [lora.sh] / [fsdp.sh] warmup_ratio 0.03: of table3's one volume; of the paper sweep's smallest
    sweep, train = raw(f"configs/sweeps/{sweep_name}.yaml"), raw(f"configs/{train_name}.yaml")
    t = train["train"]
    per_step = t["micro_batch_size"] * t["grad_accum"] * train["ray"]["num_workers"] * train["data"]["block_size"]
    steps = math.ceil(sweep["epochs"] * min(sweep["grid"]["data_tokens"]) / per_step)
    assert t["warmup_steps"] == math.ceil(0.03 * steps)  # HF TrainingArguments.get_warmup_steps rounds up


def test_table3_is_the_lora_script_with_the_llama2_13b_cost():
    t = raw("configs/table3_llama_lora.yaml")["train"]
    assert t["cost_embedding_model"] == "llama2-13b" and t["cost_embedding"] == "fixed"
    assert (t["lora"]["rank"], t["lora"]["alpha"], t["lora"]["dropout"]) == (32, 16.0, 0.05)
    assert (t["lr"], t["micro_batch_size"], t["precision"]) == (2e-5, 16, "fp16")
    # paper's own head as the cost in the full fine-tuning script
    assert raw("configs/paper_cluster.yaml")["train"].get("cost_embedding_model", "") == ""


def _header_number(text: str, pattern: str) -> float:
    m = re.search(pattern, text)
    assert m, pattern
    return float(m.group(1).replace(",", ""))


def test_table1_cpu_budget_arithmetic_matches_the_config():
    # the arithmetic lives in docs/protocols.md, the grid it justifies in the config
    text = (ROOT / "docs/protocols.md").read_text()
    sweep, ev = raw("configs/sweeps/table1-cpu.yaml"), raw("configs/eval/table1_cpu.yaml")
    g = sweep["grid"]
    n_trials = len(g["domains"]) * sum(len(s) for s in g["objectives"].values()) * len(g["seeds"]) * len(g["models"])
    assert n_trials == _header_number(text, r"= (\d+) trials")
    assert set(g["objectives"]) == {"mle", "tvd", "mixce", "emo"} and len(g["seeds"]) == 3
    n_prompts, n_seeds = ev["generation"]["num_prompts"], len(ev["generation"]["seeds"])
    assert n_seeds == 5
    assert n_prompts * n_seeds * 80 == _header_number(text, r"= ([\d,]+) sampled tokens")
    # training: 3 epochs of data_tokens at block 256 x micro 4, validating once per epoch
    t = sweep["train_overrides"]["train"]
    steps_per_epoch = math.ceil(g["data_tokens"][0] / (t["micro_batch_size"] * 256))
    assert t["eval_every"] == steps_per_epoch and sweep["epochs"] == 3
    # the stated total fits 8 hours on 2 cores
    per_eval, per_train = _header_number(text, r"=> ~([\d,]+) s\n"), _header_number(text, r"=> (\d+) s per trial")
    total = (n_trials + len(g["domains"])) * per_eval + n_trials * per_train
    assert total <= 2 * 8 * 3600
