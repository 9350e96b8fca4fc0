"""Where GPU work runs on an autoscaling cluster (issue 27.1): which node type of the autoscaler's
config a training run fits (the memory model of docs/memory_model.md), the accelerator type it is
pinned to, and how many such runs the cluster holds at once.

A run never spans nodes (cluster.yaml configures no EFA, so NCCL between nodes is TCP-only):
``ScalingConfig(placement_strategy="STRICT_PACK")`` puts all its workers on one node, and
``accelerator_type`` (Ray's ``accelerator_type:<type>`` resource, which cluster.yaml declares so
the autoscaler can plan before a node exists) keeps it off node types the memory model says it
does not fit. Concurrency is therefore counted per node type: trials per node x nodes of that
type, never GPUs summed over all types.
"""
from __future__ import annotations

import functools
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

from emo_ray.typed_config import ConfigError

ACCELERATOR_PREFIX = "accelerator_type:"
"""Ray's resource naming a node's GPU model (``ray.util.accelerators``); ``ray start`` adds
``accelerator_type:A100: 1`` on a p4d node by itself, cluster.yaml declares it for planning."""
AUTOSCALER_CONFIG = "~/ray_bootstrap_config.yaml"
"""Where ``ray up`` leaves the cluster config on the head node (what Ray's autoscaler reads)."""
MEMORY_MODEL = Path(__file__).resolve().parent.parent / "scripts" / "memory_model.py"


class PlacementError(ConfigError):
    """A GPU run fits no node type of the cluster (too many workers per node, or too little
    memory), or the cluster config does not say which GPUs a node type has: the CLI reports it
    as a config error, before any trial starts."""


@dataclass(frozen=True)
class NodeType:
    name: str
    gpus: int
    accelerator: str
    gpu_memory_gb: float
    max_nodes: int


@dataclass(frozen=True)
class Placement:
    accelerator: str | None
    """The accelerator type the run is pinned to; None: any GPU node with enough GPUs (a model
    the memory model does not know)."""
    node_types: tuple[NodeType, ...]
    """The node types the run may land on."""
    estimate_gb: float | None
    """Peak per-GPU memory of one rank (memory model), when modelled."""
    workers: int


