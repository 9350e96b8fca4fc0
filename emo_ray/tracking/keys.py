"""Every metric name the project logs, built and parsed in one place.

An evaluation keeps plain names (``gen/wikitext-2/ancestral/seed0/mauve``); on MLflow they carry
the ``eval/`` prefix so evaluation scores sort apart from the ``train/`` and ``val/`` curves of the
same run. Readers (reports, the console summary) parse the names back with the ``parse_*``
functions here, never with a regex of their own, so a name written and a name read cannot drift.
Stored runs are read by these exact strings: a builder's output never changes.

Families (plain form; ``<c>`` corpus label, ``<d>`` decoder, ``<s>`` sampling seed, ``<t>`` task):

* ``gen/<c>/<d>/seed<s>/<metric>``        one sampling run's score (paper 4.1)   ``gen_key``
* ``gen/<c>/<d>/<metric>_{mean,std}``     over the sampling seeds                ``gen_stat_key``
* ``gen/<c>/<metric>``                    per corpus (``human_mauve``, ``recall_ce``)  ``gen_corpus_key``
* ``icl/<t>/<metric>``, ``icl/avg_accuracy``  in-context learning (paper 4.2)     ``icl_key``
* ``time/<section...>/<phase>``           wall times                              ``time_key``
* ``rescore/<tag>/<gen key>``             ``emo-ray rescore`` under other MAUVE settings  ``rescore_key``
* ``headline/<name>``, ``figure1/<metric>/<axis>/<objective>[/<domain>]/<param>``  written by the report

A name's parts hold no ``/`` (corpus labels, decoder and task names have none), which is what lets
the parsers read them back. The builders do not check it: readers also build names to look a
column up, and a part that was never written (an empty domain) must find nothing, not raise.
"""
from __future__ import annotations

import re
from typing import NamedTuple

EVAL = "eval/"
TRAIN = "train/"
VAL = "val/"
NONFINITE = "nonfinite_metrics"
"""How many values a logging call left out for not being finite numbers."""
SINK_ERRORS = "mlflow_sink_errors"
TRAIN_LOSS = f"{TRAIN}loss"
VAL_LOSS = f"{VAL}loss"
ICL_AVG = "icl/avg_accuracy"
ICL_N_TASKS = "icl/n_tasks"
ICL_N_TASKS_SKIPPED = "icl/n_tasks_skipped"
STATS = ("mean", "std")
_PART = r"([^/]+)"


def _strip(name: str, prefix: str) -> str | None:
    return name[len(prefix):] if name.startswith(prefix) else None


def eval_name(key: str) -> str:
    """The MLflow name of an evaluation key: ``eval/<key>``."""
    return f"{EVAL}{key}"


def prefixed(metrics, prefix: str) -> dict:
    """``{"loss": 1} -> {"train/loss": 1}`` for ``prefix="train/"`` (MLflow names only; what Ray
    Train / Tune see keeps the plain names)."""
    return {f"{prefix}{k}": v for k, v in metrics.items()}


# -- open-ended generation (paper 4.1) --------------------------------------------------------

class GenKey(NamedTuple):
    corpus: str
    decoder: str
    seed: int
    metric: str


class GenStatKey(NamedTuple):
    corpus: str
    decoder: str
    metric: str
    stat: str


class GenCorpusKey(NamedTuple):
    corpus: str
    metric: str


def gen_section(corpus: str) -> str:
    """``gen/<corpus>``: the section every key of one corpus starts with."""
    return f"gen/{corpus}"


def seed_key(section: str, decoder: str, seed: int, metric: str) -> str:
    """``<section>/<decoder>/seed<s>/<metric>`` (``section``: ``gen_section(corpus)`` on a run;
    a re-scoring or a test may prefix differently)."""
    return f"{section}/{decoder}/seed{int(seed)}/{metric}"


def stat_key(section: str, decoder: str, metric: str, stat: str) -> str:
    """``<section>/<decoder>/<metric>_<stat>``, ``stat`` mean or std over the sampling seeds."""
    if stat not in STATS:
        raise ValueError(f"metric key stat {stat!r} must be one of {STATS}")
    return f"{section}/{decoder}/{metric}_{stat}"


