"""MAUVE (Pillutla et al. 2021) between human and model text, paper 4.1 / Table 1, on features
computed by ``featurize.py`` and handed to mauve-text as ``p_features`` / ``q_features``.

Besides MAUVE itself, two numbers from the same quantized histograms are kept: ``mauve_star``,
MAUVE with add-1/2 (Krichevsky-Trofimov) smoothing of the histograms, which is less biased at
the small sample sizes an evaluation affords (Pillutla et al., JMLR 2023, section 4), and the
``frontier_integral`` (Liu et al. 2021), the area under the divergence frontier: 0 for equal
distributions, 1 for disjoint ones (lower is better, unlike MAUVE)."""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from dataclasses import asdict, astuple, dataclass

import numpy as np

from emo_ray.evaluation.config import MauveConfig

SCORE_NAMES = ("mauve", "mauve_star", "frontier_integral")


@dataclass(frozen=True)
class MauveScores:
    mauve: float
    mauve_star: float
    frontier_integral: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def mauve_settings(cfg: MauveConfig) -> str:
    """The settings stamped next to every MAUVE number in MLflow."""
    return (
        f"featurizer={cfg.featurizer} pooling={cfg.pooling} layer={cfg.layer} max_tokens={cfg.max_tokens} "
        f"include_prefix={cfg.include_prefix} num_buckets={cfg.num_buckets or 'auto'} "
        f"scaling_factor={cfg.scaling_factor} kmeans_explained_var={cfg.kmeans_explained_var} "
        f"kmeans_num_redo={cfg.kmeans_num_redo} kmeans_max_iter={cfg.kmeans_max_iter} seed={cfg.seed} "
        f"kmeans_seeds={cfg.kmeans_seeds}"
    )


def mauve_scores(p_features: np.ndarray, q_features: np.ndarray, cfg: MauveConfig) -> MauveScores:
    """MAUVE, MAUVE* and frontier integral of human features ``p`` (n, d) against model features
    ``q`` (m, d), each in [0, 1]; each the mean over ``cfg.kmeans_seeds`` quantizations."""
    if len(p_features) < 2 or len(q_features) < 2:
        raise ValueError(f"MAUVE needs at least 2 texts per side, got {len(p_features)} and {len(q_features)}")
    runs = [_one_quantization(p_features, q_features, cfg, cfg.seed + k) for k in range(cfg.kmeans_seeds)]
    return MauveScores(*(float(np.mean(v)) for v in zip(*(astuple(r) for r in runs))))


FAISS_FEW_POINTS = re.compile(rb"WARNING clustering \d+ points to \d+ centroids: please provide at least \d+ training points")
"""What faiss's C++ k-means prints to stderr below 39 points per centroid. mauve-text's ``auto``
buckets (n/10, the paper's setting) always are: one line per k-means redo, hundreds per evaluation,
each saying nothing the settings do not (``mauve_settings``)."""


@contextlib.contextmanager
def without_faiss_few_points_warning():
    """Route file descriptor 2 to a temporary file while the block runs (faiss writes from C++,
    past Python's ``sys.stderr``), then write back every line but ``FAISS_FEW_POINTS``."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().splitlines(keepends=True) if not FAISS_FEW_POINTS.match(line)]
            if kept:
                os.write(2, b"".join(kept))


def _one_quantization(p_features: np.ndarray, q_features: np.ndarray, cfg: MauveConfig, seed: int) -> MauveScores:
    import mauve as mauve_text

    with without_faiss_few_points_warning():
        out = mauve_text.compute_mauve(
            p_features=p_features,
            q_features=q_features,
            num_buckets=cfg.num_buckets or "auto",
            mauve_scaling_factor=cfg.scaling_factor,
            kmeans_explained_var=cfg.kmeans_explained_var,
            kmeans_num_redo=cfg.kmeans_num_redo,
            kmeans_max_iter=cfg.kmeans_max_iter,
            seed=seed,
            verbose=False,
        )
    return MauveScores(float(out.mauve), float(out.mauve_star), float(out.frontier_integral))


def mauve(p_features: np.ndarray, q_features: np.ndarray, cfg: MauveConfig) -> float:
    """MAUVE alone (see ``mauve_scores``)."""
    return mauve_scores(p_features, q_features, cfg).mauve
