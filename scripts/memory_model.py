#!/usr/bin/env python
"""Per-GPU memory of the paper sweep on the node types cluster.yaml ships (docs/memory_model.md).

    python scripts/memory_model.py            # the fit table of docs/memory_model.md
    python scripts/memory_model.py --check    # exit 1 if a paper-sweep model fits no node type

A back-of-the-envelope model in GB (1e9 bytes), from each trial's resolved training config
(``configs/sweeps/paper.yaml`` -> ``configs/paper_cluster.yaml``): world size, micro-batch, block
size, ZeRO stage, gradient checkpointing, loss path. The formulas and their assumptions are
spelled out in docs/memory_model.md; ``tests/test_memory_model.py`` holds the document's table to
this script and the script to cluster.yaml.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GB = 1e9


@dataclass(frozen=True)
class Gpu:
    name: str
    count: int
    memory_gb: float
    """Total device memory as nvidia-smi reports it, in GB (1e9 bytes)."""
    nominal: str
    """How AWS and NVIDIA name it ("A100 40 GB"): what cluster.yaml's comments and the docs say."""


# GPU workers by EC2 instance type (AWS instance-type pages; nvidia-smi totals in MiB x 2^20).
INSTANCE_GPUS: dict[str, Gpu] = {
    "p4d.24xlarge": Gpu("A100-SXM4-40GB", 8, 40960 * 2**20 / GB, "A100 40 GB"),   # 42.9
    "p4de.24xlarge": Gpu("A100-SXM4-80GB", 8, 81920 * 2**20 / GB, "A100 80 GB"),  # 85.9
    "g5.12xlarge": Gpu("A10G", 4, 23028 * 2**20 / GB, "A10G 24 GB"),              # 24.1
    "g5.48xlarge": Gpu("A10G", 8, 23028 * 2**20 / GB, "A10G 24 GB"),
}

HEADROOM = 0.90
"""A trial fits when the estimate is at most this fraction of the GPU's memory: what the model
leaves out (allocator fragmentation, NCCL's own buffers, kernels' workspaces) lives in the rest."""


@dataclass(frozen=True)
class Arch:
    layers: int
    d: int
    ffn: int
    vocab: int
    glu: bool  # SwiGLU MLP (LLaMA: gate, up, down) vs ReLU/GELU (OPT: fc1, fc2)
    tied: bool  # output head shares the input embedding
    positions: int = 0  # learned position embeddings (OPT: 2048 + 2)

    @property
    def n_params(self) -> float:
        d, f, L, V = self.d, self.ffn, self.layers, self.vocab
        if self.glu:  # LLaMA: q k v o without bias, 3 MLP matrices, 2 RMSNorms
            layer = 4 * d * d + 3 * d * f + 2 * d
        else:  # OPT: q k v o with bias, fc1 fc2 with bias, 2 LayerNorms
            layer = 4 * d * d + 4 * d + 2 * d * f + f + d + 4 * d
        return L * layer + V * d * (1 if self.tied else 2) + self.positions * d + 2 * d

    @property
    def act_elements_per_token_layer(self) -> int:
        """Elements one layer saves for backward per token (bf16): residual input, norm output,
        q, k, v, attention output, second residual and norm (8d), and the MLP's inputs of each
        matrix and non-linearity (SwiGLU: gate, up, silu(gate), product = 4f; ReLU: fc1, relu =
        2f). SDPA's flash / memory-efficient kernels (bf16 on A100 / A10G) keep no s x s scores."""
        return 8 * self.d + (4 if self.glu else 2) * self.ffn


# The paper's scale axis (emo_ray.models.registry names), from the models' config.json on the hub.
ARCHS: dict[str, Arch] = {
    "opt-1.3b": Arch(layers=24, d=2048, ffn=8192, vocab=50272, glu=False, tied=True, positions=2050),
    "opt-2.7b": Arch(layers=32, d=2560, ffn=10240, vocab=50272, glu=False, tied=True, positions=2050),
    "llama-7b": Arch(layers=32, d=4096, ffn=11008, vocab=32000, glu=True, tied=False),
    "llama-13b": Arch(layers=40, d=5120, ffn=13824, vocab=32000, glu=True, tied=False),
}

