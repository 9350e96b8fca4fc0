"""One formula per objective: ``LOSSES[name].mix`` is what both the materialised and the chunked
loss compute, and hyperparameter values are checked against the ranges declared in the loss
signatures when a config is loaded."""
from __future__ import annotations

import math

import pytest
import torch

from emo_ray.losses import LOSSES, LossSpec, check_hparams, get_loss, has_chunked_form, hparam_ranges, hyperparameters
from emo_ray.losses.chunked import CHUNKED_SUPPORTED, chunked_loss
from emo_ray.losses.common import IGNORE_INDEX, masked_mean, shift_and_flatten, token_logprobs
from emo_ray.losses.emo import demd_terms
from tests.losses.reference import cost_matrix
from tests.losses.test_losses import CASE_IDS, CASES, make_inputs

NAMES = sorted(LOSSES)


def naive_terms(logits, labels, E):
    """Per-token float64 ``mle`` and raw ``demd`` (Eq. 14 with the full V x V cost matrix) and the
    mask, written independently of emo_ray's execution code."""
    V = logits.shape[-1]
    rows = logits[:, :-1].reshape(-1, V).double()
    y = labels[:, 1:].reshape(-1)
    mask = y != -100
    y = torch.where(mask, y, torch.zeros_like(y))
    q = torch.softmax(rows, -1)
    mle = -torch.log_softmax(rows, -1).gather(1, y.unsqueeze(1)).squeeze(1)
    demd = (q * cost_matrix(E)[:, y].T).sum(-1)  # sum_i q_i C(i, y)
    return mle, demd, mask


@pytest.mark.parametrize("name,h", CASES, ids=CASE_IDS)
def test_materialised_loss_is_its_registered_mix(name, h):
    """``fn`` computes exactly ``mix`` of the per-token terms (values, metrics, gradients)."""
    spec = LOSSES[name]
    logits, labels, E = make_inputs(3, 11, 23, 6, seed=7)
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    out = get_loss(name, cost_embedding=E if spec.needs_cost_embedding else None, **h)(a, labels)
    mle, demd, mask = naive_terms(b, labels, E)
    loss, metrics = spec.mix(mle, demd if spec.needs_cost_embedding else None, mask,
                             **{**hyperparameters(name), **spec.pinned, **h})
    torch.testing.assert_close(out.loss, loss, rtol=1e-9, atol=1e-12)
    assert out.metrics == pytest.approx({k: float(v) for k, v in metrics.items()}, rel=1e-9, abs=1e-12)
    out.loss.backward()
    loss.backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-12)


def test_every_built_in_loss_has_a_chunked_form():
    assert CHUNKED_SUPPORTED == frozenset(NAMES)
    assert all(has_chunked_form(n) and callable(LOSSES[n].mix) for n in NAMES)


def test_an_entry_without_a_mix_is_materialised_only(monkeypatch):
    """A plugin may register ``LossSpec(fn)`` alone: it trains on the reference path."""
    monkeypatch.setitem(LOSSES, "fn_only", LossSpec(LOSSES["mle"].fn))
    assert not has_chunked_form("fn_only")
    with pytest.raises(ValueError, match="'fn_only' has no chunked form"):
        chunked_loss("fn_only", torch.randn(1, 3, 2), torch.randn(5, 2), torch.zeros(1, 3, dtype=torch.long))


def _toy_mix(mle, demd, mask, *, alpha):
    """Deliberately unlike any real objective: both terms, a stop-gradient on each (per token:
    a mix coupling tokens declares ``level='batch'``, as ``emo_batch`` does)."""
    weight = alpha * demd.detach() + (-mle.detach()).exp()
    loss = masked_mean(weight * mle + mle.detach() * demd**2, mask)
    return loss, {"mle": masked_mean(mle.detach(), mask), "toy": masked_mean(weight, mask)}


def _toy_loss(logits, labels, *, cost_embedding, alpha: float = 0.5, ignore_index: int = IGNORE_INDEX):
    flat, y, mask = shift_and_flatten(logits, labels, ignore_index)
    logp, logp_y = token_logprobs(flat, y)
    loss, metrics = _toy_mix(-logp_y, demd_terms(logp, y, cost_embedding), mask, alpha=alpha)
    from emo_ray.losses.common import LossOutput

    return LossOutput(loss, int(mask.sum()), {k: float(v) for k, v in metrics.items()})


