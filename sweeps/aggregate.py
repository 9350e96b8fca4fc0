"""Aggregate a finished (or partly finished) sweep into the scaling-law figure and fits.

    python sweeps/aggregate.py PARENT_RUN_ID [--metric eval/icl/avg_accuracy] [--tracking-uri URI]

Same as ``emo-ray aggregate``.
"""
import sys

from emo_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["aggregate", *sys.argv[1:]]))
