"""GPU placement on cluster.yaml's node types (issue 27.1), checked offline: which node type a
trial fits (the memory model), the accelerator it is pinned to, the concurrency per node type,
and what Ray Train, the trial drivers and the evaluation actors are asked for."""
from __future__ import annotations

import shutil

import pytest
import yaml

from emo_ray import placement
from emo_ray.placement import NodeType, PlacementError, concurrency, gpu_node_types, place
from emo_ray.sweep import load_sweep_config, trial_config, trials
from emo_ray.typed_config import REPO_ROOT


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load((REPO_ROOT / "cluster.yaml").read_text())


def _configs(name: str, overrides: list[str] | None = None) -> list:
    sweep = load_sweep_config(name, overrides)
    return [trial_config(sweep, t) for t in trials(sweep)]


def _by_model(configs, nodes) -> dict[str, str]:
    return {c.model.name: place(c, nodes).accelerator for c in configs}


def test_paper_trials_are_pinned_to_the_a100_nodes(cluster):
    nodes = gpu_node_types(cluster)
    assert {n.name: (n.gpus, n.accelerator) for n in nodes} == {"ray.worker.a100x8": (8, "A100"),
                                                               "ray.worker.a10gx4": (4, "A10G")}
    for cfg in _configs("paper"):
        p = place(cfg, nodes)
        assert p.accelerator == "A100" and [n.name for n in p.node_types] == ["ray.worker.a100x8"]
        assert 0 < p.estimate_gb < 0.9 * 42.9


def test_one_gpu_lora_trials_go_to_the_smallest_gpu_they_fit(cluster):
    """table3 (LoRA, fp16, one GPU): LLaMA-13B's 26 GB of frozen fp16 weights exceed an A10G's
    24 GB; LLaMA-7B fits it. 16 one-GPU trials at once on each type's nodes."""
    nodes = gpu_node_types(cluster)
    configs = _configs("table3")
    assert _by_model(configs, nodes) == {"llama-7b": "A10G", "llama-13b": "A100"}
    assert concurrency([place(c, nodes) for c in configs], cluster) == 4 * 4 + 2 * 8


def test_concurrency_counts_trials_per_node_and_shares_the_worker_budget():
    big, small = NodeType("big", 8, "A100", 42.9, 2), NodeType("small", 4, "A10G", 24.1, 5)
    four = placement.Placement("A100", (big, small), None, 4)
    assert concurrency([four], {"max_workers": 10}) == 2 * 2 + 5 * 1
    assert concurrency([four], {"max_workers": 3}) == 2 * 2 + 1 * 1  # the budget goes to the big nodes first
    eight = placement.Placement("A100", (big,), None, 8)
    assert concurrency([eight], {"max_workers": 10}) == 2  # the small nodes are not this trial's


def test_a_trial_that_fits_no_node_type_is_refused_early(cluster):
    nodes = gpu_node_types(cluster)
    (cfg, *_) = _configs("paper", ["train_overrides={ray: {num_workers: 16}}"])
    with pytest.raises(PlacementError, match="num_workers=16 needs 16 GPUs on one node"):
        place(cfg, nodes)
    (cfg13, *_) = [c for c in _configs("paper", ["train_overrides={model: {gradient_checkpointing: false}}"])
                   if c.model.name == "llama-13b"]
    with pytest.raises(PlacementError, match="GB per GPU"):  # ~41 GB: more than 90% of a 40 GB A100
        place(cfg13, nodes)


def test_a_gpu_node_type_must_name_its_accelerator(cluster):
    broken = yaml.safe_load(yaml.safe_dump(cluster))
    del broken["available_node_types"]["ray.worker.a10gx4"]["resources"]["accelerator_type:A10G"]
    with pytest.raises(PlacementError, match="ray.worker.a10gx4.*accelerator_type"):
        gpu_node_types(broken)


def test_ray_train_packs_a_gpu_run_on_one_node_of_its_accelerator(tmp_path):
    from emo_ray.train.launch import scaling_config

    bootstrap = tmp_path / "ray_bootstrap_config.yaml"
    shutil.copy(REPO_ROOT / "cluster.yaml", bootstrap)
    cfg = next(c for c in _configs("paper") if c.model.name == "llama-13b")
    sc = scaling_config(cfg, 8, str(bootstrap))
    assert sc.placement_strategy == "STRICT_PACK" and sc.accelerator_type == "A100"
    assert sc._resources_per_worker_not_none["accelerator_type:A100"] > 0  # what the placement group asks
    assert scaling_config(cfg, 8, str(tmp_path / "absent.yaml")).accelerator_type is None  # a laptop: no Ray node
    cpu = scaling_config(_configs("cpu-small")[0], 2, str(bootstrap))
    assert cpu.placement_strategy == "PACK" and cpu.accelerator_type is None


def test_a_trial_driver_on_a_gpu_worker_pins_its_run_to_that_nodes_accelerator(tmp_path, monkeypatch):
    """The autoscaler's config lives on the head; a Tune trial's driver runs on the GPU worker its
    bundle asked for, and pins its Ray Train workers to that node's accelerator type."""
    from emo_ray.train.launch import scaling_config

    monkeypatch.setattr(placement, "current_node_accelerator", lambda: "A10G")
    cfg = next(c for c in _configs("table3") if c.model.name == "llama-7b")
    assert scaling_config(cfg, 1, str(tmp_path / "absent.yaml")).accelerator_type == "A10G"


def test_trial_drivers_ask_for_their_trials_accelerator(cluster):
    from emo_ray.sweep.runner import trial_pins
    from emo_ray.sweep.spec import pretrained_trials

    sweep = load_sweep_config("table3")
    trained = trials(sweep)
    grid = trained + pretrained_trials(sweep)
    pins = trial_pins(grid, trained, [trial_config(sweep, t) for t in trained], cluster)
    assert set(pins) == {t.key for t in grid}
    for t in grid:
        want = "A100" if t.model == "llama-13b" else "A10G"
        assert list(pins[t.key]) == [f"accelerator_type:{want}"], t.key
    assert trial_pins(grid, trained, [trial_config(sweep, t) for t in trained], None) == {}


def test_evaluation_actors_ask_for_the_accelerator_of_their_drivers_node(monkeypatch):
    import ray

    from emo_ray.inference.executor import ExecutionConfig
    from emo_ray.inference.executor import actor_accelerator

    class Context:
        def get_node_id(self):
            return "n2"

    nodes = [{"NodeID": "n1", "Resources": {"GPU": 4.0, "accelerator_type:A10G": 1.0}},
             {"NodeID": "n2", "Resources": {"GPU": 8.0, "accelerator_type:A100": 1.0}}]
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "get_runtime_context", Context)
    monkeypatch.setattr(ray, "nodes", lambda: nodes)
    assert actor_accelerator(ExecutionConfig(gpus_per_actor=1.0)) == "A100"
    assert actor_accelerator(ExecutionConfig(gpus_per_actor=0.0)) is None
    nodes[1]["Resources"].pop("accelerator_type:A100")
    assert actor_accelerator(ExecutionConfig(gpus_per_actor=1.0)) is None
