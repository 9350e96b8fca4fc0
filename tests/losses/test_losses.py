"""Every objective against its naive float64 reference (values and gradients), plus limits."""
from __future__ import annotations

import pytest
import torch

from emo_ray.losses import LOSSES, check_hparams, get_loss, hyperparameters
from tests.losses.reference import EMO_CUSTOM_CASES, REFERENCES, cost_matrix

SHAPES = [(2, 5, 11, 7), (3, 13, 41, 9), (1, 2, 3, 4)]  # (B, T, V, d), odd on purpose
HPARAMS = {"tailr": {"gamma": 0.3, "min_weight": 0.1}, "tvd": {"gamma": 0.6}, "mixce": {"gamma": 0.4}}


def cases(hparams):
    """(name, hyperparameters) for every registry entry, then the emo_custom combinations."""
    return [(n, hparams.get(n, {})) for n in sorted(LOSSES)] + [("emo_custom", h) for h in EMO_CUSTOM_CASES]


def case_id(case):
    name, h = case
    return name + ("[" + ",".join(f"{k}={v}" for k, v in h.items()) + "]" if name == "emo_custom" and h else "")


CASES = cases(HPARAMS)
CASE_IDS = [case_id(c) for c in CASES]


def make_inputs(B, T, V, d, *, seed=0, masked_frac=0.25, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(B, T, V, generator=g) * 3).to(dtype)
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[torch.rand(B, T, generator=g) < masked_frac] = -100
    E = torch.randn(V, d, generator=g).to(dtype)
    return logits, labels, E


def run(name, logits, labels, E, **h):
    fn = get_loss(name, cost_embedding=E if LOSSES[name].needs_cost_embedding else None, **h)
    return fn(logits, labels)


