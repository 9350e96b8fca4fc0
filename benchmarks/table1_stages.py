"""Where a ``table1-cpu`` trial's time goes (issue 26): one seed, one corpus, the real code paths.

One fine-tuning trial of the ``table1-cpu`` sweep (``emo_ray.sweep.spec.trial_config``: Ray Train +
DeepSpeed, one single-thread worker, SmolLM2-135M, 4 x 256 tokens per step, bf16 autocast) and its
evaluation exactly as a sweep trial runs it (``evaluate_and_log`` on the training run, the domain's
``configs/eval/table1_cpu.yaml``), shrunk by ``--steps`` (optimizer steps, default the sweep's 30)
and ``--prompts`` (prompts per corpus, default the sweep's 250). Prints the stage table:

* train     the optimizer steps (sum of ``train/step_time_s``; ``optimizer`` = ``train/time_optimizer_s``)
* sample / featurize / oracle   the evaluation's own ``time/gen/<corpus>/{sample,featurize,oracle}_s``
  (model loads included: each stage loads its model in its actor)
* overhead  the rest of the wall clock: Ray start-up, data and model loading, validations, the
  export, MAUVE's k-means, MLflow logging

and writes the figures to ``table1_stages.json`` beside this file (``--out``). It also counts the
evaluation's model loads per stage (``load_for_eval`` calls; the executor is local, so they run in
this process). ``--compare`` runs the slice twice in one invocation: "after" (issue 26:
``train.optimizer_impl=fused``, ``train.zero_stage=0`` for the single worker) then "before"
(``for-loop``, the sweep's ZeRO-2); the first run may pay the cold human-side MAUVE feature cache,
so the order favours "before". MLflow and Ray storage go to a temporary folder.

    python benchmarks/table1_stages.py [--steps 30 --prompts 250] [--objective mle] [--compare]
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # no spinning threads on a shared box (before torch)

import argparse  # noqa: E402
import collections  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
STAGES = ("train", "sample", "featurize", "oracle", "overhead")


def count_model_loads() -> collections.Counter:
    """Count ``load_for_eval`` calls by the stage class that made them (Sampler, Featurizer,
    OracleScorer): the stages import it from ``emo_ray.models.loading`` when they start."""
    import sys

    from emo_ray.models import loading

    counts: collections.Counter = collections.Counter()
    real = loading.load_for_eval

    def counted(*args, **kwargs):
        caller = sys._getframe(1).f_locals.get("self")
        counts[type(caller).__name__ if caller is not None else "other"] += 1
        return real(*args, **kwargs)

    loading.load_for_eval = counted
    return counts


SETTINGS = {"after": {"optimizer_impl": "fused", "zero_stage": 0},
            "before": {"optimizer_impl": "for-loop", "zero_stage": 2}}


def run_slice(sweep, trial, name: str, steps: int | None, prompts: int | None, tmp: str, loads) -> dict:
    """Train and evaluate one trial; the stage seconds and the context to read them by."""
    from mlflow import MlflowClient

    from emo_ray.evaluation import evaluate_and_log
    from emo_ray.sweep.spec import eval_config, trial_config
    from emo_ray.train import fit

    uri = f"sqlite:///{tmp}/mlflow.db"
    train_extra = {"tracking": {"tracking_uri": uri, "experiment": "table1-stages", "run_name": f"{trial.key}-{name}"},
                   "ray": {"storage_path": f"{tmp}/ray", "run_name": f"stages-{name}"},
                   "train": {**SETTINGS[name], **({"max_steps": steps} if steps else {})}}
    eval_extra = {"tracking": {"tracking_uri": uri, "experiment": "table1-stages", "log_to_source_run": True},
                  **({"generation": {"num_prompts": prompts}} if prompts else {})}
    cfg = trial_config(sweep, trial, train_extra)
    ecfg = eval_config(sweep, eval_extra, domain=trial.domain)
    t0 = time.perf_counter()
    result = fit(cfg, progress=False)
    t_fit = time.perf_counter() - t0
    loads.clear()
    _, ev = evaluate_and_log(f"mlflow:{result.mlflow_run_id}", ecfg)
    wall = time.perf_counter() - t0
    client = MlflowClient(uri)

    def history_sum(key: str) -> float:
        return sum(m.value for m in client.get_metric_history(result.mlflow_run_id, key))

    corpus = ecfg.generation.corpora[0]
    key = next(k for k in ev.metrics if k.startswith("time/gen/") and k.endswith("/sample_s")).rsplit("/", 1)[0]
    sec = {"train": history_sum("train/step_time_s"),
           **{s: float(ev.metrics[f"{key}/{s}_s"]) for s in ("sample", "featurize", "oracle")}}
    sec["overhead"] = wall - sum(sec.values())
    return {
        "setting": name, **SETTINGS[name], "trial": trial.key, "corpus": corpus, "steps": cfg.train.max_steps,
        "prompts": int(ev.metrics[f"gen/{key.split('/')[-1]}/n_prompts"]), "wall_s": wall, "fit_s": t_fit,
        "seconds": sec, "share": {s: v / wall for s, v in sec.items()},
        "train_optimizer_s": history_sum("train/time_optimizer_s"),
        "train_forward_backward_s": history_sum("train/time_forward_s") + history_sum("train/time_backward_s"),
        "val_loss": result.metrics.get("val_loss"), "model_loads": dict(loads),
        "load_average": os.getloadavg()[0],
    }


def print_table(runs: list[dict]) -> None:
    head = f"{'stage':<11}" + "".join(f"{r['setting'] + ' s':>14}{'share':>7}" for r in runs)
    print("\n" + head)
    for s in STAGES:
        print(f"{s:<11}" + "".join(f"{r['seconds'][s]:>14.1f}{r['share'][s]:>7.0%}" for r in runs))
    print(f"{'total':<11}" + "".join(f"{r['wall_s']:>14.1f}{'':>7}" for r in runs))
    for r in runs:
        opt, fb = r["train_optimizer_s"], r["train_forward_backward_s"]
        print(f"{r['setting']} ({r['optimizer_impl']}, ZeRO-{r['zero_stage']}): optimizer {opt:.1f} s = {opt / max(opt + fb, 1e-9):.0%} of the steps' "
              f"forward+backward+optimizer; val_loss {r['val_loss']}; model loads {r['model_loads']}; "
              f"load average {r['load_average']:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the sweep's 3 epochs)")
    ap.add_argument("--prompts", type=int, default=None, help="prompts per corpus (default: the sweep's 250)")
    ap.add_argument("--objective", default="mle", help="one of the sweep's objectives")
    ap.add_argument("--domain", default="wikitext-2")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--setting", default="after", choices=sorted(SETTINGS), help="the setting of a single run")
    ap.add_argument("--compare", action="store_true", help="after, then before, in one invocation")
    ap.add_argument("--out", default=os.path.join(HERE, "table1_stages.json"))
    args = ap.parse_args()
    if args.steps is not None and args.steps < 1 or args.prompts is not None and args.prompts < 2:
        ap.error("--steps must be >= 1 and --prompts >= 2 (MAUVE and the seed spread need two texts)")
    from emo_ray.sweep.spec import load_sweep_config, trials

    sweep = load_sweep_config("table1-cpu")
    found = [t for t in trials(sweep) if t.loss == args.objective and t.domain == args.domain and t.seed == args.seed]
    if not found:
        ap.error(f"table1-cpu has no trial {args.objective}/{args.domain}/seed {args.seed}")
    loads = count_model_loads()
    names = ["after", "before"] if args.compare else [args.setting]
    runs = []
    with tempfile.TemporaryDirectory(prefix="table1_stages_") as tmp:
        for name in names:
            runs.append(run_slice(sweep, found[0], name, args.steps, args.prompts, tmp, loads))
            print(json.dumps(runs[-1]), flush=True)
    print_table(runs)
    with open(args.out, "w") as f:
        json.dump({"args": vars(args), "runs": runs}, f, indent=1)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
