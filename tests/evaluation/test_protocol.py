"""The official open-ended protocol (DRSY/EMO language_modeling/test_utils.py:test_batch): word
windows with its row filters, forced-length sampling, and the one ``protocol`` switch."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from emo_ray.evaluation.config import PROTOCOLS, EvalConfigError, from_flat, load_eval_config, to_flat
from emo_ray.evaluation.corpora import Corpus
from emo_ray.evaluation.prompts import make_prompts, official_rows, word_windows
from emo_ray.inference.decoders import get_decoder
from emo_ray.inference.sampler import Sampler, sample
from tests.evaluation.conftest import needs_data, write_jsonl


def words(n: int, tag: str = "w") -> str:
    return " ".join(f"{tag}{i}" for i in range(n))


# prefix 3 + continuation 5 words: a row needs >= 3 + 5 + 10 = 18 words and >= 100 characters
K, M = 3, 5
ROWS = {
    "kept": words(18, "kept"),                       # 18 words, 124 chars
    "short": words(30, ""),                          # 30 words but 79 chars
    "few_words": words(17, "fewwords"),              # 17 words, 168 chars
    "marker": "== " + words(20, "marker"),           # long enough, has the heading marker
    "kept2": words(40, "second"),
}


@pytest.fixture
def doc_corpus(tmp_path) -> Corpus:
    return Corpus(write_jsonl(tmp_path / "d.jsonl", [{"text": t} for t in ROWS.values()]), K, M)


def test_each_official_filter_drops_its_rows_and_the_window_is_words(doc_corpus):
    windows, counts = word_windows(doc_corpus)
    assert counts == {"units": 5, "skipped_too_few_chars": 1, "skipped_too_few_words": 1, "skipped_has_marker": 1,
                      "windows": 2}
    (p1, c1), (p2, c2) = windows
    assert p1 == "kept0 kept1 kept2" and c1 == " kept3 kept4 kept5 kept6 kept7"
    assert p2 == "second0 second1 second2" and c2 == " " + words(8, "second").split(" ", 3)[3]


def test_the_word_threshold_is_inclusive_and_counts_split_on_single_spaces(tmp_path):
    # exactly K + M + 10 words is kept; a double space makes an empty "word" that counts too
    exact = words(18, "abcdefgh")
    padded = words(16, "abcdefgh").replace(" ", "  ", 1)  # 16 words + 1 empty one: still too few
    src = write_jsonl(tmp_path / "t.jsonl", [{"text": exact}, {"text": padded}])
    _, counts = word_windows(Corpus(src, K, M))
    assert counts["windows"] == 1 and counts["skipped_too_few_words"] == 1


def test_paragraph_rows_are_hf_lines_and_scan_rows_cuts_them(tmp_path):
    # an article as in the local WikiText file: lines joined by \n, each with a leading space
    article = "\n".join([" = Title = ", " ", " " + words(20, "para"), " " + words(20, "next")])
    src = write_jsonl(tmp_path / "w.jsonl", [{"text": article}])
    corpus = Corpus(src, K, M, unit="paragraph")
    rows = official_rows(corpus)
    assert rows == [line + "\n" for line in article.split("\n")]
    windows, counts = word_windows(corpus)
    # the leading space is an empty first word, as in HF rows: the prefix shows K - 1 words
    assert windows[0] == (" para0 para1", " para2 para3 para4 para5 para6") and counts["windows"] == 2
    assert word_windows(Corpus(src, K, M, unit="paragraph", scan_rows=3))[1]["windows"] == 1


def test_word_prompts_tokenise_the_prefix_text_and_sort_by_length(doc_corpus, tiny):
    _, tok = tiny
    prompts, counts = make_prompts(doc_corpus, tok, num_prompts=0, seed=0, window_unit="words")
    specials = tok("")["input_ids"]
    assert counts["windows"] == len(prompts) == 2
    for i, p in enumerate(prompts):
        assert p.prompt_id == i and p.prefix_ids == specials + tok(p.prefix, add_special_tokens=False)["input_ids"]
    assert len(prompts[0].prefix_ids) <= len(prompts[1].prefix_ids)
    assert {p.prefix for p in prompts} == {"kept0 kept1 kept2", "second0 second1 second2"}
    with pytest.raises(ValueError, match="only 2 rows pass the official filters \\(3 \\+ 5 words\\), 3 prompts asked for"):
        make_prompts(doc_corpus, tok, num_prompts=3, seed=0, window_unit="words")
    with pytest.raises(ValueError, match="window_unit 'lines' is not one of \\['tokens', 'words'\\]"):
        make_prompts(doc_corpus, tok, num_prompts=0, seed=0, window_unit="lines")


class EOSLover(torch.nn.Module):
    """The tiny model with +50 on the EOS logit: it ends every sample at once unless forced."""

    def __init__(self, model, eos: int):
        super().__init__()
        self.model, self.eos = model, eos

    def forward(self, **kwargs):
        out = self.model(**kwargs)
        out.logits = out.logits.clone()
        out.logits[..., self.eos] += 50.0
        return out


def _gens(n):
    return [torch.Generator().manual_seed(i) for i in range(n)]


@pytest.mark.parametrize("decoder", ["ancestral", "greedy", "top_p_0.95"])
def test_forced_length_gives_exactly_n_tokens_when_the_model_wants_eos(tiny, decoder):
    model, tok = tiny
    eos = tok.eos_token_id
    lover, prefixes, dec = EOSLover(model, eos), [[5, 6, 7], [8, 9, 10]], get_decoder(decoder)
    free, ended = sample(lover, prefixes, dec, _gens(2), 6, {eos})
    assert free == [[], []] and ended == [True, True]  # the bias works: unforced, EOS comes first
    forced, ended = sample(lover, prefixes, dec, _gens(2), 6, {eos}, min_new=6)
    assert [len(t) for t in forced] == [6, 6] and eos not in sum(forced, []) and ended == [False, False]
    # official: min_new_tokens=N, max_new_tokens=N+1: the free last step may draw EOS (and here does)
    extra, ended = sample(lover, prefixes, dec, _gens(2), 7, {eos}, min_new=6)
    assert [len(t) for t in extra] == [6, 6] and ended == [True, True]


def test_sampler_forces_length_over_prefixes_of_different_lengths(tiny_path, tiny):
    _, tok = tiny
    sampler = Sampler(tiny_path, gen_tokens=5, min_tokens=5)
    sampler.model = EOSLover(sampler.model, tok.eos_token_id)
    batch = pd.DataFrame({"prompt_id": [0, 1, 2], "seed": [0, 0, 0], "decoder": ["ancestral"] * 3,
                          "prefix_ids": [np.array([5, 6]), np.array([5, 6, 7, 8]), np.array([9, 10])]})
    out = sampler(batch)
    assert list(out["prompt_id"]) == [0, 1, 2] and [len(g) for g in out["gen_ids"]] == [5, 5, 5]
    with pytest.raises(ValueError, match="min_tokens must lie in \\[0, gen_tokens=5\\], got 6"):
        Sampler(tiny_path, gen_tokens=5, min_tokens=6)


def test_official_switch_sets_every_field_and_project_is_the_default():
    off, proj = load_eval_config(None, ["protocol=official"]), load_eval_config()
    assert proj.protocol == "project"
    g = off.generation
    assert (g.window_unit, g.stop_at_eos, g.extra_tokens, g.num_prompts) == ("words", False, 1, 0)
    m = off.mauve
    assert (m.max_tokens, m.include_prefix, m.num_buckets, m.pooling, m.layer, m.featurizer) == (256, True, 0, "last", -1, "gpt2-large")
    for name, cfg in (("official", off), ("project", proj)):
        for section, values in PROTOCOLS[name].items():
            assert {k: getattr(getattr(cfg, section), k) for k in values} == values
    assert (proj.generation.window_unit, proj.generation.stop_at_eos, proj.generation.num_prompts, proj.mauve.max_tokens) \
        == ("tokens", True, 200, 1024)
    assert from_flat(to_flat(off)) == off  # the resolved values travel (MLflow params, Ray workers)


def test_explicit_fields_win_over_the_switch(tmp_path):
    path = tmp_path / "cpu.yaml"
    path.write_text("protocol: official\nmauve:\n  featurizer: smollm2-135m\n  pooling: mean\n  layer: -8\n")
    cfg = load_eval_config(path, ["generation.stop_at_eos=true"])
    assert (cfg.mauve.featurizer, cfg.mauve.pooling, cfg.mauve.layer) == ("smollm2-135m", "mean", -8)
    assert cfg.generation.stop_at_eos is True  # the override
    assert (cfg.generation.window_unit, cfg.mauve.max_tokens, cfg.generation.extra_tokens) == ("words", 256, 1)
    back = load_eval_config(path, ["protocol=project"])  # the command line switches back
    assert (back.generation.window_unit, back.mauve.max_tokens, back.mauve.pooling) == ("tokens", 1024, "mean")


@pytest.mark.parametrize("override, message", [
    ("protocol=paper", "^protocol: 'paper' is not one of \\['project', 'official'\\]$"),
    ("generation.window_unit=lines", "generation.window_unit: 'lines' is not one of \\['tokens', 'words'\\]"),
    ("generation.stop_at_eos=maybe", "generation.stop_at_eos: expected true/false"),
    ("generation.extra_tokens=-1", "^config.generation.extra_tokens must be >= 0, got -1$"),
])
def test_a_bad_protocol_value_is_a_one_line_error(override, message):
    with pytest.raises(EvalConfigError, match=message) as err:
        load_eval_config(None, [override])
    assert "\n" not in str(err.value)


@needs_data
def test_official_protocol_end_to_end_states_what_it_did(tmp_path, tiny_path):
    from emo_ray.evaluation.open_ended import evaluate_corpus

    tree = {"protocol": "official", "model": "tiny-llama", "icl_enabled": False,
            "generation": {"corpora": ["wikitext-2"], "num_prompts": 12, "seeds": [0], "batch_size": 6},
            "mauve": {"featurizer": "tiny-llama", "pooling": "mean", "cache": False}, "oracle": {"model": "tiny-llama"},
            "execution": {"executor": "local", "cpus_per_actor": 1, "progress_bar": False}}
    cfg = load_eval_config(tree=tree)
    res = evaluate_corpus(tiny_path, "wikitext-2", cfg)
    table = res.tables["generations/wikitext-2.json"]
    # 80 forced tokens, then one free step (official max_new_tokens = decode_newlen + 1)
    assert set(table["n_gen_tokens"]) <= {80, 81} and not table["empty"].any()
    assert all(len(r.split(" ")) == 81 and r.startswith(" ") for r in table["reference"])  # " " + 80 words
    p = res.params
    assert "protocol=official window_unit=words" in p["gen/wikitext-2/prompts"] and "scan_rows=4031" in p["gen/wikitext-2/prompts"]
    assert "windows=936" in p["gen/wikitext-2/prompts"] and "num_prompts=12" in p["gen/wikitext-2/prompts"]
    assert "max_new_tokens=81 min_new_tokens=80 stop_at_eos=False" in p["gen/wikitext-2/sampling"]
    assert "max_tokens=256 include_prefix=True num_buckets=auto" in p["gen/wikitext-2/mauve"]


def test_too_many_prompts_for_the_word_windows_fails_at_config_load(tmp_path, doc_corpus):
    path = tmp_path / "docs.yaml"
    path.write_text(f"source: {doc_corpus.source}\nprefix_tokens: {K}\ngen_tokens: {M}\n")
    base = ["protocol=official", f"generation.corpora=[{path}]"]
    assert load_eval_config(None, base + ["generation.num_prompts=2"]).generation.num_prompts == 2
    with pytest.raises(EvalConfigError, match="only 2 rows pass the official filters \\(3 \\+ 5 words\\), "
                                              "generation.num_prompts=3; use at most 2 \\(or 0 = all\\)$"):
        load_eval_config(None, base + ["generation.num_prompts=3"])
    # token windows count differently: the check is for word windows only
    assert load_eval_config(None, base + ["generation.num_prompts=3", "protocol=project"]).protocol == "project"