@pytest.mark.parametrize("name,h", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_reference_values_and_grads(name, h, shape):
    logits, labels, E = make_inputs(*shape, seed=hash((name, shape)) % 1000)
    fast_in = logits.clone().requires_grad_(True)
    ref_in = logits.clone().requires_grad_(True)
    out = run(name, fast_in, labels, E, **h)
    ref = REFERENCES[name](ref_in, labels, E, **h)
    torch.testing.assert_close(out.loss.double(), ref, rtol=1e-6, atol=1e-9)
    grad_out = torch.tensor(0.37, dtype=torch.float64)  # grad_output != 1
    (out.loss * grad_out).backward()
    (ref * grad_out).backward()
    torch.testing.assert_close(fast_in.grad, ref_in.grad, rtol=1e-6, atol=1e-9)
    assert out.n_tokens == int((labels[:, 1:] != -100).sum())


@pytest.mark.parametrize("name,h", CASES, ids=CASE_IDS)
def test_fp32_close_to_fp64(name, h):
    logits, labels, E = make_inputs(2, 9, 37, 5, seed=3)
    lo = run(name, logits.float(), labels, E.float(), **h).loss
    hi = run(name, logits, labels, E, **h).loss
    torch.testing.assert_close(lo.double(), hi, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,h", CASES, ids=CASE_IDS)
def test_all_masked_is_zero_and_backward_runs(name, h):
    logits, labels, E = make_inputs(2, 6, 13, 4)
    labels[:] = -100
    x = logits.clone().requires_grad_(True)
    out = run(name, x, labels, E, **h)
    assert out.loss.item() == 0.0 and out.n_tokens == 0
    out.loss.backward()
    assert x.grad is not None and torch.count_nonzero(x.grad) == 0


@pytest.mark.parametrize("name,h", CASES, ids=CASE_IDS)
def test_ignored_positions_do_not_matter(name, h):
    logits, labels, E = make_inputs(2, 8, 17, 4, masked_frac=0.4)
    base = run(name, logits, labels, E, **h).loss
    # Scramble logits at positions whose *next* label is ignored: the loss must not change.
    ignored = torch.zeros_like(labels, dtype=torch.bool)
    ignored[:, :-1] = labels[:, 1:] == -100
    ignored[:, -1] = True  # the last position predicts nothing
    scrambled = logits.clone()
    scrambled[ignored] = torch.randn_like(scrambled[ignored]) * 10
    torch.testing.assert_close(run(name, scrambled, labels, E, **h).loss, base)


@pytest.mark.parametrize(
    "name,h", [("tailr", {"gamma": 0.0}), ("mixce", {"gamma": 1.0}), ("tvd", {"gamma": 1.0})]
)
def test_endpoints_reduce_to_mle(name, h):
    logits, labels, E = make_inputs(3, 7, 19, 4)
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    out = run(name, a, labels, E, **h)
    mle = run("mle", b, labels, E)
    torch.testing.assert_close(out.loss, mle.loss)
    out.loss.backward(), mle.loss.backward()
    torch.testing.assert_close(a.grad, b.grad)


def test_baselines_differ_from_mle_inside_the_range():
    logits, labels, E = make_inputs(3, 7, 19, 4)
    mle = run("mle", logits, labels, E).loss
    for name in ("tailr", "mixce", "tvd"):
        assert not torch.isclose(run(name, logits, labels, E, gamma=0.5).loss, mle)


def test_demd_term_is_nonnegative_and_matches_transport_definition():
    logits, labels, E = make_inputs(3, 11, 23, 6, masked_frac=0.0)
    out = run("emo", logits, labels, E)
    C = cost_matrix(E)
    q = torch.softmax(logits[:, :-1], -1).reshape(-1, 23)
    y = labels[:, 1:].reshape(-1)
    demd = (q * C[:, y].T).sum(-1)  # sum_i q_i C(i, y)
    assert (demd >= -1e-12).all()
    assert out.metrics["emo"] == pytest.approx(demd.mean().item(), rel=1e-9)


def test_demd_is_zero_when_q_is_one_hot_on_target():
    V = 9
    labels = torch.tensor([[0, 3, 5, 1, 8]])
    logits = torch.full((1, 5, V), -1e4, dtype=torch.float64)
    logits[0, torch.arange(4), labels[0, 1:]] = 1e4
    out = run("emo", logits, labels, torch.randn(V, 4, dtype=torch.float64))
    assert out.metrics["emo"] == pytest.approx(0.0, abs=1e-12)
    assert out.metrics["mle"] == pytest.approx(0.0, abs=1e-12)


def test_cost_embedding_gets_no_gradient():
    logits, labels, E = make_inputs(2, 5, 11, 3)
    E = E.clone().requires_grad_(True)
    run("emo", logits.requires_grad_(True), labels, E).loss.backward()
    assert E.grad is None


def test_emo_variants_differ_where_they_should():
    """Mode 1's value is exactly the MLE (0.5 (m + sg(m/e) e) = m): the variants differ in their
    gradients, so compare those. Every preset, and the emo_custom combinations no preset covers."""
    logits, labels, E = make_inputs(3, 9, 29, 5, masked_frac=0.0)
    grads = {}
    variants = [(n, {}) for n in LOSSES if LOSSES[n].needs_cost_embedding and LOSSES[n].pinned]
    variants += [("emo_custom", h) for h in EMO_CUSTOM_CASES if h != {"mode": 2, "exclude_target": True}]
    for name, h in variants:
        x = logits.clone().requires_grad_(True)
        out = run(name, x, labels, E, **h)
        out.loss.backward()
        grads[case_id((name, h))] = x.grad
        if name in ("emo", "emo_batch", "emo_exclude_target"):
            assert out.loss.item() == pytest.approx(out.metrics["mle"], rel=1e-9)  # up to the 1e-10 ratio eps
    names = sorted(grads)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not torch.allclose(grads[a], grads[b]), (a, b)


def test_unknown_loss_and_bad_hparams_are_named():
    with pytest.raises(ValueError, match="not a supported loss.*'emo'"):
        get_loss("emd")
    with pytest.raises(ValueError, match="takes no hyperparameter 'gama'.*gamma"):
        get_loss("tailr", gama=0.5)
    with pytest.raises(ValueError, match="pinned"):
        get_loss("emo_capped", cost_embedding=torch.zeros(3, 2), ratio_cap=5.0)
    with pytest.raises(ValueError, match="'mode' is pinned to 1 by the named variant 'emo'; .*'emo_custom'"):
        check_hparams("emo", {"mode": 2})
    with pytest.raises(ValueError, match=r"loss 'emo_custom': mode must lie in \{1, 2\}, got 3"):
        check_hparams("emo_custom", {"mode": 3})
    with pytest.raises(ValueError, match="loss 'emo_custom': ratio_cap caps mode 1's weight .* only"):
        get_loss("emo_custom", cost_embedding=torch.zeros(3, 2), mode=2, ratio_cap=3.0)
    with pytest.raises(ValueError, match="needs a cost_embedding"):
        get_loss("emo")
    with pytest.raises(ValueError, match="gamma must lie"):
        get_loss("mixce", gamma=1.5)(torch.zeros(1, 2, 3), torch.zeros(1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="cost_embedding must be"):
        get_loss("emo", cost_embedding=torch.zeros(0))(torch.zeros(1, 2, 3), torch.zeros(1, 2, dtype=torch.long))


def test_bf16_logits_give_fp32_loss_close_to_fp32():
    logits, labels, E = make_inputs(2, 9, 37, 5, dtype=torch.float32)
    out16 = run("emo", logits.bfloat16(), labels, E)
    out32 = run("emo", logits.bfloat16().float(), labels, E)
    assert out16.loss.dtype == torch.float32
    torch.testing.assert_close(out16.loss, out32.loss)


def test_every_emo_preset_is_emo_custom_with_its_pinned_options():
    """The presets are names for settings of emo_custom, whose defaults are those of emo."""
    assert hyperparameters("emo_custom") == LOSSES["emo"].pinned
    assert hyperparameters("emo") == {}
    logits, labels, E = make_inputs(2, 7, 19, 5, seed=11)
    for name in (n for n in LOSSES if LOSSES[n].fn is LOSSES["emo_custom"].fn):
        a = logits.clone().requires_grad_(True)
        b = logits.clone().requires_grad_(True)
        preset = run(name, a, labels, E)
        custom = run("emo_custom", b, labels, E, **LOSSES[name].pinned)
        assert preset.loss.item() == custom.loss.item() and preset.metrics == custom.metrics, name
        preset.loss.backward(), custom.loss.backward()
        assert torch.equal(a.grad, b.grad), name
