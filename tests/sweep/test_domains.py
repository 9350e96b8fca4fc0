"""``grid.domains`` (one fine-tuning per corpus, paper Table 1) and ``evaluate_pretrained`` (the
pre-trained row of Table 3) in the sweep spec: trials, keys, merged configs, errors."""
import json

import pytest

from emo_ray.config import ConfigError
from emo_ray.sweep import load_sweep_config, trial_config, trials
from emo_ray.sweep.runner import describe
from emo_ray.sweep.spec import PRETRAINED, Trial, all_trials, eval_config, pretrained_trials
from emo_ray.sweep.trial import trial_tags

WEB = "${EMO_RAY_DATA}/webtext/train.jsonl"
DOMAINS = ("grid.domains={wikitext-2: {eval: {generation: {corpora: [wikitext-2]}}}, "
           "webtext: {train: {data: {train: '" + WEB + "', block_size: 32}}, eval: {generation: {corpora: [webtext]}}}}")


def _sweep(*extra):
    return load_sweep_config("cpu-small", ["eval_config=configs/eval/quick.yaml", DOMAINS, *extra])


def test_each_domain_gets_its_own_trials_configs_and_evaluation():
    sweep = _sweep()
    grid = trials(sweep)
    plain = trials(load_sweep_config("cpu-small"))
    assert len(grid) == 2 * len(plain) and {t.domain for t in grid} == {"wikitext-2", "webtext"}
    assert len({t.key for t in grid}) == len(grid) and all(t.key.endswith(f"-{t.domain}") for t in grid)
    web = next(t for t in grid if t.domain == "webtext")
    wiki = next(t for t in grid if t.domain == "wikitext-2")
    # The domain's train overrides merge after the sweep's: block_size 32 beats the sweep's 64,
    # the sweep's micro_batch_size stays.
    cw, ck = trial_config(sweep, web), trial_config(sweep, wiki)
    assert cw.data.block_size == 32 and ck.data.block_size == 64
    assert "webtext" in str(cw.data.train) and "webtext" not in str(ck.data.train)
    assert cw.train.micro_batch_size == ck.train.micro_batch_size == 4
    assert eval_config(sweep, domain="webtext").generation.corpora == ("webtext",)
    assert eval_config(sweep, domain="wikitext-2").generation.corpora == ("wikitext-2",)
    tags = trial_tags(sweep, web, "t1")
    assert tags["emo_ray.domain"] == "webtext" and json.loads(tags["emo_ray.trial"])["domain"] == "webtext"


def test_pretrained_evaluation_is_one_extra_trial_per_model_and_domain():
    sweep = _sweep()
    pre = pretrained_trials(sweep)
    assert [(t.model, t.domain) for t in pre] == [("tiny-llama", "wikitext-2"), ("tiny-llama", "webtext")]
    assert all(t.pretrained and t.loss == PRETRAINED and t.tokens == 0 for t in pre)
    assert all_trials(sweep) == trials(sweep) + pre
    assert pre[0].key == "pretrained-tiny-llama-wikitext-2"
    assert trial_tags(sweep, pre[0], "t9")["emo_ray.kind"] == PRETRAINED
    assert "emo_ray.kind" not in trial_tags(sweep, trials(sweep)[0], "t0")
    with pytest.raises(ConfigError, match="no training config"):
        trial_config(sweep, pre[0])
    assert "2 pre-trained evaluations" in describe(sweep)
    # Off, or nothing to evaluate with: no such trials.
    assert pretrained_trials(_sweep("evaluate_pretrained=false")) == []
    assert pretrained_trials(load_sweep_config("cpu-small")) == []


def test_records_without_a_domain_still_load():
    old = {"model": "tiny-llama", "loss": "mle", "loss_kwargs": {}, "tokens": 4096, "seed": 0}
    t = Trial.from_dict(old)
    assert t.domain == "" and t.key == "mle-tiny-llama-4096tok-s0" and not t.pretrained


@pytest.mark.parametrize("overrides,message", [
    (["grid.domains={webtext: {train: {data: {block_size: -3}}}}"], r"grid.domains.webtext: trial .*block_size"),
    (["grid.domains={webtext: {evaluation: {}}}"], r"grid.domains.webtext: unknown key\(s\) \['evaluation'\]"),
    (["grid.domains={webtext: {eval: {icl: {tasks: [sst3]}}}}"], r"grid.domains.webtext: eval: .*'sst3'"),
    (["grid.domains={webtext: [1]}"], r"grid.domains.webtext: expected a mapping"),
    (["grid.objectives={pretrained: [{}]}"], "reserved"),
])
def test_bad_domains_fail_at_load_naming_the_domain(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_sweep_config("cpu-small", ["eval_config=configs/eval/quick.yaml", *overrides])
