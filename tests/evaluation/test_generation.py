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


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_prefill_head_on_last_position_only_is_bit_identical(tiny_path, dtype):
    """The sampler's prefill asks for the last position's logits only (``logits_to_keep=1``): the
    same numbers, bit for bit, as slicing the full logits (fp32 head rows do not depend on how many
    rows share the GEMM), so samples are unchanged."""
    from emo_ray.models.loading import load_for_eval

    model, _ = load_for_eval(tiny_path, "cpu", dtype=dtype)
    ids = torch.randint(3, 200, (5, 17), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(input_ids=ids).logits[:, -1]
        last = model(input_ids=ids, logits_to_keep=1).logits[:, -1]
    assert torch.equal(full, last)


def test_padded_batch_of_mixed_lengths_samples_like_rows_alone(tiny):
    """``pad=True``: left-padded prefixes of different lengths decode as one batch; in fp32 each
    row draws what it draws alone (positions and masks are right; bf16 would move last bits)."""
    model, _ = tiny
    prefixes = [list(range(10, 14)), list(range(20, 29)), list(range(30, 36))]
    gens = lambda ids: [torch.Generator().manual_seed(i) for i in ids]  # noqa: E731
    dec = get_decoder("ancestral")
    padded, ended = sample(model, prefixes, dec, gens(range(3)), 10, set(), pad=True)
    for r, p in enumerate(prefixes):
        alone, _ = sample(model, [p], dec, gens([r]), 10, set())
        assert padded[r] == alone[0]
    assert ended == [False] * 3 and all(len(t) == 10 for t in padded)
    with pytest.raises(ValueError, match="same length"):
        sample(model, prefixes, dec, gens(range(3)), 2, set())
