"""Prompts are Table 4 token windows; samples are reproducible per (prompt, seed)."""
from __future__ import annotations

import pytest
import torch

from emo_ray.evaluation.corpora import CORPORA, Corpus, get_corpus
from emo_ray.evaluation.prompts import make_prompts, text_units
from emo_ray.inference.decoders import get_decoder
from emo_ray.inference.sampler import sample
from tests.evaluation.conftest import needs_data, write_jsonl


def test_table4_lengths():
    got = {k: (c.prefix_tokens, c.gen_tokens) for k, c in CORPORA.items()}
    assert got["wikitext-2"] == (20, 80) and got["webtext"] == (20, 80)
    assert got["ptb"] == (5, 25) and got["ag_news"] == (10, 30)
    assert got["wikitext-103"] == (20, 80) and got["writingprompts"] == (35, 80)
    with pytest.raises(ValueError, match="valid: \\['ag_news'"):
        get_corpus("lambada")


@needs_data
@pytest.mark.parametrize("name", ["wikitext-2", "webtext", "ag_news"])
def test_local_corpora_give_200_prompts_of_exact_length(name, tiny):
    _, tok = tiny  # byte-level: many tokens per word, the strictest case for the window count
    corpus = get_corpus(name)
    prompts, counts = make_prompts(corpus, tok, num_prompts=200, seed=0)
    assert len(prompts) == 200 and counts["windows"] >= 200
    assert all(len(p.prefix_ids) == corpus.prefix_tokens and len(p.reference_ids) == corpus.gen_tokens for p in prompts)
    again, _ = make_prompts(corpus, tok, num_prompts=200, seed=0)
    assert [p.prefix for p in again] == [p.prefix for p in prompts]


@needs_data
def test_wikitext_paragraphs_drop_headings():
    units = text_units(get_corpus("wikitext-2"))
    assert len(units) > 1000 and not any(u.startswith("= ") and u.endswith(" =") for u in units)


def test_too_few_windows_is_an_error(tmp_path, tiny):
    _, tok = tiny
    src = write_jsonl(tmp_path / "c.jsonl", [{"text": "short"}, {"text": "x" * 40}])
    with pytest.raises(ValueError, match="only 1 windows of 30 tokens, 5 prompts asked for"):
        make_prompts(Corpus(src, 10, 20), tok, num_prompts=5, seed=0)


def test_samples_do_not_depend_on_batch_mates_and_stop_at_eos(tiny):
    model, tok = tiny
    prefixes = [list(range(10 + i, 20 + i)) for i in range(4)]
    gens = lambda ids: [torch.Generator().manual_seed(i) for i in ids]  # noqa: E731
    dec = get_decoder("ancestral")
    batch, _ = sample(model, prefixes, dec, gens(range(4)), 12, set())
    alone, _ = sample(model, prefixes[1:2], dec, gens([1]), 12, set())
    assert batch[1] == alone[0] and all(len(t) == 12 for t in batch)
    # Every token is EOS: empty generations, flagged as ended.
    toks, ended = sample(model, prefixes, dec, gens(range(4)), 5, set(range(len(tok))))
    assert toks == [[], [], [], []] and ended == [True] * 4