def section_key(section: str, metric: str) -> str:
    """``<section>/<metric>``: one number of the whole section (corpus or task)."""
    return f"{section}/{metric}"


def gen_key(corpus: str, decoder: str, seed: int, metric: str) -> str:
    return seed_key(gen_section(corpus), decoder, seed, metric)


def gen_stat_key(corpus: str, decoder: str, metric: str, stat: str) -> str:
    return stat_key(gen_section(corpus), decoder, metric, stat)


def gen_corpus_key(corpus: str, metric: str) -> str:
    return section_key(gen_section(corpus), metric)


_GEN = re.compile(rf"^gen/{_PART}/{_PART}/seed(\d+)/{_PART}$")
_GEN_STAT = re.compile(rf"^gen/{_PART}/{_PART}/([^/]+)_(mean|std)$")
_GEN_CORPUS = re.compile(rf"^gen/{_PART}/{_PART}$")


def parse_gen_key(name: str, prefix: str = EVAL) -> GenKey | None:
    m = _GEN.match(_strip(name, prefix) or "")
    return GenKey(m[1], m[2], int(m[3]), m[4]) if m else None


def parse_gen_stat_key(name: str, prefix: str = EVAL) -> GenStatKey | None:
    m = _GEN_STAT.match(_strip(name, prefix) or "")
    return GenStatKey(*m.groups()) if m else None


def parse_gen_corpus_key(name: str, prefix: str = EVAL) -> GenCorpusKey | None:
    m = _GEN_CORPUS.match(_strip(name, prefix) or "")
    return GenCorpusKey(*m.groups()) if m else None


# -- in-context learning (paper 4.2) ----------------------------------------------------------

class IclKey(NamedTuple):
    task: str
    metric: str


def icl_section(task: str) -> str:
    return f"icl/{task}"


def icl_key(task: str, metric: str) -> str:
    return section_key(icl_section(task), metric)


_ICL = re.compile(rf"^icl/{_PART}/{_PART}$")


def parse_icl_key(name: str, prefix: str = EVAL) -> IclKey | None:
    m = _ICL.match(_strip(name, prefix) or "")
    return IclKey(*m.groups()) if m else None


# -- wall times, re-scoring, the report's own metrics -----------------------------------------

def time_key(*parts: str) -> str:
    """``time/<parts...>``; a part may be a section (``gen/<corpus>``), the last is the phase."""
    if not parts:
        raise ValueError("time_key needs at least the phase")
    return "/".join(["time", *map(str, parts)])


def parse_time_key(name: str, prefix: str = EVAL) -> tuple[str, ...] | None:
    rest = _strip(name, prefix)
    return tuple(rest.split("/")[1:]) if rest and rest.startswith("time/") and rest.count("/") >= 1 else None


RESCORE = "rescore"


def rescore_key(tag: str, key: str) -> str:
    """``rescore/<tag>/<key>``: ``key`` re-scored under the settings ``tag`` names."""
    return f"{RESCORE}/{tag}/{key}"


def parse_rescore_key(name: str, prefix: str = EVAL) -> tuple[str, str] | None:
    rest = _strip(name, prefix)
    if not rest or not rest.startswith(f"{RESCORE}/") or rest.count("/") < 2:
        return None
    _, tag, key = rest.split("/", 2)
    return tag, key


def headline_key(name: str) -> str:
    return f"headline/{name}"


def parse_headline_key(name: str) -> str | None:
    m = re.match(rf"^headline/{_PART}$", name)
    return m[1] if m else None


class FitKey(NamedTuple):
    metric: str
    axis: str
    objective: str
    domain: str
    param: str


def fit_key(metric: str, axis: str, objective: str, domain: str, param: str) -> str:
    """A fitted power law's parameter on the sweep's parent run (Figure 1)."""
    parts = [metric, axis, objective, *([domain] if domain else []), param]
    return "/".join(["figure1", *map(str, parts)])


def parse_fit_key(name: str) -> FitKey | None:
    parts = name.split("/")
    if parts[0] != "figure1" or len(parts) not in (5, 6) or not all(parts):
        return None
    domain = parts[4] if len(parts) == 6 else ""
    return FitKey(parts[1], parts[2], parts[3], domain, parts[-1])
