"""``emo-ray`` console command.

    emo-ray train configs/tiny_smoke.yaml train.loss=mixce train.loss_kwargs='{gamma: 0.8}'
    emo-ray show-config configs/smollm2_wikitext2.yaml ray.num_workers=1
    emo-ray losses
"""
from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="emo-ray", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_ in [("train", "fine-tune on Ray Train + DeepSpeed, log to MLflow"),
                        ("show-config", "print the resolved config and exit")]:
        p = sub.add_parser(name, help=help_)
        p.add_argument("config", help="YAML config (see configs/)")
        p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.loss=emo")
    sub.add_parser("losses", help="list the objectives and their hyperparameters")
    args = parser.parse_args(argv)

    from emo_ray.config import ConfigError, load_config, to_yaml

    if args.command == "losses":
        from emo_ray.losses import LOSSES, hyperparameters

        for name, spec in LOSSES.items():
            pinned = f" pinned={spec.pinned}" if spec.pinned else ""
            print(f"{name:20s} hyperparameters={hyperparameters(name)}{pinned}")
        return 0
    try:
        cfg = load_config(args.config, args.overrides)
    except (ConfigError, ValueError) as e:
        print(f"emo-ray: config error: {e}", file=sys.stderr)
        return 2
    if args.command == "show-config":
        print(to_yaml(cfg), end="")
        return 0

    from emo_ray.data import DataError
    from emo_ray.train import fit

    try:
        result = fit(cfg)
    except (ConfigError, DataError, FileNotFoundError) as e:
        print(f"emo-ray: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"mlflow_run_id": result.mlflow_run_id, "hf_model_path": result.hf_model_path,
                      **{k: result.metrics[k] for k in ("step", "loss", "val_loss", "val_ppl") if k in result.metrics}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
