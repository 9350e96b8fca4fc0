"""One typed config for a fine-tuning run: frozen dataclasses, YAML plus ``key=value`` overrides.

Unknown keys and wrong types fail at load time with the valid choices named. The tree becomes a
flat dict only at the MLflow boundary and in stored records (``to_flat`` / ``from_flat``); a Ray
Train worker receives the typed config itself inside its ``WorkerInputs`` record.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from emo_ray import typed_config
from emo_ray.bounds import Bounds
from emo_ray.plugins import import_plugins
from emo_ray.typed_config import ConfigError


@dataclass(frozen=True)
class ModelConfig:
    name: str = "tiny-llama"
    """Registry name (see ``emo_ray.models.MODELS``), Hugging Face hub id, or local folder."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward: less memory, ~30% more compute."""


@dataclass(frozen=True)
class DataConfig:
    train: str = "${EMO_RAY_DATA}/wikitext-2/train_partial.jsonl"
    """JSON Lines or text file(s) (comma-separated), a folder of them, or ``hf:NAME[:CONFIG]:SPLIT``."""
    validation: str = ""
    """Same forms as ``train``; empty holds out ``validation_fraction`` of the train documents."""
    text_field: str = "text"
    """JSON key holding the text."""
    block_size: Annotated[int, Bounds(ge=2)] = 256
    """Tokens per packed training block (official EMO scripts: 256)."""
    validation_fraction: Annotated[float, Bounds(ge=0, lt=1)] = 0.05
    max_train_tokens: Annotated[int, Bounds(ge=0, note="0 = all")] = 0
    """Data-volume knob: use only this many training tokens (0 = all). Seeded and nested: the
    subset for a smaller volume is a prefix of the one for a larger volume."""
    max_train_documents: Annotated[int, Bounds(ge=0, note="0 = all")] = 0
    """The same knob counted in documents (0 = all); applied before ``max_train_tokens``."""
    max_validation_blocks: Annotated[int, Bounds(ge=0, note="0 = all")] = 64
    """Cap on validation blocks scored at the end (0 = all)."""
    seed: Annotated[int, Bounds(ge=0)] = 0
    """Seed of the document order (and so of the subsets and the validation hold-out)."""
    format: Literal["text", "instruction"] = "text"
    """``text``: every token of every document is a target. ``instruction``: JSON Lines (or hub)
    rows of prompt/response data (Alpaca layout, paper appendix C): each row becomes the prompt
    (``prompt_template`` filled with ``instruction_field`` and, if present, ``input_field``)
    followed by ``output_field`` and EOS, and only the response and EOS are trained; every
    objective and the validation loss skip the prompt tokens."""
    instruction_field: str = "instruction"
    """``format=instruction``: JSON key of the instruction (required, a non-empty string)."""
    input_field: str = "input"
    """``format=instruction``: JSON key of the optional context (missing or empty: no input)."""
    output_field: str = "output"
    """``format=instruction``: JSON key of the response (required, a string)."""
    prompt_template: Literal["alpaca"] = "alpaca"
    """``format=instruction``: the prompt wording; ``alpaca`` is Stanford Alpaca's two
    templates, with and without an input (``emo_ray.data.sources.PROMPT_TEMPLATES``)."""


@dataclass(frozen=True)
class LoraConfig:
    """LoRA continual fine-tuning through peft (``emo_ray/train/lora.py``, docs/lora.md). The
    official DRSY/EMO scripts (``continual_finetuning/run_clm_trainer_emo.py``) use r=32,
    alpha=16, dropout=0.05, bias none and peft's default LLaMA targets (q_proj, v_proj)."""

    rank: Annotated[int, Bounds(ge=0, note="0: LoRA off")] = 0
    """LoRA rank r; 0 = LoRA off (full fine-tuning). Official EMO LoRA runs: 32."""
    alpha: Annotated[float, Bounds(gt=0)] = 16.0
    """Scale numerator: the update is ``(alpha / rank) B A`` (official EMO: 16)."""
    dropout: Annotated[float, Bounds(ge=0, lt=1)] = 0.05
    """Dropout on the adapter's input, in [0, 1) (official EMO: 0.05)."""
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    """Names of the linear layers to adapt (last name component, e.g. ``q_proj``); checked
    against the model when it is loaded. Never the output head (EMO's cost embedding)."""


