"""Every training and evaluation stage keeps its tensors on the model's device.

Each stage's real code runs on the tiny random Llama under ``FakeCuda`` (tests/fake_accelerator.py):
tensors live in CPU memory but the model's say ``cuda:0``, and a torch call that mixes a device
tensor with a host tensor, or ``.numpy()`` on a device tensor, fails as it would on a GPU. So a
stage that builds its inputs with a bare ``torch.tensor(...)`` or reads results without
``.cpu()`` fails here, on CPU-only CI, instead of on the first GPU node (issue 13: the ICL scorer
did both, and failed with ``gpus_per_actor: 1``).

The evaluation stages are built as the executor builds them on a GPU node: the actor class with
``device="cuda"`` (``actor_kwargs`` of a config with ``gpus_per_actor: 1``), which loads through
``load_for_eval`` and moves the model with ``.to("cuda")``. The training stages run the objective
(reference and chunked loss, fixed and adaptive cost embedding) forward and backward on ids moved
with ``.to(engine.device)`` as the worker does, and the end-of-run validation on an engine that
reports ``cuda:0`` as DeepSpeed's does.

The check itself is checked: the same stages, deliberately broken (inputs on the host, a missing
``.cpu()`` before ``.numpy()``, training ids not moved to the engine's device), must fail; and
the HEAD scorer of issue 13 (host inputs, ``.numpy()`` on device outputs) failed it.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from tests.fake_accelerator import DeviceMismatch, FakeCuda, on_device


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_path() -> str:
    from emo_ray.models import materialize

    return materialize("tiny-llama")


def gpu_device_kwargs() -> dict:
    """What the executor passes to a stage actor on a GPU cluster (configs/eval/paper.yaml)."""
    from emo_ray.inference.executor import ExecutionConfig
    from emo_ray.inference.executor import actor_kwargs

    kw = actor_kwargs(ExecutionConfig(executor="ray", num_actors=1, gpus_per_actor=1, cpus_per_actor=1))
    assert kw["device"] == "cuda"
    return kw


# --- evaluation stages ---------------------------------------------------------------------------


def run_sampler(path):
    from emo_ray.inference.sampler import Sampler

    actor = Sampler(path, gen_tokens=5, **gpu_device_kwargs())
    batch = pd.DataFrame({
        "prompt_id": [0, 1, 2], "seed": [0, 0, 1],
        "decoder": ["ancestral", "top_p_0.95", "greedy"],
        "prefix_ids": [np.array([72, 101, 108, 108]), np.array([87, 111, 114, 108]), np.array([65, 66, 67, 68])],
    })
    out = actor(batch)
    assert len(out) == 3 and all(isinstance(g, np.ndarray) for g in out["gen_ids"])
    return actor.model


def run_featurizer(path, layer=-1, pooling="last"):
    from emo_ray.evaluation.featurize import Featurizer

    actor = Featurizer(path, pooling, max_tokens=16, layer=layer, **gpu_device_kwargs())
    out = actor(pd.DataFrame({"text": ["a short text", "a somewhat longer text than that"]}))
    feats = np.stack(out["features"])
    assert feats.dtype == np.float32 and np.isfinite(feats).all()
    return actor.model


def run_oracle(path):
    from emo_ray.evaluation.oracle_ppl import ContinuationNLL

    actor = ContinuationNLL(path, **gpu_device_kwargs())
    out = actor(pd.DataFrame({"prefix": ["The cat", ""], "continuation": [" sat on the mat", "hello there"]}))
    assert (out["n_tokens"] > 0).all() and np.isfinite(out["nll_sum"].astype(float)).all()
    return actor.model


def run_icl(path, scorer="shared_prefix"):
    from emo_ray.evaluation.icl.evaluate_task import ICLScorer

    actor = ICLScorer(path, scorer, batch_items=2, **gpu_device_kwargs())
    prompts = [["Review: good. It is positive.", "Review: good. It is negative."],
               ["Review: bad. It is positive.", "Review: bad. It is negative."],
               ["Q: 1+1? A: 2", "Q: 1+1? A: 3"]]
    out = actor(pd.DataFrame({"prompts": prompts}))
    assert all(np.isfinite(np.asarray(s)).all() for s in out["nll_sum"])
    return actor.model


EVAL_STAGES = {
    "generation.Sampler": run_sampler,
    "featurize.Featurizer (last layer, last-token pooling)": run_featurizer,
    "featurize.Featurizer (inner layer, mean pooling)": lambda p: run_featurizer(p, layer=-2, pooling="mean"),
    "oracle_ppl.ContinuationNLL": run_oracle,
    "icl.ICLScorer (shared_prefix scorer)": run_icl,
    "icl.ICLScorer (plain scorer)": lambda p: run_icl(p, "plain"),
    "icl.ICLScorer (rank_only scorer)": lambda p: run_icl(p, "rank_only"),
}


def _check_ran_on_device(model, dev: FakeCuda):
    """Inside the ``FakeCuda`` block: the model reports cuda:0 and the stage went through the check."""
    assert model.device == torch.device("cuda", 0)
    assert all(on_device(p) for p in model.parameters()), "the stage's model did not reach the device"
    assert dev.calls > 20, "the stage did not run through the device check"


@pytest.mark.parametrize("stage", list(EVAL_STAGES))
def test_evaluation_stage_keeps_tensors_on_the_model_device(stage, tiny_path):
    with FakeCuda() as dev:
        model = EVAL_STAGES[stage](tiny_path)
        _check_ran_on_device(model, dev)


# The bugs of issue 13, put back into each stage: the check must catch both.

def _host_inputs(monkeypatch):
    """Every stage builds its inputs on the host (a bare ``torch.tensor`` / ``pad_batch`` default)."""
    import emo_ray.evaluation.icl.scorer as scorer
    import emo_ray.models.loading as loading

    def host(model):
        return torch.device("cpu")

    monkeypatch.setattr(loading, "input_device", host)
    monkeypatch.setattr(scorer, "input_device", host, raising=False)


def _no_cpu_before_numpy(monkeypatch):
    """Results read on the host without ``.cpu()``: ``.cpu()`` becomes a no-op."""
    monkeypatch.setattr(torch.Tensor, "cpu", lambda self, *a, **k: self)


BREAKAGES = {"inputs built on the host": _host_inputs, "a missing .cpu() (numpy, host sampling)": _no_cpu_before_numpy}


# The oracle's chunked head (oracle_ppl.token_nll) writes each chunk into a host float64 buffer by
# ``copy_``, which is legal across devices: it has no ``.cpu()`` before numpy left to forget.
NOT_APPLICABLE = {("oracle_ppl.ContinuationNLL", "a missing .cpu() (numpy, host sampling)")}
BROKEN_CASES = [(s, b) for s in EVAL_STAGES for b in BREAKAGES if (s, b) not in NOT_APPLICABLE]


@pytest.mark.parametrize("stage, breakage", BROKEN_CASES)
def test_a_broken_evaluation_stage_fails_the_check(stage, breakage, tiny_path, monkeypatch):
    BREAKAGES[breakage](monkeypatch)
    with pytest.raises(DeviceMismatch), FakeCuda():
        EVAL_STAGES[stage](tiny_path)


def test_the_check_follows_cuda_rules():
    """Legal on a GPU passes, illegal fails: the rules, without any project code."""
    w = torch.randn(5, 3)
    with FakeCuda() as dev:
        w = w.to("cuda")
        assert w.device.type == "cuda" and w.is_cuda
        ids = torch.tensor([[1, 2]], device=w.device)
        h = torch.nn.functional.embedding(ids, w) * torch.tensor(2.0)  # host 0-dim: a scalar, allowed
        h.sum(-1).cpu().numpy()
        w[torch.tensor([0, 1])]  # host indices into a device tensor: allowed
        host = torch.zeros(2, 3)
        host[0] = w[0]  # a copy across devices: allowed
        float(h.sum()), h.tolist()
        for bad in (
            lambda: torch.nn.functional.embedding(torch.tensor([[1, 2]]), w),
            lambda: h.sum(-1).numpy(),
            lambda: np.asarray(h),
            lambda: w + torch.ones(5, 3),
            lambda: torch.cat([w, torch.ones(1, 3)]),
            lambda: torch.zeros(3).add_(w[0]),
            lambda: torch.multinomial(torch.softmax(w[0], -1), 1, generator=torch.Generator()),
            lambda: torch.ones(5)[torch.tensor([0], device="cuda")],
        ):
            with pytest.raises(DeviceMismatch):
                bad()
    assert dev.calls > 0


# --- training stages -----------------------------------------------------------------------------


class FakeEngine:
    """What ``_validate`` and the objective use of a DeepSpeed engine: ``device`` (DeepSpeed's is
    ``cuda:<local_rank>``), ``module``, ``__call__``, ``train``/``eval``."""

    def __init__(self, module):
        self.module = module

    @property
    def device(self):
        return torch.device("cuda", 0)

    def __call__(self, **kw):
        return self.module(**kw)

    def train(self):
        self.module.train()

    def eval(self):
        self.module.eval()


def _train_config(loss: str, impl: str, cost: str, zero_stage: int = 2):
    from emo_ray.config import load_config

    return load_config(None, [f"train.loss={loss}", f"train.loss_impl={impl}", f"train.cost_embedding={cost}",
                              f"train.zero_stage={zero_stage}", "train.loss_chunk_size=7"])


def run_objective(path, loss: str, impl: str, cost: str, move_ids: bool = True):
    """One micro-step as the worker runs it: model on the device, the objective built from it,
    ids moved with ``.to(engine.device)``, loss and backward, the loss read with ``.item()``."""
    from transformers import AutoModelForCausalLM

    from emo_ray.train.objective import build_objective

    cfg = _train_config(loss, impl, cost)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to("cuda")
    model.config.use_cache = False
    objective = build_objective(cfg, model)
    assert objective.chunked == (impl == "chunked")
    engine = FakeEngine(model)
    ids = torch.randint(0, 257, (2, 12), generator=torch.Generator().manual_seed(0))
    if move_ids:
        ids = ids.to(engine.device)
    out = objective.compute(engine, ids)
    out.loss.backward()
    assert np.isfinite(out.loss.item()) and out.n_tokens > 0
    assert model.get_output_embeddings().weight.grad is not None
    return model


def run_validation(path):
    from transformers import AutoModelForCausalLM

    from emo_ray.train.validation import validate

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to("cuda")
    blocks = np.random.default_rng(0).integers(0, 257, size=(5, 12))
    val = validate(FakeEngine(model), blocks, rank=0, world=1, micro_batch=2)
    assert np.isfinite(val["val_loss"]) and val["val_tokens"] == 5 * 11
    return model


TRAIN_STAGES = {
    **{f"objective {loss} {impl} {cost}": (lambda p, a=(loss, impl, cost): run_objective(p, *a))
       for loss in ("mle", "emo") for impl in ("reference", "chunked") for cost in ("fixed", "adaptive")
       if not (loss == "mle" and cost == "adaptive")},
    "objective tailr chunked": lambda p: run_objective(p, "tailr", "chunked", "fixed"),
    "validation.validate": run_validation,
}


@pytest.mark.parametrize("stage", list(TRAIN_STAGES))
def test_training_stage_keeps_tensors_on_the_model_device(stage, tiny_path):
    with FakeCuda() as dev:
        model = TRAIN_STAGES[stage](tiny_path)
        _check_ran_on_device(model, dev)


@pytest.mark.parametrize("impl", ["reference", "chunked"])
def test_ids_left_on_the_host_fail_the_check(impl, tiny_path):
    """The worker without its ``ids.to(engine.device)``."""
    with pytest.raises(DeviceMismatch), FakeCuda():
        run_objective(tiny_path, "emo", impl, "fixed", move_ids=False)


def test_validation_reading_without_cpu_fails_the_check(tiny_path, monkeypatch):
    _no_cpu_before_numpy(monkeypatch)
    with pytest.raises(DeviceMismatch), FakeCuda():
        run_validation(tiny_path)
