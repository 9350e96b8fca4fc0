"""Everything a training worker receives from the driver, as one typed record.

Ray Train hands the worker function one ``train_loop_config`` dict; it carries this record under
one key (``INPUTS_KEY``) and Ray pickles it to every rank, so every field must pickle (the typed
config does: frozen dataclasses of plain values).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from emo_ray.config import Config
from emo_ray.plugins import import_plugins

INPUTS_KEY = "inputs"


@dataclass(frozen=True)
class WorkerInputs:
    cfg: Config
    """The validated config of the run."""
    model_path: str
    """The materialised model folder (the driver materialised it; the workers only read it)."""
    tracking_uri: str
    mlflow_run_id: str
    """The MLflow run the driver opened: rank 0 logs its metrics there."""
    validation_blocks: Any
    """The ``(n, T)`` validation ids, or for instruction data ``{"data": ids, "loss_mask": mask}``."""
    train_blocks_per_worker: int
    """Training blocks in each worker's shard (the dataset split evenly over the workers)."""
    cost_embedding_model_path: str | None = None
    """``train.cost_embedding_model`` materialised by the driver; None: the model's own head."""
    best_model_dir: str = ""
    """Where ``train.select_checkpoint=best_val_loss`` keeps its candidate (beside the checkpoints)."""

    def loop_config(self) -> dict:
        """The ``train_loop_config`` for Ray Train."""
        return {INPUTS_KEY: self}

    @classmethod
    def from_loop_config(cls, loop_config: dict) -> "WorkerInputs":
        """The worker side: the record, with the config's plugins imported first (their objectives
        must be registered in this process before the objective is built)."""
        inputs = loop_config[INPUTS_KEY]
        if not isinstance(inputs, cls):
            raise TypeError(f"train_loop_config[{INPUTS_KEY!r}] must be a WorkerInputs, got {type(inputs).__name__}")
        import_plugins(inputs.cfg.plugins)
        return inputs
