import pytest
import torch

from emo_ray.models import MODELS, fixed_cost_embedding, load_model, materialize
from tests.conftest import requires_smollm2


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EMO_RAY_CACHE", str(tmp_path / "cache"))


def test_tiny_model_builds_offline_and_is_cached(tmp_path):
    first = materialize("tiny-llama")
    assert materialize("tiny-llama") == first  # second call reuses the folder
    model, tok = load_model("tiny-llama")
    ids = tok("hello", return_tensors="pt").input_ids
    assert model(ids).logits.shape == (1, 5, len(tok))
    assert tok.decode(ids[0]) == "hello"


def test_local_folder_and_errors(tmp_path):
    folder = materialize("tiny-llama")
    assert materialize(folder) == folder
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        materialize(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="neither a registry name"):
        materialize("./no/such/model")


def test_hub_names_pass_through_untouched():
    assert materialize("opt-1.3b") == "facebook/opt-1.3b"  # resolved, not downloaded
    assert materialize("EleutherAI/pythia-70m") == "EleutherAI/pythia-70m"
    assert {"opt-1.3b", "opt-2.7b", "llama-7b", "llama-13b"} <= set(MODELS)


def test_fixed_cost_embedding_is_a_frozen_copy():
    model, _ = load_model("tiny-llama")
    E = fixed_cost_embedding(model)
    with torch.no_grad():
        model.lm_head.weight.add_(1.0)
    assert not torch.equal(E, model.lm_head.weight) and not E.requires_grad


@pytest.mark.realmodel
@requires_smollm2
def test_smollm2_converts_from_gguf_and_trains():
    model, tok = load_model("smollm2-135m")
    assert model.config.vocab_size == 49152 and len(tok) == 49152
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    out = model(ids, labels=ids)
    assert out.loss.item() < 6.0  # a real LM, not random init (ln V = 10.8)
    out.loss.backward()  # trainable: the GGUF-loaded model is not
    assert model.lm_head.weight.grad is not None
