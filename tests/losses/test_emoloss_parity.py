"""Parity with the public reference package ``EMOLoss==0.0.3`` (PyPI, module ``emo``)."""
from __future__ import annotations

import pytest
import torch

from emo_ray.losses import get_loss

emo_pkg = pytest.importorskip("emo", reason="EMOLoss==0.0.3 is a test dependency: pip install -e .[test]")

# EMOLoss mode=1 caps the dynamic weight at 3.0 (emo_patch.py); mode=2 is EMOLlama2's weighting.
PAIRS = [(1, "emo_capped"), (2, "emo_mode2")]


@pytest.mark.parametrize("mode,name", PAIRS)
@pytest.mark.parametrize("shape", [(2, 17, 101, 8), (3, 33, 257, 16)])
def test_values_and_grads_match_emoloss(mode, name, shape):
    B, T, V, d = shape
    g = torch.Generator().manual_seed(V + mode)
    logits = torch.randn(B, T, V, generator=g) * 2
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[0, :5] = -100
    E = torch.randn(V, d, generator=g)
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    ours = get_loss(name, cost_embedding=E)(a, labels).loss
    theirs = emo_pkg.EMOLoss(b, labels, cost_embedding=E, mode=mode)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)
    ours.backward(), theirs.backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-8)


def test_cap_is_active_in_parity_inputs():
    """The capped and uncapped variants must differ here, or the parity above proves nothing."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 17, 101, generator=g) * 2
    labels = torch.randint(0, 101, (2, 17), generator=g)
    E = torch.randn(101, 8, generator=g)
    capped = get_loss("emo_capped", cost_embedding=E)(logits, labels).loss
    plain = get_loss("emo", cost_embedding=E)(logits, labels).loss
    assert not torch.isclose(capped, plain)