# DeepSpeed 0.19 ZeRO defaults (the project's deepspeed_config sets none of them).
REDUCE_BUCKET = 5e8
ALLGATHER_BUCKET = 5e8
MAX_LIVE_PARAMETERS = 1e9
SUB_GROUP_SIZE = 1e9

CUDA_CONTEXT_GB = 1.0
"""Per process on its GPU before any tensor: the CUDA context with the loaded kernel images of
torch, cuBLAS / cuBLASLt (and their workspaces) and DeepSpeed (~0.5-1 GB on an A100 under CUDA 12;
counted at the top). An evaluation actor pays this alone."""

NCCL_GB = 1.0
"""Per training rank of a multi-GPU run: NCCL communicators and their channel buffers
(``NCCL_BUFFSIZE`` 4 MiB per peer and channel, up to 32 channels on NVSwitch) for the world group
and ZeRO's collectives. The data loader's pinned batches live in host memory: not counted."""


def runtime_gb(world: int) -> float:
    """The runtime term of one rank: CUDA context, plus NCCL when the run has more than one rank."""
    return CUDA_CONTEXT_GB + (NCCL_GB if world > 1 else 0.0)


REFERENCE_LOSS_BYTES = 24
"""Bytes per (token, vocabulary entry) of the materialised loss layer at its peak (backward):
bf16 logits and their shifted copy (2 + 2), fp32 log-probabilities and q = exp(log p) saved for
backward (4 + 4), and the fp32 gradients of both plus the bf16 dlogits in backward (4 + 4 + 2),
rounded up for the one-hot / gather transients."""


@dataclass(frozen=True)
class Estimate:
    model: str
    world: int
    micro_batch: int
    block_size: int
    zero_stage: int
    checkpointing: bool
    chunked: bool
    states: float
    buffers: float
    activations: float
    loss: float
    runtime: float
    step_peak: float

    @property
    def total(self) -> float:
        return max(self.states + self.buffers + self.activations + self.loss + self.runtime, self.step_peak)

    def fits(self, gpu: Gpu) -> bool:
        return self.world <= gpu.count and self.total <= HEADROOM * gpu.memory_gb


def chunk_temporaries(a: Arch, C: int) -> float:
    """Bytes the chunked loss allocates beside its buffers (emo_ray/losses/chunked.py): each
    chunk's bf16 head-gradient partial ``dz.t() @ h`` before it is summed into the fp32
    accumulator (V x d x 2 B), the accumulator's cast to the head's dtype in backward (V x d x 2 B),
    and the chunk's gathered hidden states (bf16) and cost-embedding rows (fp32), C x d x 6 B."""
    return 2 * a.vocab * a.d * 2 + C * a.d * (2 + 4)


def estimate(model: str, *, world: int, micro_batch: int, block_size: int, zero_stage: int,
             checkpointing: bool, chunked: bool, cost_embedding: bool = True, chunk_size: int = 1024) -> Estimate:
    """Per-GPU GB of one training rank, bf16 mixed precision with DeepSpeed's Adam."""
    a = ARCHS[model]
    P, W, L, d, V = a.n_params, world, a.layers, a.d, a.vocab
    N = micro_batch * block_size  # tokens per GPU per micro-step
    # Model states: bf16 params (2) and grads (2), fp32 master, Adam m and v (12), by stage.
    states = {0: 16 * P, 1: 4 * P + 12 * P / W, 2: 2 * P + 14 * P / W, 3: 16 * P / W}[zero_stage]
    if zero_stage == 3:
        # gathered parameters in flight + the gradient reduce bucket (bf16) and the flattened
        # copy of it that reduce-scatter sends (DeepSpeed 0.19 stage3 ``__avg_scatter_grads``)
        buffers = 2 * min(MAX_LIVE_PARAMETERS, P) + 2 * 2 * min(REDUCE_BUCKET, P)
        # optimizer step: one sub-group's gradient flattened (bf16) and cast to fp32
        step = states + 6 * min(SUB_GROUP_SIZE, P / W)
    else:
        buffers = 2 * min(REDUCE_BUCKET, P) + (2 * min(ALLGATHER_BUCKET, P) if zero_stage else 0)
        step = states + buffers
    per_layer = N * a.act_elements_per_token_layer * 2
    if checkpointing:  # each layer's input is kept, one layer is recomputed at a time
        activations = N * d * 2 * L + per_layer
    else:
        activations = per_layer * L
    activations += N * d * 2 * 2  # embedding output and final norm
    cost = (V * d * 4 + V * d * 2) if cost_embedding else 0.0  # normalised fp32 E, the fixed bf16 copy
    if chunked:  # chunk-sized buffers + fp32 head-gradient accumulator (docs/memory_model.md 2.3)
        C = min(chunk_size, N)
        loss = C * V * (2 + 4 + 4) + V * d * 4 + N * d * 2 + cost + chunk_temporaries(a, C)
    else:
        loss = REFERENCE_LOSS_BYTES * N * V + cost
    return Estimate(model, W, micro_batch, block_size, zero_stage, checkpointing, chunked,
                    states / GB, buffers / GB, activations / GB, loss / GB, runtime_gb(W), step / GB)


