"""Decoders: ancestral sampling is the model distribution itself; truncations are exact."""
from __future__ import annotations

import pytest
import torch

from emo_ray.evaluation.decoders import DECODERS, Decoder, choose, get_decoder, next_token_probs


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