def test_a_newly_registered_loss_is_chunked_from_its_mix_alone(monkeypatch):
    """The chunked path knows no objective by name: registering one entry is enough for it to
    match the materialised loss in values, metrics and gradients (hidden states and head)."""
    monkeypatch.setitem(LOSSES, "toy", LossSpec(_toy_loss, needs_cost_embedding=True, mix=_toy_mix))
    g = torch.Generator().manual_seed(3)
    hidden = torch.randn(2, 13, 5, generator=g, dtype=torch.float64)
    weight = torch.randn(29, 5, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 29, (2, 13), generator=g)
    labels[0, :4] = -100
    E = torch.randn(29, 7, generator=g, dtype=torch.float64)
    h1, w1 = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
    h2, w2 = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
    ref = get_loss("toy", cost_embedding=E, alpha=0.7)(h1 @ w1.T, labels)
    out = chunked_loss("toy", h2, w2, labels, cost_embedding=E, chunk_size=5, alpha=0.7)
    torch.testing.assert_close(out.loss, ref.loss, rtol=1e-9, atol=1e-12)
    assert out.metrics == pytest.approx(ref.metrics, rel=1e-9)
    ref.loss.backward()
    out.loss.backward()
    torch.testing.assert_close(h2.grad, h1.grad, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(w2.grad, w1.grad, rtol=1e-9, atol=1e-12)


# --- load-time range checks ----------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_defaults_and_pinned_values_lie_in_their_declared_ranges(name):
    spec = LOSSES[name]
    ranges = hparam_ranges(name)
    assert set(hyperparameters(name)) <= set(ranges), "every tunable hyperparameter declares its range"
    for key, value in {**hyperparameters(name), **spec.pinned}.items():
        assert ranges[key].contains(value), (name, key, value)
    check_hparams(name, hyperparameters(name))


BAD = [
    ("mixce", "gamma", -5, "[0, 1]"),
    ("mixce", "gamma", 1.0000001, "[0, 1]"),
    ("tailr", "gamma", 1.5, "[0, 1]"),
    ("tailr", "gamma", -0.1, "[0, 1]"),
    ("tvd", "gamma", 2, "[0, 1]"),
    ("tailr", "min_weight", 1.5, "[0, 1] or None"),
    ("tailr", "min_weight", -0.2, "[0, 1] or None"),
    ("mixce", "gamma", "0.5", "[0, 1]"),  # a string from a hand-written config
    ("mixce", "gamma", True, "[0, 1]"),
    ("mixce", "gamma", None, "[0, 1]"),
    ("tailr", "gamma", math.nan, "[0, 1]"),
    ("emo_custom", "mode", 3, "{1, 2}"),
    ("emo_custom", "mode", True, "{1, 2}"),
    ("emo_custom", "mode", "2", "{1, 2}"),
    ("emo_custom", "level", "sequence", "{'token', 'batch'}"),
    ("emo_custom", "ratio_cap", 0.0, "(0, inf) or None"),
    ("emo_custom", "exclude_target", 1, "{False, True}"),
]


@pytest.mark.parametrize("name,key,value,valid", BAD)
def test_out_of_range_value_fails_at_load_naming_loss_key_value_and_range(name, key, value, valid):
    with pytest.raises(ValueError) as err:
        check_hparams(name, {key: value})
    msg = str(err.value)
    assert "\n" not in msg
    assert repr(name) in msg and key in msg and repr(value) in msg and valid in msg, msg
    with pytest.raises(ValueError, match="must lie in"):  # get_loss binds through the same check
        get_loss(name, **{key: value})


@pytest.mark.parametrize(
    "name,hparams",
    [("mixce", {"gamma": 0}), ("mixce", {"gamma": 1}), ("tailr", {"gamma": 0.0, "min_weight": None}),
     ("tailr", {"min_weight": 1.0}), ("tvd", {"gamma": 0.25}),
     ("emo_custom", {"mode": 2, "level": "batch", "ratio_cap": None, "exclude_target": True}),
     ("emo_custom", {"ratio_cap": 3, "exclude_target": True})],
)
def test_values_on_the_boundary_or_int_pass(name, hparams):
    check_hparams(name, hparams)


def test_emo_custom_lists_every_emo_option_with_the_defaults_of_emo():
    assert hyperparameters("emo_custom") == {"mode": 1, "level": "token", "ratio_cap": None, "exclude_target": False}
    assert set(hparam_ranges("emo_custom")) >= set(hyperparameters("emo_custom"))
    assert LOSSES["emo_custom"].pinned == {}
    assert LOSSES["emo_mode2_exclude_target"].pinned == {**LOSSES["emo"].pinned, "mode": 2, "exclude_target": True}
    assert hyperparameters("emo_mode2_exclude_target") == {}


@pytest.mark.parametrize("name", [n for n in NAMES if LOSSES[n].pinned])
def test_a_pinned_key_is_refused_naming_the_composable_entry(name):
    for key, value in LOSSES[name].pinned.items():
        with pytest.raises(ValueError) as err:
            check_hparams(name, {key: value})  # even the pinned value itself: the preset fixes it
        msg = str(err.value)
        assert f"{key!r} is pinned to {value!r} by the named variant {name!r}" in msg
        assert "'emo_custom'" in msg and "\n" not in msg, msg


def test_pinned_error_names_an_entry_of_the_same_loss_where_the_key_is_tunable(monkeypatch):
    monkeypatch.setitem(LOSSES, "mixce_half", LossSpec(LOSSES["mixce"].fn, {"gamma": 0.5}, mix=LOSSES["mixce"].mix))
    with pytest.raises(ValueError, match=r"^'gamma' is pinned to 0.5 by the named variant 'mixce_half'; .*'mixce'"):
        check_hparams("mixce_half", {"gamma": 0.7})  # "mixce" takes gamma: it is the composable one
    monkeypatch.setitem(LOSSES, "mixce_half", LossSpec(lambda lg, lb, *, gamma=0.5: None, {"gamma": 0.5}))
    with pytest.raises(ValueError, match=r"^'gamma' is pinned to 0.5 by the named variant 'mixce_half'$"):
        check_hparams("mixce_half", {"gamma": 0.7})


def test_emo_custom_refuses_a_ratio_cap_that_mode_2_would_ignore():
    with pytest.raises(ValueError, match=r"^loss 'emo_custom': ratio_cap caps mode 1's weight .*ratio_cap=3.0 with mode=2$"):
        check_hparams("emo_custom", {"mode": 2, "ratio_cap": 3.0})
    hidden, weight = torch.randn(1, 4, 3), torch.randn(7, 3)
    with pytest.raises(ValueError, match="ratio_cap caps mode 1"):
        chunked_loss("emo_custom", hidden, weight, torch.zeros(1, 4, dtype=torch.long), cost_embedding=weight,
                     mode=2, ratio_cap=3.0)


def test_chunked_checks_ranges_too():
    hidden, weight = torch.randn(1, 4, 3), torch.randn(7, 3)
    labels = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"loss 'mixce': gamma must lie in \[0, 1\], got -5"):
        chunked_loss("mixce", hidden, weight, labels, gamma=-5)


def test_config_load_rejects_out_of_range_gamma():
    from emo_ray.config import load_config

    with pytest.raises(ValueError, match=r"gamma must lie in \[0, 1\], got 1.5"):
        load_config(None, ["train.loss=tailr", "train.loss_kwargs={gamma: 1.5}"])


def test_config_load_takes_emo_custom_options_and_checks_them():
    from emo_ray.config import load_config

    cfg = load_config(None, ["train.loss=emo_custom", "train.loss_kwargs={mode: 2, exclude_target: true}"])
    assert cfg.train.loss_kwargs == {"mode": 2, "exclude_target": True}
    with pytest.raises(ValueError, match=r"mode must lie in \{1, 2\}, got 3"):
        load_config(None, ["train.loss=emo_custom", "train.loss_kwargs={mode: 3}"])
    with pytest.raises(ValueError, match="pinned to 1 by the named variant 'emo'.*'emo_custom'"):
        load_config(None, ["train.loss=emo", "train.loss_kwargs={mode: 2}"])
