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


def fake_hub_cache(root, repo: str) -> None:
    """The Hugging Face cache layout of ``repo`` holding only its config.json."""
    base = root / f"models--{repo.replace('/', '--')}"
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text("0" * 40)
    (base / "snapshots" / ("0" * 40)).mkdir(parents=True)
    (base / "snapshots" / ("0" * 40) / "config.json").write_text("{}")


def test_cached_hub_names_pass_through_untouched(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # never the network here
    for repo in ("facebook/opt-1.3b", "EleutherAI/pythia-70m"):
        fake_hub_cache(tmp_path / "hub", repo)
    assert materialize("opt-1.3b") == "facebook/opt-1.3b"  # resolved, not downloaded
    assert materialize("EleutherAI/pythia-70m") == "EleutherAI/pythia-70m"
    assert {"opt-1.3b", "opt-2.7b", "llama-7b", "llama-13b"} <= set(MODELS)
    with pytest.raises(FileNotFoundError, match=r"model 'EleutherAI/pythia-160m' is not available offline.*HF_HUB_OFFLINE"):
        materialize("EleutherAI/pythia-160m")


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


def test_load_for_eval_sets_mode_dtype_pad_and_padding_side():
    from emo_ray.models.loading import EVAL_DTYPE, input_device, load_for_eval

    model, tok = load_for_eval("tiny-llama")
    assert not model.training and tok.pad_token is not None and tok.padding_side == "right"
    assert {p.dtype for p in model.parameters()} == {EVAL_DTYPE} == {torch.float32}
    assert input_device(model) == torch.device("cpu")
    model, tok = load_for_eval("tiny-llama", "cpu", dtype=torch.float64, padding_side="left")
    assert {p.dtype for p in model.parameters()} == {torch.float64} and tok.padding_side == "left"


def test_pad_batch_right_and_left():
    from emo_ray.models.loading import pad_batch

    ids, mask = pad_batch([[5, 6, 7], [8]], side="right")
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    ids, mask = pad_batch([[5, 6, 7], [8]], side="left", pad_id=9)
    assert ids.tolist() == [[5, 6, 7], [9, 9, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert ids.dtype == mask.dtype == torch.long
    with pytest.raises(ValueError, match="side must be"):
        pad_batch([[1]], side="middle")
