"""The optimizer step's share of a CPU training step (issue 26), at the ``table1-cpu`` shape.

One process, one thread, the real pieces of a worker: ``configs/smollm2_wikitext2.yaml`` with
``table1-cpu``'s overrides (SmolLM2-135M, 4 x 256 tokens, bf16 autocast, one worker), the model
loaded as ``worker._load_model`` loads it, ``build_objective``, ``deepspeed.initialize`` on a
1-rank gloo group with ``deepspeed_config`` and the worker's phase split (forward / backward /
optimizer = the stage-0 gradient norm + ``engine.step()``).

Cases ``STAGE:IMPL``: ZeRO stage and ``train.optimizer_impl`` (``for-loop``: torch's
single-tensor AdamW, the CPU default before issue 26; ``foreach``; ``fused``). Rounds are
interleaved (every case ``--steps`` steps per round, a fresh engine each time) so that load from
other processes hits all cases alike; per case the median over all timed steps (the first step
of each round is warm-up and dropped). Writes ``results/cpu_optimizer.csv``.

    python benchmarks/benchmark_cpu_optimizer.py [--cases 2:for-loop,2:fused,0:fused] [--steps 4 --rounds 3]
    python benchmarks/benchmark_cpu_optimizer.py --model tiny-llama --steps 21 --rounds 1   # losses agree?
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # no spinning threads on a shared box (before torch)

import argparse  # noqa: E402
import contextlib  # noqa: E402
import gc  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from _results import RESULTS, write_csv  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLE1_CPU = ["data.block_size=256", "train.micro_batch_size=4", "train.grad_accum=1", "train.precision=bf16",
              "ray.num_workers=1", "train.warmup_steps=0", "train.schedule=linear", "train.lr=5e-5"]


def init_one_rank_group() -> None:
    """A 1-rank gloo process group, as Ray Train gives a 1-worker trial."""
    import socket

    from emo_ray.train.deepspeed_setup import prepare_deepspeed_env

    prepare_deepspeed_env(False)
    import deepspeed

    if not torch.distributed.is_initialized():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        deepspeed.init_distributed(dist_backend="gloo")


def build_engine(model_path: str, overrides: list[str]):
    import deepspeed
    from transformers import AutoModelForCausalLM

    from emo_ray.config import load_config
    from emo_ray.train.deepspeed_setup import deepspeed_config
    from emo_ray.train.objective import build_objective

    cfg = load_config(os.path.join(ROOT, "configs/smollm2_wikitext2.yaml"), TABLE1_CPU + overrides)
    torch.manual_seed(cfg.train.seed)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32, attn_implementation="eager")
    model.config.use_cache = False
    objective = build_objective(cfg, model)
    engine, *_ = deepspeed.initialize(model=model, model_parameters=[p for p in model.parameters()],
                                      config=deepspeed_config(cfg))
    return cfg, engine, objective


def grad_norm(module) -> float:
    """The worker's stage-0 gradient norm (``train/step.py: _grad_norm``), timed with the optimizer phase."""
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])))


def run_case(model_path: str, stage: int, impl: str, ids: torch.Tensor, steps: int, loss: str) -> list[dict]:
    cfg, engine, objective = build_engine(model_path, [f"train.zero_stage={stage}", f"train.loss={loss}",
                                                       f"train.optimizer_impl={impl}"])
    rows = []
    clocks = (time.perf_counter, time.process_time)  # wall and this process's CPU time
    for i in range(steps):
        t0 = [c() for c in clocks]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = objective.compute(engine, ids)
        t1 = [c() for c in clocks]
        engine.backward(out.loss)
        t2 = [c() for c in clocks]
        if stage == 0:
            grad_norm(engine.module)
        engine.step()
        t3 = [c() for c in clocks]
        row = {"step": i, "loss": out.loss.item()}
        for j, clock in enumerate(("wall", "cpu")):
            row.update({f"forward_{clock}_s": t1[j] - t0[j], f"backward_{clock}_s": t2[j] - t1[j],
                        f"optimizer_{clock}_s": t3[j] - t2[j]})
        rows.append(row)
    del engine, objective
    gc.collect()
    return rows


def token_block(model_path: str, batch: int, seq: int) -> torch.Tensor:
    from emo_ray.data.sources import read_documents
    from emo_ray.models import load_tokenizer

    tok = load_tokenizer(model_path)
    docs = read_documents("${EMO_RAY_DATA}/wikitext-2/train_partial.jsonl")
    ids: list[int] = []
    for d in docs:
        ids += tok(d)["input_ids"]
        if len(ids) >= batch * seq:
            break
    return torch.tensor(ids[: batch * seq]).view(batch, seq)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default="2:for-loop,2:fused,0:for-loop,0:foreach,0:fused")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--loss", default="mle")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--model", default="smollm2-135m", help="registry name (tiny-llama: the quality check)")
    ap.add_argument("--out", default=os.path.join(RESULTS, "cpu_optimizer.csv"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from emo_ray.models import materialize

    model_path = materialize(args.model)
    init_one_rank_group()
    ids = token_block(model_path, 4, 256)
    cases = [(int(c.split(":")[0]), c.split(":")[1]) for c in args.cases.split(",")]
    rows = []
    for r in range(args.rounds):
        for stage, impl in cases:
            for row in run_case(model_path, stage, impl, ids, args.steps, args.loss)[1:]:
                rows.append({"round": r, "zero_stage": stage, "optimizer_impl": impl, **row})
                print(rows[-1], flush=True)
    write_csv(args.out, rows)
    for clock in ("cpu", "wall"):
        summary(rows, cases, clock)
    loss_agreement(rows, cases)


def loss_agreement(rows: list[dict], cases: list[tuple[int, str]]) -> None:
    """Per case, the largest relative difference of its step losses from the first case's (same
    data, same initial weights: only the optimizer's rounding differs)."""
    def losses(stage, impl):
        return {(x["round"], x["step"]): x["loss"] for x in rows if x["zero_stage"] == stage and x["optimizer_impl"] == impl}

    ref = losses(*cases[0])
    for stage, impl in cases[1:]:
        got = losses(stage, impl)
        rel = max(abs(got[k] - ref[k]) / abs(ref[k]) for k in ref)
        print(f"losses {stage}:{impl} vs {cases[0][0]}:{cases[0][1]}: max relative difference {rel:.2e} over {len(ref)} steps")


def summary(rows: list[dict], cases: list[tuple[int, str]], clock: str) -> None:
    """Median phase times per case; share = optimizer / (forward + backward + optimizer)."""
    phases = [f"{p}_{clock}_s" for p in ("forward", "backward", "optimizer")]
    print(f"\n{clock} time   {'forward s':>10}{'backward s':>11}{'optim s':>9}{'share':>8}{'speed-up':>10}"
          f"   load {os.getloadavg()[0]:.1f}")
    base = None
    for stage, impl in cases:
        sel = [x for x in rows if x["zero_stage"] == stage and x["optimizer_impl"] == impl]
        med = [statistics.median(x[p] for x in sel) for p in phases]
        base = base or sum(med)
        print(f"{stage}:{impl:<12}{med[0]:>10.2f}{med[1]:>11.2f}{med[2]:>9.2f}{med[2] / sum(med):>8.0%}"
              f"{base / sum(med):>9.2f}x")

if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