@functools.lru_cache(maxsize=1)
def memory_model():
    """scripts/memory_model.py (docs/memory_model.md) as a module: the one memory model, shared
    with the document and its test rather than copied here."""
    if not MEMORY_MODEL.exists():
        raise FileNotFoundError(f"the memory model {MEMORY_MODEL} is missing (placement needs a source checkout)")
    spec = importlib.util.spec_from_file_location("memory_model", MEMORY_MODEL)
    module = importlib.util.module_from_spec(spec)
    sys.modules["memory_model"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def read_cluster_config(path: str | Path | None = AUTOSCALER_CONFIG) -> dict | None:
    """The autoscaler's cluster config (a ``ray up`` YAML), or None when there is none here."""
    import yaml

    p = Path(path).expanduser() if path else None
    if p is None or not p.exists():
        return None
    return yaml.safe_load(p.read_text()) or {}


def gpu_node_types(conf: dict) -> list[NodeType]:
    """The GPU worker types of a cluster config, with their accelerator type (declared as an
    ``accelerator_type:*`` resource) and per-GPU memory (the memory model's instance table)."""
    mm, out = memory_model(), []
    for name, t in (conf.get("available_node_types") or {}).items():
        res = t.get("resources") or {}
        if not res.get("GPU") or name == conf.get("head_node_type"):
            continue
        accelerators = [k[len(ACCELERATOR_PREFIX):] for k in res if k.startswith(ACCELERATOR_PREFIX)]
        if len(accelerators) != 1:
            raise PlacementError(f"node type {name!r} must declare exactly one {ACCELERATOR_PREFIX}<type> resource "
                                 f"(e.g. '{ACCELERATOR_PREFIX}A100': 1), found {accelerators or 'none'}")
        instance = (t.get("node_config") or {}).get("InstanceType", "")
        if instance not in mm.INSTANCE_GPUS:
            raise PlacementError(f"node type {name!r}: instance type {instance!r} has no GPU entry in "
                                 f"INSTANCE_GPUS ({MEMORY_MODEL.name})")
        out.append(NodeType(name, int(res["GPU"]), accelerators[0], mm.INSTANCE_GPUS[instance].memory_gb,
                            int(t.get("max_workers", 0) or 0)))
    return out


def estimate_gb(cfg) -> float | None:
    """Per-GPU peak of one training rank of ``cfg`` (memory model), None for a model it lacks.
    LoRA freezes the base weights: the full-fine-tuning states (16 B/param) become the weights
    in the training precision, the adapters' states are negligible."""
    mm = memory_model()
    if cfg.model.name not in mm.ARCHS:
        return None
    e = mm.estimate_config(cfg)
    if cfg.train.lora.rank > 0:
        weights = mm.ARCHS[cfg.model.name].n_params * (4 if cfg.train.precision == "fp32" else 2) / mm.GB
        return weights + e.activations + e.loss + e.runtime
    return e.total


def _fits(need_gb: float | None, workers: int, node: NodeType) -> bool:
    headroom = memory_model().HEADROOM
    return workers <= node.gpus and (need_gb is None or need_gb <= headroom * node.gpu_memory_gb)


def place(cfg, nodes: list[NodeType]) -> Placement:
    """The node types a GPU training run of ``cfg`` fits. Pinned to the accelerator with the least
    memory that fits (the cheapest node that holds it); unpinned when the model is not modelled."""
    w, need = cfg.ray.num_workers, estimate_gb(cfg)
    fitting = [n for n in nodes if _fits(need, w, n)]
    if not fitting:
        have = ", ".join(f"{n.name} ({n.gpus}x {n.accelerator} {n.gpu_memory_gb:.1f} GB)" for n in nodes) or "none"
        need_s = "" if need is None else f" and ~{need:.1f} GB per GPU (memory model)"
        raise PlacementError(f"{cfg.model.name} with ray.num_workers={w} needs {w} GPUs on one node{need_s}; "
                             f"the cluster's GPU node types: {have}")
    if need is None:
        return Placement(None, tuple(fitting), None, w)
    accelerator = min(fitting, key=lambda n: n.gpu_memory_gb).accelerator
    return Placement(accelerator, tuple(n for n in fitting if n.accelerator == accelerator), need, w)


def concurrency(placements: list[Placement], conf: dict) -> int:
    """Runs at once: per node type, (GPUs // workers) runs per node x the nodes the autoscaler may
    launch of that type, the cluster's ``max_workers`` budget going to the largest GPU nodes first."""
    left = conf.get("max_workers")
    left = float("inf") if left is None else int(left)
    used = {}
    for p in placements:
        for n in p.node_types:
            used[n] = min(used.get(n, p.workers), p.workers)
    total = 0
    for node in sorted(used, key=lambda n: -n.gpus):
        count = min(node.max_nodes, left)
        left -= count
        total += int(count) * (node.gpus // used[node])
    return max(1, total)


def trial_accelerator(cfg, cluster_config: str | Path | None = AUTOSCALER_CONFIG) -> str | None:
    """The accelerator type a GPU training run is pinned to. On the head node (``emo-ray train``
    through the Jobs API) the autoscaler's config is there and the memory model chooses. A sweep
    trial's driver runs on a GPU worker, which has no such file, but runs there because its
    bundle asked for the accelerator the runner chose (``sweep.runner.trial_pins``): the node's
    own type. None on a laptop or a static cluster without GPUs, or for an unmodelled model."""
    if not cfg.ray.use_gpu:
        return None
    conf = read_cluster_config(cluster_config)
    if conf is None:
        return current_node_accelerator()
    return place(cfg, gpu_node_types(conf)).accelerator


def current_node_accelerator() -> str | None:
    """The accelerator type of the node this process runs on (a sweep trial's driver is pinned to
    its training node type), so that its evaluation actors ask for the same GPUs."""
    import ray

    if not ray.is_initialized():
        return None
    node_id = ray.get_runtime_context().get_node_id()
    for node in ray.nodes():
        if node.get("NodeID") == node_id:
            found = [k[len(ACCELERATOR_PREFIX):] for k in node.get("Resources", {}) if k.startswith(ACCELERATOR_PREFIX)]
            return found[0] if len(found) == 1 else None
    return None
