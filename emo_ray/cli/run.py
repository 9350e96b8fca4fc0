"""The commands that run something: train, eval, sweep, sample-corpus."""
from __future__ import annotations

from emo_ray.cli.common import load, print_summary, split_overrides


def cmd_train(args) -> int:
    from emo_ray.train import fit

    cfg = load("train", args.config, args.overrides)
    result = fit(cfg)
    if result.already_finished:  # ray.rerun_finished=skip: a finished run is never reopened
        from emo_ray import console

        print(console.finished_rerun_line(result), flush=True)
        return 0
    print_summary("print_fit_summary", result, cfg)
    return 0


def cmd_eval(args) -> int:
    from emo_ray.evaluation.run import evaluate_and_log

    config, overrides = split_overrides(args.config, args.overrides)
    cfg = load("eval", config, overrides)
    run_id, result = evaluate_and_log(cfg.model, cfg)
    print_summary("print_eval_summary", run_id, result, cfg)
    return 0


def cmd_sweep(args) -> int:
    from emo_ray.sweep.runner import describe, run_sweep

    sweep = load("sweep", args.config, args.overrides, preflight=not args.dry_run)  # a dry run opens no store
    print(describe(sweep), flush=True)
    if args.dry_run:
        return 0
    from emo_ray.report import sweep_end

    summary = run_sweep(sweep, resume=args.resume, report=sweep_end)  # the report ends the sweep
    print_summary("print_sweep_summary", summary, sweep)
    return 0


def cmd_sample_corpus(args) -> int:
    from emo_ray.inference.oracle_corpus import output_path, sample_corpus

    cfg = load("sample-corpus", args.config, args.overrides)
    record = sample_corpus(cfg)
    counts = ", ".join(f"{s} {v['paragraphs']}" for s, v in record["splits"].items())
    print(f"oracle corpus of {cfg.oracle} in {output_path(cfg)}: {counts} paragraphs", flush=True)
    return 0