def estimate_config(cfg) -> Estimate:
    """The estimate of a resolved training ``Config`` (emo_ray.config), on the path the trainer
    takes: ``train.loss_impl=auto`` runs the chunked loss at every ZeRO stage for an objective
    that has a chunked form."""
    from emo_ray.losses import get_spec, has_chunked_form

    t = cfg.train
    # emo_ray.train.objective.chunked_is_exact: a plain linear head (OPT's and LLaMA's are), a
    # loss with a chunked form, and not fp16 (the chunked kernel would round the logit gradient
    # to fp16 before the loss scale reaches it): fp16 runs the materialised (reference) loss and
    # holds its logits. Under ZeRO-3 the chunk loop runs as the head's own forward.
    chunked = t.precision != "fp16" and (t.loss_impl == "chunked" or (t.loss_impl == "auto" and has_chunked_form(t.loss)))
    return estimate(cfg.model.name, world=cfg.ray.num_workers, micro_batch=t.micro_batch_size,
                    block_size=cfg.data.block_size, zero_stage=t.zero_stage,
                    checkpointing=cfg.model.gradient_checkpointing, chunked=chunked,
                    cost_embedding=get_spec(t.loss).needs_cost_embedding, chunk_size=t.loss_chunk_size)


def with_workers(cfg, n: int):
    import dataclasses

    return dataclasses.replace(cfg, ray=dataclasses.replace(cfg.ray, num_workers=n))


def eval_weights_gb(model: str, bytes_per_param: int) -> float:
    """An evaluation actor holds the whole model on its one GPU (no sharding)."""
    return ARCHS[model].n_params * bytes_per_param / GB


@dataclass(frozen=True)
class EvalEstimate:
    """Per-GPU GB of one evaluation actor at its peak, the ICL scorer's prefix pass
    (emo_ray/evaluation/icl/scorer.py): ``batch_tokens`` padded tokens in one forward pass."""

    weights: float
    kv_cache: float
    logits: float
    runtime: float

    @property
    def total(self) -> float:
        return self.weights + self.kv_cache + self.logits + self.runtime

    def fits(self, gpu: Gpu) -> bool:
        return self.total <= HEADROOM * gpu.memory_gb


def eval_estimate(model: str, bytes_per_param: int, batch_tokens: int | None = None) -> EvalEstimate:
    """Weights in the evaluation dtype with the output head kept fp32 (``load_for_eval``), the
    prefix pass's KV cache (keys and values of every layer, bf16 at 2 B/param, else 4 B) and its
    fp32 logits and log-probabilities (8 B per token and vocabulary entry), the CUDA context."""
    from emo_ray.evaluation.icl.scorer import BATCH_TOKENS

    a, T = ARCHS[model], batch_tokens or BATCH_TOKENS
    head_fp32 = a.vocab * a.d * (4 - bytes_per_param) if not a.tied else 0.0
    weights = a.n_params * bytes_per_param + head_fp32
    kv = T * a.layers * 2 * a.d * bytes_per_param
    logits = T * a.vocab * (4 + 4)
    return EvalEstimate(weights / GB, kv / GB, logits / GB, CUDA_CONTEXT_GB)


