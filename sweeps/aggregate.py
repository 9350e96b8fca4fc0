"""Aggregate a finished (or partly finished) sweep into the scaling-law figure and fits.

    python sweeps/aggregate.py PARENT_RUN_ID [--metric icl/avg_accuracy] [--tracking-uri URI]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from emo_ray import tracking  # noqa: E402
from emo_ray.sweep.aggregate import aggregate_and_log  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("parent_run_id")
    p.add_argument("--metric", default="icl/avg_accuracy")
    p.add_argument("--tracking-uri", default=None)
    a = p.parse_args(argv)
    out = aggregate_and_log(a.parent_run_id, tracking.tracking_uri(a.tracking_uri), a.metric)
    print(json.dumps({"metric": out["metric"], "fits": out["fits"], "secondary": out["secondary"]}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
