"""Scaling-law sweeps on Ray Tune: objectives x model scales x data volumes x seeds."""
from emo_ray.sweep.config import GridConfig, SweepConfig, Trial
from emo_ray.sweep.spec import list_sweeps, load_sweep_config, trial_config, trials

__all__ = ["GridConfig", "SweepConfig", "Trial", "list_sweeps", "load_sweep_config", "trial_config", "trials"]
