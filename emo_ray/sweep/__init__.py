"""Scaling-law sweeps on Ray Tune: objectives x model scales x data volumes x seeds."""
from emo_ray.sweep.spec import PRESETS, SweepSpec, Trial, get_preset, trials

__all__ = ["PRESETS", "SweepSpec", "Trial", "get_preset", "trials"]
