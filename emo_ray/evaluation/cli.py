"""``emo-ray-eval``: evaluate a model id, local folder or MLflow run's checkpoint.

    emo-ray-eval configs/eval/quick.yaml model=smollm2-135m
    emo-ray-eval configs/eval/acceptance.yaml model=mlflow:<run_id> tracking.log_to_source_run=true
    emo-ray-eval --print-config configs/eval/quick.yaml icl.num_items=10
"""
from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="emo-ray-eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", help="YAML config (configs/eval/*.yaml); omit for the paper defaults")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. icl.num_items=50")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    args = parser.parse_args(argv)
    # A first positional with '=' is an override, not a config path.
    overrides = list(args.overrides)
    config = args.config
    if config and "=" in config:
        overrides.insert(0, config)
        config = None

    from emo_ray.evaluation.config import load_eval_config, to_flat

    cfg = load_eval_config(config, overrides)
    if args.print_config:
        print(json.dumps(to_flat(cfg), indent=1))
        return 0
    from emo_ray.evaluation.run import evaluate_and_log

    run_id, result = evaluate_and_log(cfg.model, cfg)
    width = max(len(k) for k in result.metrics)
    for k, v in sorted(result.metrics.items()):
        print(f"{k:<{width}}  {v:.4f}")
    for k, why in result.skipped.items():
        print(f"skipped {k}: {why}")
    print(f"mlflow run: {run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