def cluster_gpu_nodes(path: Path = ROOT / "cluster.yaml") -> dict[str, tuple[str, Gpu]]:
    """GPU worker types of cluster.yaml -> (instance type, its GPUs); checks the declared GPU count."""
    import yaml

    config = yaml.safe_load(Path(path).read_text())
    out = {}
    for name, t in config["available_node_types"].items():
        gpus = t.get("resources", {}).get("GPU", 0)
        if not gpus:
            continue
        instance = t["node_config"]["InstanceType"]
        if instance not in INSTANCE_GPUS:
            raise KeyError(f"{name}: no GPU entry for {instance} in INSTANCE_GPUS (scripts/memory_model.py)")
        gpu = INSTANCE_GPUS[instance]
        if gpus != gpu.count:
            raise ValueError(f"{name}: resources declare {gpus} GPUs, {instance} has {gpu.count}")
        out[name] = (instance, gpu)
    return out


def paper_trial_configs(sweep: str = "paper") -> dict:
    """One resolved training config per model of the sweep (the objective with the largest loss
    layer, EMO, at the largest data volume)."""
    from emo_ray import typed_config
    from emo_ray.losses import get_spec
    from emo_ray.sweep.spec import SweepConfig, sweep_config_path, trial_config, trials

    # The sweep's training side only (trial_config validates each trial's training config); the
    # evaluation config is not needed here, nor the ICL data it checks for.
    spec = typed_config.build(SweepConfig, typed_config.load_tree(sweep_config_path(sweep), None, None), "sweep")
    out = {}
    for t in trials(spec):
        if t.model not in out or get_spec(t.loss).needs_cost_embedding:  # any EMO variant
            out[t.model] = trial_config(spec, t)
    return out


def eval_bytes_per_param(eval_config: str = "configs/eval/paper.yaml") -> int:
    """Bytes per weight of an evaluation actor on the cluster's GPUs: ``execution.dtype`` of the
    paper evaluation, with ``auto`` resolved as on an A100 / A10G (both have bf16). The output head
    stays fp32 in bf16 (V x d, well under 1% of these models): not counted."""
    from emo_ray.evaluation.config import load_eval_config

    dtype = load_eval_config(eval_config).execution.dtype
    return 4 if dtype == "fp32" else 2


def fit_table(sweep: str = "paper") -> str:
    """The markdown table of docs/memory_model.md ("Fit on cluster.yaml's node types")."""
    nodes = cluster_gpu_nodes()
    configs = paper_trial_configs(sweep)
    ev = eval_bytes_per_param()
    head = ["model", "params", "states", "buffers", "activations", "loss", "runtime", "**train total**"]
    head += [f"fits {n} ({g.count}x {g.memory_gb:.1f} GB)" for n, (_, g) in nodes.items()]
    head += [f"eval actor: weights ({ev} B/param) + ICL KV cache + logits + context"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for model, cfg in configs.items():
        e = estimate_config(cfg)
        cells = [f"`{model}`", f"{ARCHS[model].n_params / 1e9:.2f}B", f"{e.states:.1f}", f"{e.buffers:.1f}",
                 f"{e.activations:.1f}", f"{e.loss:.1f}", f"{e.runtime:.1f}", f"**{e.total:.1f}**"]
        for _, (_, gpu) in nodes.items():
            if e.world > gpu.count:  # one trial per node: what ray.num_workers=<GPUs> would need
                alt = estimate_config(with_workers(cfg, gpu.count))
                cells.append(f"no ({e.world} workers); with `ray.num_workers={gpu.count}`: "
                             f"{'yes' if alt.fits(gpu) else 'no'} ({alt.total:.1f} GB, {100 * alt.total / gpu.memory_gb:.0f}%)")
            else:
                cells.append(f"{'yes' if e.fits(gpu) else 'no'} ({100 * e.total / gpu.memory_gb:.0f}%)")
        v = eval_estimate(model, ev)
        fits = [n for n, (_, g) in nodes.items() if v.fits(g)]
        cells.append(f"{v.weights:.1f} + {v.kv_cache:.1f} + {v.logits:.1f} + {v.runtime:.1f} = {v.total:.1f} GB: "
                     f"{', '.join(fits) if fits else 'fits no GPU node'}")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", default="paper")
    parser.add_argument("--check", action="store_true", help="exit 1 if a model fits no GPU node type")
    args = parser.parse_args(argv)
    print(fit_table(args.sweep))
    if args.check:
        nodes = cluster_gpu_nodes()
        bad = [m for m, cfg in paper_trial_configs(args.sweep).items()
               if not any(estimate_config(cfg).fits(g) for _, g in nodes.values())]
        if bad:
            print(f"fits no GPU node type of cluster.yaml: {bad}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
