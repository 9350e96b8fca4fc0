"""Decoders: ancestral sampling is the model distribution itself; truncations are exact."""
from __future__ import annotations

import pytest
import torch

from emo_ray.inference.decoders import DECODERS, Decoder, choose, get_decoder, next_token_probs


def test_ancestral_is_unbiased():
    dec = get_decoder("ancestral")
    assert (dec.top_k, dec.top_p, dec.temperature, dec.greedy) == (0, 1.0, 1.0, False)
    logits = torch.randn(3, 11)
    torch.testing.assert_close(next_token_probs(logits, dec), torch.softmax(logits, -1))


def test_top_k_and_top_p_keep_the_right_tokens():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    p = next_token_probs(logits, Decoder(top_k=2))
    torch.testing.assert_close(p, torch.tensor([[0.625, 0.375, 0.0, 0.0]]))
    p = next_token_probs(logits, Decoder(top_p=0.8))  # 0.5 + 0.3 reaches 0.8: two tokens
    torch.testing.assert_close(p, torch.tensor([[0.625, 0.375, 0.0, 0.0]]))
    p = next_token_probs(logits, Decoder(top_p=0.81))
    torch.testing.assert_close(p, torch.tensor([[0.5, 0.3, 0.15, 0.0]]) / 0.95)


def test_per_row_generators_make_rows_independent_of_the_batch():
    logits = torch.randn(4, 50)
    gens = lambda: [torch.Generator().manual_seed(s) for s in range(4)]  # noqa: E731
    full = choose(logits, DECODERS["ancestral"], gens())
    alone = choose(logits[2:3], DECODERS["ancestral"], [torch.Generator().manual_seed(2)])
    assert full[2] == alone[0]
    assert torch.equal(choose(logits, DECODERS["greedy"], gens()), logits.argmax(-1))


def test_unknown_decoder_lists_valid():
    with pytest.raises(ValueError, match="valid: \\['ancestral'"):
        get_decoder("beam")


def test_draws_follow_the_distribution_and_never_pick_a_dropped_token():
    """The inverse-CDF draw is exact: 20,000 draws of one row pass a chi-square test against the
    truncated distribution (a biased sampler, e.g. an off-by-one in the CDF search, fails it at
    this n), and tokens that top-k removed never appear."""
    from scipy import stats

    probs = torch.tensor([0.4, 0.25, 0.2, 0.1, 0.04, 0.01])
    logits = probs.log().expand(20_000, -1)
    gens = [torch.Generator().manual_seed(s) for s in range(20_000)]
    draws = choose(logits, Decoder(top_k=4), gens)
    counts = torch.bincount(draws, minlength=6)
    assert counts[4:].sum() == 0
    kept = probs[:4] / probs[:4].sum()
    expected = kept.double().numpy() * counts[:4].sum().item()
    assert stats.chisquare(counts[:4].numpy(), expected).pvalue > 1e-3
    # a vocabulary-sized row: the draw lands on the single token that holds the mass
    big = torch.full((2, 49_152), -1e4)
    big[0, 49_151], big[1, 0] = 0.0, 0.0
    assert choose(big, DECODERS["ancestral"], [torch.Generator().manual_seed(s) for s in (0, 1)]).tolist() == [49_151, 0]


def test_one_generator_per_row_is_required():
    with pytest.raises(ValueError, match="3 rows but 2 generators"):
        choose(torch.randn(3, 5), DECODERS["ancestral"], [torch.Generator(), torch.Generator()])
