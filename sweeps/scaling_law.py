"""Rebuild the EMO paper's scaling-law curves (Figure 1) with one command.

    python sweeps/scaling_law.py --preset cpu                 # laptop: real models, ~hours on 2 cores
    python sweeps/scaling_law.py --preset cpu-small --dry-run  # print grid, resources, 6·N·D compute
    python sweeps/scaling_law.py --preset paper                # GPU cluster (see cluster.yaml)
    python sweeps/scaling_law.py --preset cpu --resume         # after Ctrl-C / a killed driver

``--models``, ``--objectives``, ``--tokens``, ``--seeds``, ``--gammas`` replace the preset's axes.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from emo_ray.sweep import PRESETS, get_preset  # noqa: E402
from emo_ray.sweep.runner import describe, run_sweep  # noqa: E402
from emo_ray.sweep.spec import with_overrides  # noqa: E402


def _csv(cast):
    return lambda s: tuple(cast(x) for x in s.split(",") if x)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    p.add_argument("--name", help="sweep name (folder and MLflow parent run); default: the preset's")
    p.add_argument("--models", type=_csv(str))
    p.add_argument("--objectives", type=_csv(str))
    p.add_argument("--tokens", type=_csv(int), help="data volumes in training tokens, e.g. 8192,16384")
    p.add_argument("--seeds", type=_csv(int))
    p.add_argument("--gammas", type=_csv(float))
    p.add_argument("--eval-config", help="evaluation config; '' for validation perplexity only")
    p.add_argument("--storage-path", default="runs/sweeps")
    p.add_argument("--tracking-uri", default=None)
    p.add_argument("--experiment", default="emo-ray-sweeps")
    p.add_argument("--dry-run", action="store_true", help="print the trial grid and compute estimate, run nothing")
    p.add_argument("--resume", action="store_true", help="continue a stopped sweep: finished trials are kept")
    a = p.parse_args(argv)
    spec = with_overrides(get_preset(a.preset), name=a.name, models=a.models, objectives=a.objectives,
                          data_tokens=a.tokens, seeds=a.seeds, gammas=a.gammas, eval_config=a.eval_config)
    print(describe(spec), flush=True)
    if a.dry_run:
        return 0
    summary = run_sweep(spec, storage_path=a.storage_path, tracking_uri=a.tracking_uri,
                        experiment=a.experiment, resume=a.resume)
    print(json.dumps({k: v for k, v in summary.items() if k != "aggregate"}, indent=2))
    agg = summary.get("aggregate", {})
    for f in agg.get("fits", []):
        print(f"power law {f['axis']:8s} {f['objective']:20s} a={f['a']:.4g} b={f['b']:.4g} ({f['points']} points)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
