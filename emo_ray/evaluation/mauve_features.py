"""The MAUVE features of one corpus, kept so that a run can be re-scored without resampling, and
the MAUVE metrics computed from them (the evaluation and ``emo-ray rescore`` share this code, so
re-scoring under unchanged settings reproduces the logged numbers exactly).

Logged per corpus as the MLflow artifact ``features/<corpus>.npz`` (beside
``generations/<corpus>.json``): the model-side features with, per row, its index in the
generation table, its sampling seed and decoder; the human-side features (the reference windows,
and the second, disjoint set of windows behind the human-vs-human ceiling) with their texts; the
featurizer identity and the MAUVE settings the features were made with.

The ceiling (``human_mauve``) says how high MAUVE can go at this sample size and these settings:
human text scored against other human text, with as many texts per side as the model comparison
(the number of prompts). A model's MAUVE is read against it (headroom = ceiling - model), not
against 1.
"""
from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, replace

import numpy as np

from emo_ray.evaluation.config import MauveConfig
from emo_ray.evaluation.mauve_score import mauve_scores
from emo_ray.tracking import keys

HUMAN_SEEDS = 5
"""Human-vs-human MAUVE is averaged over this many k-means seeds (``mauve.seed``, ``+1``, ...):
the second set is scored against the reference windows exactly as a sampling run is. Its std is
the quantization's share of the noise only (one second set is drawn); a model's std over
sampling seeds also holds the sampling's."""


SPLIT_HALF_NOTE = ("split-half ceiling: the reference windows' even rows against their odd rows, n/2 texts per "
                   "side, a lower (conservative) ceiling than at n")


@dataclass
class CorpusFeatures:
    model: np.ndarray
    """(m, d) features of the non-empty generations."""
    model_row: np.ndarray
    """(m,) row of each in the generation table ``generations/<corpus>.json``."""
    model_seed: np.ndarray
    model_decoder: np.ndarray
    human: np.ndarray
    """(n, d) features of the reference windows (the prompts' own continuations)."""
    human_prefix: np.ndarray
    human_reference: np.ndarray
    human2: np.ndarray
    """(n, d) features of a second, disjoint set of windows; (0, d) when there was none."""
    human2_prefix: np.ndarray
    human2_reference: np.ndarray
    featurizer: str
    """``featurize.featurizer_identity`` of the features."""
    mauve_config: str
    """JSON of the ``MauveConfig`` the run was evaluated with."""

    @classmethod
    def of(cls, ok, model_feats: np.ndarray, prompts: list, human: np.ndarray, prompts2: list,
           human2: np.ndarray, cfg: MauveConfig, featurizer: str) -> "CorpusFeatures":
        """From the evaluation: ``ok``, the non-empty rows of the generation table (in the order
        of ``model_feats``), and the two sets of human windows with their features."""
        return cls(
            model=model_feats, model_row=ok.index.to_numpy(np.int64), model_seed=ok["seed"].to_numpy(np.int64),
            model_decoder=texts_array(ok["decoder"]), human=human,
            human_prefix=texts_array(p.prefix for p in prompts), human_reference=texts_array(p.reference for p in prompts),
            human2=human2, human2_prefix=texts_array(p.prefix for p in prompts2),
            human2_reference=texts_array(p.reference for p in prompts2),
            featurizer=featurizer, mauve_config=json.dumps(asdict(cfg)),
        )

    def config(self) -> MauveConfig:
        return MauveConfig(**json.loads(self.mauve_config))

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        # Texts as fixed-width unicode arrays: the file loads without pickle.
        np.savez_compressed(buf, **{k: np.asarray(v) for k, v in asdict(self).items()})
        return buf.getvalue()

    @classmethod
    def load(cls, path) -> "CorpusFeatures":
        with np.load(path, allow_pickle=False) as z:
            missing = set(cls.__dataclass_fields__) - set(z.files)
            if missing:
                raise ValueError(f"{path}: not a features artifact (missing {sorted(missing)})")
            return cls(**{k: (str(z[k]) if z[k].ndim == 0 else z[k]) for k in cls.__dataclass_fields__})


def texts_array(texts) -> np.ndarray:
    """Fixed-width unicode (saved without pickle); an empty one too."""
    texts = list(texts)
    return np.asarray(texts, dtype=str) if texts else np.zeros(0, dtype="<U1")


