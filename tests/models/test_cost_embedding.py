"""train.cost_embedding_model: the fixed EMO cost embedding read from another model's head."""
from __future__ import annotations

import pytest
import torch

from emo_ray.config import load_config
from emo_ray.losses import get_loss
from emo_ray.models import load_model, materialize
from emo_ray.models.cost_embedding import load_other_head
from emo_ray.models.tiny import build_tiny
from emo_ray.train.objective import build_objective


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EMO_RAY_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def other_model(tmp_path):
    """Same byte vocabulary as tiny-llama, another hidden size and seed."""
    return str(build_tiny(tmp_path / "other", seed=7, hidden_size=32))


def _other_head(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).get_output_embeddings().weight.detach()


def test_reads_the_other_models_head_alone(other_model):
    head = load_other_head(other_model, vocab_size=257, dtype=torch.float32)
    assert head.shape == (257, 32) and not head.requires_grad
    assert torch.equal(head, _other_head(other_model))


def test_tied_head_is_read_from_the_input_embedding(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=257, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True)
    torch.manual_seed(3)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(tmp_path / "tied")
    head = load_other_head(str(tmp_path / "tied"), vocab_size=257, dtype=torch.float64)
    assert head.dtype == torch.float64
    assert torch.equal(head, model.get_input_embeddings().weight.detach().double())


def test_vocab_mismatch_names_both_sizes(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=300, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2)
    LlamaForCausalLM(cfg).save_pretrained(tmp_path / "v300")
    with pytest.raises(ValueError, match="vocab_size=300.*257"):
        load_other_head(str(tmp_path / "v300"), vocab_size=257, dtype=torch.float32)


@pytest.mark.parametrize("impl", ["reference", "chunked"])
def test_objective_uses_the_other_head_as_cost(other_model, impl):
    """The EMO term (the ``emo`` metric: mode 1's loss *value* is 2 MLE whatever E is) equals the
    float64 reference with the other model's head as E, and differs from the one with the trained
    model's own head."""
    cfg = load_config(None, ["train.loss=emo", f"train.loss_impl={impl}", f"train.cost_embedding_model={other_model}"])
    model, _ = load_model("tiny-llama")
    objective = build_objective(cfg, model)
    assert objective.cost_embedding_shape == (257, 32)
    ids = torch.randint(0, 257, (2, 16), generator=torch.Generator().manual_seed(0))
    got = objective.compute(model, ids).metrics["emo"]
    with torch.no_grad():
        logits = model(input_ids=ids).logits.double()
    ref = get_loss("emo", cost_embedding=_other_head(other_model).double())(logits, ids).metrics["emo"]
    own = get_loss("emo", cost_embedding=model.get_output_embeddings().weight.detach().double())(logits, ids).metrics["emo"]
    assert got == pytest.approx(ref, rel=1e-5)
    assert abs(ref - own) > 1e-3 * abs(ref)  # the test can tell the two heads apart


def test_objective_rejects_another_vocabulary(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    LlamaForCausalLM(LlamaConfig(vocab_size=300, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=2)).save_pretrained(tmp_path / "v300")
    cfg = load_config(None, ["train.loss=emo", f"train.cost_embedding_model={tmp_path / 'v300'}"])
    model, _ = load_model("tiny-llama")
    with pytest.raises(ValueError, match="vocab_size=300"):
        build_objective(cfg, model)
    assert materialize("tiny-llama")  # the trained model itself is untouched