@dataclass(frozen=True)
class TrainConfig:
    loss: str = "emo"
    """Objective, a name in ``emo_ray.losses.LOSSES``."""
    loss_kwargs: dict = field(default_factory=dict)
    """Hyperparameters of the objective, e.g. ``{gamma: 0.8}`` for tailr / mixce (``emo-ray ls
    losses`` lists each objective's hyperparameters and their valid ranges)."""
    cost_embedding: Literal["fixed", "adaptive"] = "fixed"
    """EMO only: frozen pre-trained head (paper 4.2.1) or the live head."""
    loss_impl: Literal["auto", "reference", "chunked"] = "auto"
    """``chunked`` never materialises the logits; ``auto`` uses it when available and exact."""
    loss_chunk_size: Annotated[int, Bounds(gt=0)] = 1024
    max_steps: Annotated[int, Bounds(gt=0)] = 50
    """Optimizer steps."""
    micro_batch_size: Annotated[int, Bounds(gt=0)] = 4
    """Blocks per worker per forward pass."""
    grad_accum: Annotated[int, Bounds(gt=0)] = 1
    lr: Annotated[float, Bounds(gt=0)] = 2e-5
    weight_decay: Annotated[float, Bounds(ge=0)] = 0.0
    betas: tuple[float, ...] = (0.9, 0.999)
    """Adam's (beta1, beta2), each in [0, 1)."""
    optimizer_impl: Literal["fused", "foreach", "for-loop"] = "fused"
    """How torch's AdamW runs its update (same arithmetic, different kernels): ``fused`` one
    kernel over all tensors (CPU and GPU, compiled in the torch wheel), ``foreach`` multi-tensor
    ops, ``for-loop`` one tensor at a time (the CPU default before issue 26; at the table1-cpu
    shape the fused step costs half its CPU time, benchmarks/README.md). Never DeepSpeed's
    JIT-built ops."""
    warmup_steps: Annotated[int, Bounds(ge=0)] = 0
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    min_lr_ratio: Annotated[float, Bounds(ge=0, le=1)] = 0.0
    """Decay ends at ``lr * min_lr_ratio``."""
    clip_grad_norm: Annotated[float, Bounds(ge=0, note="0 disables")] = 1.0
    """0 disables clipping."""
    seed: Annotated[int, Bounds(ge=0)] = 42
    zero_stage: Annotated[int, Bounds(ge=0, le=3)] = 2
    """DeepSpeed ZeRO stage 0-3."""
    precision: Literal["auto", "bf16", "fp32", "fp16"] = "auto"
    """``auto``: bf16 where the hardware has it (CUDA with bf16, a CPU with avx512_bf16 / AMX),
    fp32 otherwise; the choice is logged and recorded as the ``train.precision_resolved`` param.
    Master weights and optimizer state stay fp32; softmax, EMO transport and loss run in fp32.
    ``fp16`` is GPU only."""
    checkpoint_every: Annotated[int, Bounds(ge=0, note="0: only at the end")] = field(default=0, metadata=typed_config.NEUTRAL)
    """Save a DeepSpeed checkpoint every N steps (0: only at the end)."""
    checkpoint_every_minutes: Annotated[float, Bounds(ge=0, note="0: off")] = field(
        default=0.0, metadata=typed_config.NEUTRAL)  # when to save, not what: a resume may change it
    """Also save one when this many minutes of wall clock (rank 0's) passed since the last save
    or the start (0: off). A full 13B checkpoint takes minutes to write: a time basis bounds the
    work lost to a failure without paying that write every few steps of a fast run (issue 27.4)."""
    keep_checkpoints: Annotated[int, Bounds(ge=1)] = field(default=2, metadata=typed_config.NEUTRAL)
    final_checkpoint: Literal["full", "weights"] = field(default="full", metadata=typed_config.NEUTRAL)
    """What the last checkpoint holds. ``full``: the DeepSpeed state (weights, optimizer
    moments, scheduler) and the Hugging Face export, so training can continue from it.
    ``weights``: the Hugging Face export and the final metrics only, about 4x smaller with
    Adam in fp32 (5.1 -> 1.1 GB for Gemma-3-270M); what a sweep keeps per trial."""
    log_every: Annotated[int, Bounds(ge=1)] = field(default=1, metadata=typed_config.NEUTRAL)
    overflow_patience: Annotated[int, Bounds(ge=0)] = 10
    """fp16 dynamic loss scaling: consecutive overflow-skipped steps tolerated before the run
    stops as diverged (fp32 and bf16 never skip steps)."""
    dead_patience: Annotated[int, Bounds(ge=1)] = 3
    """Consecutive steps with a gradient norm of exactly 0 after which the run stops as
    diverged: a dead model (e.g. loss stuck at ln V after a too-large learning rate) that no
    further step can change."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """LoRA adapters instead of full fine-tuning (``train.lora.rank > 0``)."""
    debug_fail_at_step: Annotated[int, Bounds(ge=0)] = field(default=0, metadata=typed_config.NEUTRAL)
    """Fault injection for tests: the rank-0 worker process exits at this step on the first
    attempt (no checkpoint restored yet). 0 = never."""
    eval_every: Annotated[int, Bounds(ge=0, note="0: only at the end")] = 0
    """Validate every K optimizer steps (logged as ``val/loss``, ``val/ppl`` at that step) and at
    the end; 0: only at the end."""
    select_checkpoint: Literal["last", "best_val_loss"] = "last"
    """Which weights the run exports as its model (what evaluation and sweeps use): ``last``, or
    ``best_val_loss``, the validated weights with the lowest validation loss (paper Table 1
    protocol: keep the checkpoint with the lowest validation loss). ``best_val_loss`` needs
    validation data and ``eval_every > 0``; the kept step is logged as ``val/best_step``."""
    cost_embedding_model: str = ""
    """EMO family only: take the fixed transport-cost embedding from this model's output head
    (registry name, hub id or folder; its vocabulary must be the trained model's, its hidden size
    may differ), as the official continual fine-tuning reads a LLaMA-2-13B head; "" = the trained
    model's own pre-trained head. Objectives without a cost embedding (mle, tailr, mixce) ignore
    it, as they ignore ``cost_embedding``: a sweep sets it once for all objectives, as the official
    LoRA script passes it in every mode, and it is neither loaded nor recorded for them."""


@dataclass(frozen=True)
class RayConfig:
    address: str = ""
    """``ray.init`` address; empty starts (or joins) a local Ray."""
    num_workers: Annotated[int, Bounds(ge=1)] = 2
    use_gpu: bool = False
    cpus_per_worker: Annotated[float, Bounds(gt=0)] = 1.0
    max_failures: Annotated[int, Bounds(ge=-1, note="-1: unlimited")] = 0
    """Worker-group restarts Ray Train allows before failing the run."""
    storage_path: str = ""
    """Checkpoints and Ray Train state; shared storage on a cluster. Empty: ``./runs``."""
    run_name: str = ""
    """Ray Train run name; empty derives one from the config. Reusing it resumes that run (and its
    MLflow run), if the config that changes the weights is the same."""
    resume_changed_config: bool = False
    """Continue ``ray.run_name`` even though the trained config differs (opens a new MLflow run,
    tagged with the one it resumed from); without it such a resume is refused, naming the keys."""
    rerun_finished: Literal["skip", "new"] = "skip"
    """What the same ``ray.run_name`` does once its run has FINISHED: ``skip`` says so in one line
    and changes nothing (a finished run's record is never rewritten); ``new`` trains again from
    scratch as a new run (Ray run ``<run_name>-rerun2``, ``-rerun3``...) whose MLflow run is tagged
    ``emo_ray.rerun_of`` with the finished one's id."""


@dataclass(frozen=True)
class TrackingConfig:
    """Where a run is recorded: the one tracking section of training, evaluation and sweep configs."""

    tracking_uri: str = ""
    """MLflow store; empty: ``$MLFLOW_TRACKING_URI`` or SQLite ``./mlflow.db``."""
    experiment: str = "emo-ray"
    """MLflow experiment (created if missing)."""
    run_name: str = ""
    """MLflow run name; empty: a descriptive one (objective-model-tokens-seed for training)."""
    parent_run_id: str = ""
    """Log as a child of this MLflow run (used by sweeps)."""
    log_to_source_run: bool = False
    """Evaluation of ``mlflow:<run_id>``: log on that training run itself instead of a new run
    tagged with it."""


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    ray: RayConfig = field(default_factory=RayConfig, metadata=typed_config.NEUTRAL)
    tracking: TrackingConfig = field(default_factory=TrackingConfig, metadata=typed_config.NEUTRAL)
    plugins: tuple[str, ...] = ()
    """Python modules (``my_pkg.losses``) or ``.py`` files imported before the config is checked,
    in the driver and in every worker: register your own objective there with
    ``LOSSES["name"] = LossSpec(fn)`` and use it as ``train.loss=name``."""


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, *,
                tree: dict | None = None) -> Config:
    """YAML file (optional), a nested mapping of overrides (``tree``, from typed callers such as a
    sweep), then ``key=value`` overrides -> validated ``Config``."""
    raw = typed_config.load_tree(path, overrides, tree)
    import_plugins(raw.get("plugins") or ())
    cfg = typed_config.build(Config, raw)
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Value and cross-field checks that a type cannot express; fail before any process starts."""
    from emo_ray.losses import check_hparams

    try:
        check_hparams(cfg.train.loss, cfg.train.loss_kwargs)
    except ValueError as e:
        raise ConfigError(f"train.loss_kwargs: {e}" if "not a supported loss" not in str(e) else f"train.loss: {e}") from None
    t, d, r = cfg.train, cfg.data, cfg.ray
    betas = t.betas
    checks = [
        (len(betas) == 2 and all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in betas),
         f"train.betas must be two numbers in [0, 1), got {list(betas)}"),
        (t.warmup_steps < t.max_steps or t.warmup_steps == 0, "train.warmup_steps must be below train.max_steps"),
        (t.lora.rank == 0 or len(t.lora.target_modules) > 0, "train.lora.target_modules must name at least one module"),
        (t.lora.rank == 0 or t.zero_stage < 3,
         "train.lora.rank > 0 needs train.zero_stage 0-2 (ZeRO-3 partitions the base weights the LoRA merge reads)"),
        (t.select_checkpoint != "best_val_loss" or t.lora.rank == 0,
         "train.select_checkpoint=best_val_loss cannot be combined with train.lora (the candidate export "
         "merges the adapters into the live model mid-run); use select_checkpoint=last"),
        (_one_path_component(r.run_name),
         f"ray.run_name must be one path component (no '/', '\\', '.' or '..'), got {r.run_name!r}"),
        (t.select_checkpoint != "best_val_loss" or t.eval_every > 0,
         "train.select_checkpoint=best_val_loss needs train.eval_every > 0 (validation during training)"),
        (t.select_checkpoint != "best_val_loss" or bool(d.validation.strip()) or d.validation_fraction > 0,
         "train.select_checkpoint=best_val_loss needs validation data: set data.validation or "
         "data.validation_fraction > 0"),
        (not t.cost_embedding_model or t.cost_embedding == "fixed",
         "train.cost_embedding_model gives a fixed cost embedding; it cannot be combined with train.cost_embedding=adaptive"),
        (t.precision != "fp16" or r.use_gpu, "train.precision=fp16 needs ray.use_gpu=true (CPUs: bf16 or fp32)"),
        (t.precision != "fp16" or t.loss_impl != "chunked",
         "train.loss_impl=chunked is not exact under train.precision=fp16 (its logit gradient would be rounded to "
         "fp16 before the loss scale); use auto or reference"),
        (d.format != "instruction" or all(f.strip() for f in (d.instruction_field, d.output_field)),
         "data.instruction_field and data.output_field must be non-empty for data.format=instruction"),
        (d.format != "instruction" or len({d.instruction_field, d.input_field, d.output_field}) == 3,
         f"data.instruction_field, data.input_field and data.output_field must differ, got "
         f"{[d.instruction_field, d.input_field, d.output_field]}"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ConfigError(msg)


def _one_path_component(name: str) -> bool:
    """``ray.run_name`` names a folder under ``ray.storage_path``: anything else (``../x``, ``a/b``)
    would write checkpoints and the run record outside it, or point a resume at another tree."""
    return name == "" or (name not in (".", "..") and not any(c in name for c in "/\\\0"))


def to_flat(cfg: Config) -> dict[str, Any]:
    """``{"train.loss": "emo", ...}``: for MLflow params and Ray's config dicts."""
    return typed_config.to_flat(cfg)


def from_flat(flat: dict[str, Any]) -> Config:
    """The worker side of ``to_flat``: plugins first, so that their objectives are registered."""
    import_plugins(flat.get("plugins") or ())
    return typed_config.from_flat(Config, flat)


def to_yaml(cfg: Config) -> str:
    return typed_config.to_yaml(cfg)