def sampling_runs(f: CorpusFeatures) -> list[tuple[str, int]]:
    """(decoder, seed) of every sampling run, in the order the evaluation made them."""
    return list(dict.fromkeys(zip(f.model_decoder.tolist(), f.model_seed.tolist())))


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std (ddof=1; 0 for a single value)."""
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def model_metrics(f: CorpusFeatures, cfg: MauveConfig, key: str) -> dict[str, float]:
    """``{key}/{decoder}/seed{s}/{mauve,mauve_star,frontier_integral}`` and their ``_mean`` /
    ``_std`` over seeds, every sampling run scored against the reference windows."""
    out: dict[str, float] = {}
    per_decoder: dict[str, dict[str, list[float]]] = {}
    for dec, seed in sampling_runs(f):
        sel = (f.model_decoder == dec) & (f.model_seed == seed)
        scores = mauve_scores(f.human, f.model[sel], cfg).as_dict()
        for name, v in scores.items():
            out[keys.seed_key(key, dec, seed, name)] = v
            per_decoder.setdefault(dec, {}).setdefault(name, []).append(v)
    for dec, series in per_decoder.items():
        for name, vs in series.items():
            out[keys.stat_key(key, dec, name, "mean")], out[keys.stat_key(key, dec, name, "std")] = mean_std(vs)
    return out


def human_metrics(f: CorpusFeatures, cfg: MauveConfig, key: str) -> dict[str, float]:
    """``{key}/human_mauve`` (mean over ``HUMAN_SEEDS`` k-means seeds), ``human_mauve_std``,
    ``human_mauve_star`` and ``human_frontier_integral`` of the second set of human windows
    against the reference windows. Without a second set (the official protocol scores every
    window, so none is left over) the reference windows' even rows against their odd rows: half
    the texts per side, so MAUVE is noisier and lower, and the headroom read from it smaller --
    the direction in which a report says "cannot detect" rather than "no difference"."""
    first, second = (f.human, f.human2) if len(f.human2) else (f.human[0::2], f.human[1::2])
    if len(second) < 2:
        return {}
    # Disjoint k-means seeds per repetition when a score already averages ``kmeans_seeds`` of them.
    scores = [mauve_scores(first, second, replace(cfg, seed=cfg.seed + k * cfg.kmeans_seeds)) for k in range(HUMAN_SEEDS)]
    mu, sd = mean_std([s.mauve for s in scores])
    return {
        keys.section_key(key, "human_mauve"): mu,
        keys.section_key(key, "human_mauve_std"): sd,
        keys.section_key(key, "human_mauve_star"): mean_std([s.mauve_star for s in scores])[0],
        keys.section_key(key, "human_frontier_integral"): mean_std([s.frontier_integral for s in scores])[0],
    }


def all_metrics(f: CorpusFeatures, cfg: MauveConfig, key: str) -> dict[str, float]:
    return {**model_metrics(f, cfg, key), **human_metrics(f, cfg, key)}


def disjoint_windows(corpus, tokenizer, prompts: list, *, seed: int, window_unit: str = "tokens") -> tuple[list, str]:
    """A second set of ``len(prompts)`` windows sharing none with ``prompts`` (the reference
    windows), drawn through ``make_prompts`` with twice as many prompts and the same seed; or
    ``[]`` and why there is none (the corpus has too few windows)."""
    from emo_ray.evaluation.prompts import make_prompts

    n = len(prompts)
    try:
        pool, counts = make_prompts(corpus, tokenizer, num_prompts=2 * n, seed=seed, window_unit=window_unit)
    except ValueError as e:
        return [], f"no second set ({' '.join(str(e).split())}); {SPLIT_HALF_NOTE}"
    used = {(tuple(p.prefix_ids), tuple(p.reference_ids)) for p in prompts}
    fresh = [p for p in pool if (tuple(p.prefix_ids), tuple(p.reference_ids)) not in used][:n]
    if len(fresh) < n:
        return [], f"no second set (only {len(fresh)} windows outside the {n} reference windows, {n} needed); {SPLIT_HALF_NOTE}"
    return fresh, (f"second set of {n} windows disjoint from the reference windows "
                   f"(make_prompts num_prompts={2 * n} seed={seed}), texts_per_side={n} "
                   f"kmeans_seeds={HUMAN_SEEDS} (mauve.seed + 0..{HUMAN_SEEDS - 1}), other settings as mauve")
