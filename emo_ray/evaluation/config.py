"""One typed config for an evaluation: frozen dataclasses, YAML plus ``key=value`` overrides.

    cfg = load_eval_config("configs/eval/quick.yaml", ["icl.num_items=50"])

Unknown keys and wrong types fail at load time, naming the valid keys. The defaults are the
paper's settings for users with hub access (gpt2-large featurizer and oracle, all-mpnet-base-v2
retriever, all eight ICL tasks); ``configs/eval/*.yaml`` hold the offline variants.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from emo_ray import typed_config
from emo_ray.bounds import Bounds
from emo_ray.config import TrackingConfig
from emo_ray.inference.executor import ExecutionConfig

EvalConfigError = typed_config.ConfigError


@dataclass(frozen=True)
class GenerationConfig:
    corpora: tuple = ("wikitext-2", "webtext")
    """Names in ``emo_ray.evaluation.corpora.CORPORA`` (paper Table 4 prefix / generation lengths)
    or paths to corpus YAML files."""
    num_prompts: Annotated[int, Bounds(ge=0, note="0 = all")] = 200
    """Prompts per corpus: a seeded sample of all windows (0 = all)."""
    seeds: tuple = (0, 1)
    """Sampling seeds; every score is reported as mean and std over them."""
    decoders: tuple = ("ancestral",)
    """Names in ``emo_ray.inference.decoders.DECODERS``; ``ancestral`` is the paper's unbiased
    sampling (top_k=0, top_p=1, temperature 1)."""
    prompt_seed: int = 0
    """Seed of the prompt sample (fixed across models so that they see the same prompts)."""
    batch_size: Annotated[int, Bounds(gt=0)] = 16
    """Prompts per sampling batch (rows of equal prefix length sample together: no padding)."""
    pad_prefixes: bool = False
    """Opt-in: every batch samples as one left-padded decode instead of one decode per prefix
    length (word windows: ~35 rows per decode at 250 prompts x 2 seeds, batch 125). Same
    distribution and generator calls, other bf16 rounding: samples differ from the default's
    (benchmarks/README.md, "Evaluation stages")."""
    window_unit: Literal["tokens", "words"] = "tokens"
    """What a corpus's ``prefix_tokens`` / ``gen_tokens`` count when prompts are cut.
    ``tokens`` (project): windows of the evaluated model's tokens over every unit. ``words``
    (official, DRSY/EMO ``test_utils.py:test_batch``): one prompt per dataset row among the first
    ``scan_rows`` that has >= 100 characters, >= prefix + continuation + 10 words (``split(" ")``)
    and no ``==``; prefix = its first ``prefix_tokens`` words, human continuation = the next
    ``gen_tokens`` words; ``gen_tokens`` new tokens are still sampled."""
    stop_at_eos: bool = True
    """``true`` (project): a sample ends at EOS. ``false`` (official): EOS cannot be drawn among
    the first ``gen_tokens`` new tokens (HF ``min_new_tokens``, as ``test_batch``)."""
    extra_tokens: Annotated[int, Bounds(ge=0)] = 0
    """Tokens sampled after the corpus's ``gen_tokens``, where EOS may end a sample again. Official:
    1 (``test_batch`` passes ``min_new_tokens=decode_newlen, max_new_tokens=decode_newlen+1``)."""
    precision_recall: bool = False
    """Also score the paper's Figure 2 quantities (section 4) on the same prompts:
    ``gen/<corpus>/recall_ce``, forward cross-entropy (human continuations under the evaluated
    model), and ``gen/<corpus>/<decoder>/precision_ce_mean`` / ``_std``, reverse cross-entropy
    (the model's samples under ``surrogate``), both in nats per token. See
    ``emo_ray/evaluation/precision_recall.py``."""
    surrogate: str = ""
    """Surrogate of the data distribution that scores the samples for ``precision_ce``: registry
    name, hub id or folder; empty = ``oracle.model`` (then the oracle's NLLs are reused and
    ``precision_ce`` is exactly ``log(oracle_ppl)`` per seed, no second scoring pass)."""


@dataclass(frozen=True)
class MauveConfig:
    featurizer: str = "gpt2-large"
    """Causal LM whose hidden states are the MAUVE features: registry name, hub id or folder. The
    paper (and mauve-text) use gpt2-large; offline use a local model, e.g. ``smollm2-135m``."""
    pooling: Literal["last", "mean"] = "last"
    """``last``: final-layer state of the last token (what mauve-text does with gpt2-large);
    ``mean``: mean over tokens (separates human from shuffled text with small local models)."""
    layer: int = -1
    """Which hidden state to pool (Python index into ``hidden_states``, 0 = embeddings): -1 is the
    final layer, as mauve-text with gpt2-large. A small LM's final layer is specialised for the
    next token: with SmolLM2-135M, human vs word-shuffled wikitext scores MAUVE 0.44 at -1 but
    0.03 at -8 (human vs human 0.95 / 0.96, 100 texts per side), so offline configs use -8."""
    max_tokens: Annotated[int, Bounds(gt=0)] = 1024
    """Featurizer truncation (mauve-text's ``max_text_length``)."""
    include_prefix: bool = True
    """Featurize prompt + continuation (human and model side alike), else the continuation only."""
    num_buckets: Annotated[int, Bounds(ge=0, note="0 = auto")] = 0
    """k-means clusters; 0 = mauve-text's 'auto' (n / 10)."""
    scaling_factor: Annotated[float, Bounds(gt=0)] = 5.0
    kmeans_explained_var: Annotated[float, Bounds(gt=0, le=1)] = 0.9
    kmeans_num_redo: int = 5
    kmeans_max_iter: int = 500
    seed: int = 25
    kmeans_seeds: Annotated[int, Bounds(ge=1)] = 1
    """Average MAUVE, MAUVE* and the frontier integral over this many k-means seeds (``seed``,
    ``seed + 1``, ...). At a few hundred texts the quantization moves MAUVE as much as a new
    sampling run does; averaging 5 seeds raised the pre-trained vs fine-tuned separation 1.4x ->
    9.2x in benchmarks/mauve_sensitivity.py. 1: mauve-text's single quantization (official)."""
    batch_size: Annotated[int, Bounds(gt=0)] = 16
    cache: bool = True
    """Cache the human-side features on disk (keyed by featurizer, pooling and texts)."""


@dataclass(frozen=True)
class OracleConfig:
    enabled: bool = True
    """Score every generation with the oracle (``oracle_ppl``, Table 2). ``false`` skips the stage
    when no table needs it (Figure 1 reads validation loss, MAUVE and ICL accuracy): on 2 CPU cores
    the Gemma-3-270M oracle was ~55 % of each open-ended evaluation of table1-cpu."""
    model: str = "gpt2-large"
    """Model that scores the generations (perplexity of each continuation given its prompt)."""
    batch_size: Annotated[int, Bounds(gt=0)] = 16
    fp32_head: bool = True
    """``false`` (opt-in): with a bf16 ``execution.dtype`` the oracle's output head runs in bf16
    too, ~1.5x faster for Gemma-3-270M, perplexity moved ~2e-4 relative (benchmarks/README.md)."""


@dataclass(frozen=True)
class RougeConfig:
    use_stemmer: bool = True
    """Porter stemming in rouge-score. ``split_summaries`` stays off (it needs an NLTK download)."""


@dataclass(frozen=True)
class ICLConfig:
    tasks: tuple = ("sst2", "tweet_emotion", "trec", "subj", "cr", "rotten_tomatoes", "ag_news", "mmlu")
    """Task names (``emo_ray/evaluation/tasks/*.yaml``) or paths to task YAML files."""
    num_items: Annotated[int, Bounds(ge=0, note="0 = all")] = 0
    """Test items per task: a seeded sample (0 = the whole test split)."""
    item_selection: Literal["random", "longest"] = "random"
    """Which ``num_items``: a seeded sample, or the items with the longest prompts (a smoke test of
    position limits and memory)."""
    seed: int = 0
    demonstrations: Annotated[int, Bounds(ge=-1, note="-1 = the task's own")] = -1
    """Override of every task's demonstration count (-1: the task's own, 8 or MMLU's 5)."""
    retriever: str = "all-mpnet-base-v2"
    """Sentence-transformer for top-k retrieval: a name in ``icl.retriever.RETRIEVERS``, hub id or
    folder. The default is OpenICL's TopkRetriever default, which the paper ran."""
    retriever_batch_size: Annotated[int, Bounds(gt=0)] = 64
    scorer: Literal["shared_prefix", "plain", "rank_only"] = "shared_prefix"
    """``shared_prefix``: the whole prompt's NLL with the demonstrations run once per item (OpenICL's
    numbers, faster); ``plain``: one pass per candidate (OpenICL's way); ``rank_only``: the same
    predictions without the output head on the prefix of items whose candidates have one length
    (their logged ``nll_sum`` then leaves the prefix out), see ``icl.scorer``."""
    normalization: Literal["token_mean", "openicl", "sum"] = "token_mean"
    """How a prompt's NLL becomes its perplexity score, see ``icl.predict.NORMALIZATIONS``."""
    wording: Literal["official", "paper"] = "official"
    """Which template of each task fills the prompts: ``official``, the task's ``template``, as in
    DRSY/EMO ``continual_finetuning/icl.py`` (the code that produced the paper's ICL numbers), or
    ``paper``, its ``paper_template``, as printed in the paper's Table 5 (a task without one fails
    at load time)."""
    batch_items: Annotated[int, Bounds(gt=0)] = 4
    """Items per scoring forward pass."""
    skip_unavailable: bool = False
    """A task whose data cannot be loaded (e.g. a hub dataset offline) is recorded as a counted
    skip instead of failing the evaluation."""


@dataclass(frozen=True)
class EvalConfig:
    model: str = "tiny-llama"
    """Registry name, hub id, local folder, or ``mlflow:<run_id>`` (its ``hf_model_path`` tag)."""
    protocol: Literal["project", "official"] = "project"
    """Open-ended generation protocol: sets every field of ``PROTOCOLS[protocol]`` that the config
    does not set itself (explicit values win). ``official``: DRSY/EMO ``test_utils.py:test_batch``
    (word windows with its row filters, forced length, mauve-text defaults with
    ``max_text_length=256``); ``project``: the dataclass defaults. See docs/evaluation.md."""
    generation_enabled: bool = True
    icl_enabled: bool = True
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    mauve: MauveConfig = field(default_factory=MauveConfig)
    oracle: OracleConfig = field(default_factory=OracleConfig)
    rouge: RougeConfig = field(default_factory=RougeConfig)
    icl: ICLConfig = field(default_factory=ICLConfig)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    tracking: TrackingConfig = field(default_factory=lambda: TrackingConfig(experiment="emo-ray-eval"))


def _project_preset() -> dict[str, dict[str, Any]]:
    g, m = GenerationConfig(), MauveConfig()
    return {"generation": {k: getattr(g, k) for k in _GEN_KEYS}, "mauve": {k: getattr(m, k) for k in _MAUVE_KEYS}}


_GEN_KEYS = ("window_unit", "stop_at_eos", "extra_tokens", "num_prompts")
_MAUVE_KEYS = ("featurizer", "pooling", "layer", "max_tokens", "include_prefix", "num_buckets", "scaling_factor",
               "kmeans_explained_var", "kmeans_num_redo", "kmeans_max_iter", "seed")
PROTOCOLS: dict[str, dict[str, dict[str, Any]]] = {
    "project": _project_preset(),
    "official": {
        # DRSY/EMO language_modeling/test_utils.py:test_batch (commit 14da9d5)
        # (num_prompts 0: every row that passes the filters is a prompt, no subsample)
        "generation": {"window_unit": "words", "stop_at_eos": False, "extra_tokens": 1, "num_prompts": 0},
        # ... mauve.compute_mauve(p_text, q_text, max_text_length=256, featurize_model_name=gpt2-large):
        # texts are prefix + continuation on both sides; every other setting is mauve-text's default
        # (last-token final-layer gpt2-large features, num_buckets 'auto' = n / 10, c = 5, PCA 0.9,
        # k-means 5 redos x 500 iterations, seed 25).
        "mauve": {"featurizer": "gpt2-large", "pooling": "last", "layer": -1, "max_tokens": 256, "include_prefix": True,
                  "num_buckets": 0, "scaling_factor": 5.0, "kmeans_explained_var": 0.9, "kmeans_num_redo": 5,
                  "kmeans_max_iter": 500, "seed": 25},
    },
}
"""What ``protocol`` sets. It leaves ``seeds`` and ``decoders`` alone (the official ones are 5
runs of ``test_batch`` in ``run_lm.py`` and unbiased sampling, set in configs/eval/table1.yaml)."""


def apply_protocol(tree: dict) -> dict:
    """``tree`` with the fields of its ``protocol`` filled in where it leaves them unset."""
    name = tree.get("protocol", "project")
    if not isinstance(name, str) or name not in PROTOCOLS:
        raise EvalConfigError(f"protocol: {name!r} is not one of {list(PROTOCOLS)}")
    out = dict(tree)
    for section, values in PROTOCOLS[name].items():
        given = out.get(section, {})
        if not isinstance(given, dict):
            continue  # build() reports the malformed section
        out[section] = {**values, **given}
    return out


def load_eval_config(path: str | Path | None = None, overrides: list[str] | None = None, *,
                     tree: dict | None = None) -> EvalConfig:
    """YAML file (optional; shipped ``configs/eval/...`` resolve from any working directory), a
    nested mapping of overrides (typed callers such as a sweep), then ``key=value`` overrides,
    then the ``protocol``'s values for whatever none of them set -> validated ``EvalConfig``."""
    cfg = typed_config.build(EvalConfig, apply_protocol(typed_config.load_tree(path, overrides, tree)))
    validate(cfg)
    return cfg


def validate(cfg: EvalConfig) -> None:
    """Cross-field checks a type cannot express; fail before any model loads."""
    from emo_ray.evaluation.corpora import get_corpus
    from emo_ray.evaluation.icl.tasks import load_task
    from emo_ray.evaluation.prompts import check_word_windows
    from emo_ray.inference.decoders import get_decoder

    g, i, e = cfg.generation, cfg.icl, cfg.execution
    try:
        if cfg.generation_enabled:
            for name in g.corpora:
                corpus = get_corpus(name)
                if g.window_unit == "words":  # too few rows pass the official filters: fail now
                    check_word_windows(corpus, g.num_prompts)
            for name in g.decoders:
                get_decoder(name)
            from emo_ray.evaluation.featurize import check_layer

            check_layer(cfg.mauve.featurizer, cfg.mauve.layer)  # issue 25.4: at load, not after sampling
            if g.precision_recall and g.surrogate:
                _check_model("generation.surrogate", g.surrogate)
            if g.precision_recall and not g.surrogate and not cfg.oracle.enabled:
                raise ValueError("generation.precision_recall scores with the oracle unless generation.surrogate is "
                                 "set, and oracle.enabled is false: set generation.surrogate or enable the oracle")
        if cfg.icl_enabled:
            for t in i.tasks:
                load_task(t, wording=i.wording)  # a typo or a missing wording fails here, not after a model loaded
    except ValueError as err:
        raise EvalConfigError(str(err)) from None
    checks = [
        (len(g.seeds) >= 1 or not cfg.generation_enabled, "generation.seeds needs at least one seed"),
        (len(set(g.seeds)) == len(g.seeds), "generation.seeds has duplicates"),
        (e.dtype != "fp16" or e.gpus_per_actor > 0, "execution.dtype=fp16 needs gpus_per_actor > 0 (CPUs: bf16 or fp32)"),
    ]
    for ok, msg in checks:
        if not ok:
            raise EvalConfigError(msg)


def _check_model(key: str, name: str) -> None:
    """A model name that cannot load fails now, in one line (no conversion, no download)."""
    from emo_ray.models import check_available

    try:
        check_available(name)
    except (FileNotFoundError, OSError) as err:
        raise EvalConfigError(f"{key}: {err}") from None


def to_flat(cfg: EvalConfig) -> dict[str, Any]:
    """``{"icl.scorer": "shared_prefix", ...}`` (tuples as lists): for MLflow params and Ray."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in typed_config.to_flat(cfg).items()}


def from_flat(flat: dict[str, Any]) -> EvalConfig:
    return typed_config.from_flat(EvalConfig, flat)
