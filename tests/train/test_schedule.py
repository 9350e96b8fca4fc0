import pytest

from emo_ray.train.schedule import lr_multiplier


def test_warmup_then_cosine_to_min():
    f = lambda s: lr_multiplier(s, warmup_steps=4, max_steps=20, schedule="cosine", min_lr_ratio=0.1)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == pytest.approx(1.0)
    assert f(12) == pytest.approx(0.55)
    assert f(20) == pytest.approx(0.1)
    assert all(f(s) >= f(s + 1) for s in range(4, 20))


def test_linear_and_constant():
    assert lr_multiplier(5, warmup_steps=0, max_steps=10, schedule="linear", min_lr_ratio=0.0) == pytest.approx(0.5)
    assert lr_multiplier(7, warmup_steps=0, max_steps=10, schedule="constant", min_lr_ratio=0.0) == 1.0
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_multiplier(1, warmup_steps=0, max_steps=10, schedule="step", min_lr_ratio=0.0)
