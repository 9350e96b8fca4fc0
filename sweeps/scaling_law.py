"""Rebuild the EMO paper's scaling-law curves (Figure 1) with one command: ``emo-ray sweep``.

    python sweeps/scaling_law.py cpu                          # laptop: real models, ~2 h on 2 cores
    python sweeps/scaling_law.py cpu-small --dry-run          # the grid, resources, 6·N·D compute
    python sweeps/scaling_law.py paper storage_path=/mnt/efs/emo_ray/sweeps   # GPU cluster
    python sweeps/scaling_law.py cpu --resume                 # after Ctrl-C / a killed driver
    python sweeps/scaling_law.py configs/sweeps/cpu.yaml grid.seeds='[0, 1, 2]'

Any field of the sweep config (``emo-ray sweep --help``) can be set with ``key=value``.
"""
import sys

from emo_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["sweep", *sys.argv[1:]]))
