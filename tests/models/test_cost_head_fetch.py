"""train.cost_embedding_model on a hub repo (issue 27.6): the driver fetches only config.json and
the safetensors shard holding the head, once; a gated repo is one ConfigError naming the token file."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from emo_ray.config import load_config
from emo_ray.models.cost_embedding import load_other_head
from emo_ray.models.tiny import build_tiny
from emo_ray.typed_config import ConfigError

REPO = "someorg/big-model"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EMO_RAY_CACHE", str(tmp_path / "cache"))
    # The fake hub answers through hf_hub_download only: materialize's own "is the hub id available"
    # probe (tests/reliability/test_early_checks.py) would ask the real, unreachable hub.
    monkeypatch.setattr("emo_ray.models.loading._check_hub_model", lambda *a, **k: None)


@pytest.fixture
def sharded_hub(tmp_path):
    """A hub repo of a tiny model in two shards, the head in the second."""
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    model_dir = build_tiny(tmp_path / "src", seed=7, hidden_size=32)
    state = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).state_dict()
    repo = tmp_path / "hub"
    repo.mkdir()
    shutil.copy(Path(model_dir) / "config.json", repo / "config.json")
    body = {k: v.contiguous() for k, v in state.items() if k != "lm_head.weight"}
    save_file(body, str(repo / "model-00001-of-00002.safetensors"))
    save_file({"lm_head.weight": state["lm_head.weight"].contiguous()}, str(repo / "model-00002-of-00002.safetensors"))
    weight_map = {k: "model-00001-of-00002.safetensors" for k in body}
    weight_map["lm_head.weight"] = "model-00002-of-00002.safetensors"
    (repo / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return repo, state["lm_head.weight"]


def _fake_download(repo_dir, fetched, error=None):
    def hf_hub_download(repo_id, filename, *, local_dir=None, **_):
        if error is not None:
            raise error
        assert repo_id == REPO
        fetched.append(filename)
        Path(local_dir).mkdir(parents=True, exist_ok=True)
        return shutil.copy(repo_dir / filename, Path(local_dir) / filename)
    return hf_hub_download


def _cfg(name):
    return load_config(None, ["train.loss=emo", f"train.cost_embedding_model={name}"])


def test_driver_fetches_only_config_index_and_the_heads_shard_once(sharded_hub, monkeypatch):
    import huggingface_hub

    from emo_ray.models import materialize
    from emo_ray.train.prepare import _check_cost_embedding_model

    repo, head = sharded_hub
    fetched = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _fake_download(repo, fetched))
    cfg = _cfg(REPO)
    path = _check_cost_embedding_model(cfg, materialize(cfg.model.name))
    assert sorted(fetched) == ["config.json", "model-00002-of-00002.safetensors", "model.safetensors.index.json"]
    assert torch.equal(load_other_head(path, vocab_size=257, dtype=torch.float32), head)
    assert _check_cost_embedding_model(cfg, materialize(cfg.model.name)) == path
    assert len(fetched) == 3  # cached: the second trial's driver downloads nothing


def _hub_error(cls, status):
    import httpx2

    response = httpx2.Response(status, request=httpx2.Request("GET", f"https://huggingface.co/{REPO}"))
    return cls("hub said no", response=response)


@pytest.mark.parametrize("error,status,says", [("GatedRepoError", 403, "is gated"),
                                                ("RepositoryNotFoundError", 401, "no such model")])
def test_gated_or_unknown_repo_is_one_config_error_naming_the_token_file(monkeypatch, error, status, says):
    import huggingface_hub
    from huggingface_hub import constants, errors

    from emo_ray.models import materialize
    from emo_ray.train.prepare import _check_cost_embedding_model

    failing = _fake_download(None, [], error=_hub_error(getattr(errors, error), status))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", failing)
    cfg = _cfg(REPO)
    with pytest.raises(ConfigError, match=says) as info:
        _check_cost_embedding_model(cfg, materialize(cfg.model.name))
    message = str(info.value)
    assert str(constants.HF_TOKEN_PATH) in message and message.startswith("train.cost_embedding_model")
    assert "\n" not in message and info.value.__cause__ is None  # one line, no hub traceback


def test_unsharded_repo_fetches_its_single_file(sharded_hub, tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import RemoteEntryNotFoundError
    from safetensors.torch import load_file, save_file

    from emo_ray.models.cost_embedding import fetch_cost_head

    repo, head = sharded_hub
    single = tmp_path / "single"
    single.mkdir()
    shutil.copy(repo / "config.json", single / "config.json")
    tensors = {**load_file(str(repo / "model-00001-of-00002.safetensors")), "lm_head.weight": head.contiguous()}
    save_file(tensors, str(single / "model.safetensors"))
    fetched, serve = [], _fake_download(single, [])

    def download(repo_id, filename, **kw):
        if filename == "model.safetensors.index.json":
            raise _hub_error(RemoteEntryNotFoundError, 404)
        fetched.append(filename)
        return serve(repo_id, filename, **kw)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    path = fetch_cost_head(REPO)
    assert fetched == ["config.json", "model.safetensors"]
    assert torch.equal(load_other_head(path, vocab_size=257, dtype=torch.float32), head)
