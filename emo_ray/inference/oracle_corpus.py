"""The oracle experiment's training corpus (paper 4.1.3, Table 2): paragraphs sampled from an oracle.

EMO (following MixCE) samples a synthetic corpus from an oracle LM (GPT-2-large) with unbiased
ancestral sampling (temperature 1, top_k=0, top_p=1), fine-tunes a student (GPT-2) on it and
scores the student's generations with the oracle (oracle perplexity), MAUVE against held-out
oracle samples and ROUGE-1/L. Because the data distribution *is* the oracle, these numbers measure
how close the student's distribution got to the true one.

    emo-ray sample-corpus configs/oracle/cpu_sample.yaml

Sampling uses the Ray Data machinery the evaluation uses too: :func:`emo_ray.inference.executor.map_rows`
over :class:`emo_ray.inference.sampler.Sampler` with the ``ancestral`` decoder. Every
paragraph starts from the oracle's BOS token (models without one: its EOS token, which is GPT-2's
``<|endoftext|>`` document separator) and runs ``paragraph_tokens`` tokens, or fewer when the
oracle samples EOS (the oracle's own end of text; truncating it away would bias the corpus).

Reproducible and resumable: paragraph ``i`` of the whole corpus (train, then valid, then test)
draws from its own generator seeded by ``(seed, i)`` (:func:`~emo_ray.inference.sampler.row_seed`),
so its text does not depend on batch, actor or shard. Rows are sampled in shards of
``shard_rows``; each shard is written atomically (temporary file + rename) under
``<output_dir>/.shards/``, named by its global row range, and a re-run skips the shards already
there (also after changing the split sizes: paragraph ``i`` is the same text whatever the sizes). The split files
``train.jsonl / valid.jsonl / test.jsonl`` and last ``provenance.json`` are written atomically
too: a crash never leaves a half file that reads as complete, and ``provenance.json`` existing
means the corpus is finished.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from emo_ray import typed_config
from emo_ray.bounds import Bounds
from emo_ray.inference.executor import ExecutionConfig

ConfigError = typed_config.ConfigError
DECODER = "ancestral"
"""Unbiased sampling (temperature 1, no top-k / top-p): not a setting, the experiment needs it."""
SPLITS = ("train", "valid", "test")
PROVENANCE = "provenance.json"


@dataclass(frozen=True)
class SplitSizes:
    train: Annotated[int, Bounds(gt=0)] = 250_000
    """Training paragraphs (paper: 250k)."""
    valid: Annotated[int, Bounds(gt=0)] = 5_000
    """Validation paragraphs (paper: 5k); pass as ``data.validation`` when training."""
    test: Annotated[int, Bounds(gt=0)] = 5_000
    """Held-out paragraphs (paper: 5k): the human side of MAUVE / ROUGE (corpus YAML)."""


@dataclass(frozen=True)
class OracleCorpusConfig:
    oracle: str = "gpt2-large"
    """Oracle model: registry name, hub id or folder (paper: gpt2-large)."""
    output_dir: str = "runs/oracle/corpus"
    """Where ``train/valid/test.jsonl`` and ``provenance.json`` go (``${EMO_RAY_DATA}``, ``~``
    expanded; relative to the working directory)."""
    sizes: SplitSizes = field(default_factory=SplitSizes)
    paragraph_tokens: Annotated[int, Bounds(gt=0)] = 256
    """Tokens sampled per paragraph after BOS (oracle tokenizer); fewer when EOS is sampled."""
    seed: int = 0
    """Base seed; paragraph ``i`` uses ``row_seed(seed, i)`` (``i`` counts over train, valid, test)."""
    batch_size: Annotated[int, Bounds(gt=0)] = 32
    """Paragraphs per sampling batch (all start from one BOS: no padding)."""
    shard_rows: Annotated[int, Bounds(gt=0)] = 1024
    """Paragraphs per shard file: the unit of resumption after a crash."""
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    """Ray Data actor pool (or ``executor: local``), as in the evaluation config."""


def load_oracle_corpus_config(path: str | Path | None = None, overrides: list[str] | None = None) -> OracleCorpusConfig:
    """YAML file plus ``key=value`` overrides -> validated config (``ConfigError`` on any problem)."""
    cfg = typed_config.build(OracleCorpusConfig, typed_config.load_tree(path, overrides, None))
    validate(cfg)
    return cfg


def validate(cfg: OracleCorpusConfig) -> None:
    """Fail before any model loads: what a field type cannot say (the sizes and lengths are
    checked by their ``Bounds`` when the config is built), and an oracle that cannot be had."""
    if not cfg.output_dir:
        raise ConfigError("output_dir must not be empty")
    from emo_ray.models import check_available

    try:
        check_available(cfg.oracle)
    except (FileNotFoundError, OSError) as err:
        raise ConfigError(f"oracle: {err}") from None


def start_ids(tokenizer) -> list[int]:
    """The one-token prefix every paragraph starts from: BOS, else EOS (GPT-2 has both as
    ``<|endoftext|>``; a model with neither cannot start unconditioned text)."""
    for tok in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if tok is not None:
            return [int(tok)]
    raise ValueError("the oracle's tokenizer has neither a BOS nor an EOS token to start paragraphs from")


def split_ranges(sizes: SplitSizes) -> dict[str, range]:
    """Global paragraph indices of each split (train first): the per-row seed key."""
    out, start = {}, 0
    for name in SPLITS:
        n = getattr(sizes, name)
        out[name] = range(start, start + n)
        start += n
    return out


def output_path(cfg: OracleCorpusConfig) -> Path:
    return Path(typed_config.expand_path(cfg.output_dir))


def sample_corpus(cfg: OracleCorpusConfig) -> dict:
    """Sample (or finish sampling) the corpus of ``cfg``; returns the provenance record."""
    from emo_ray.inference.executor import ray_session
    from emo_ray.models.loading import load_tokenizer, materialize

    out = output_path(cfg)
    done = out / PROVENANCE
    if done.exists() and json.loads(done.read_text()).get("config_hash") == config_hash(cfg):
        return json.loads(done.read_text())  # finished: nothing to do
    shards = out / ".shards"
    stamp = shards / "content_hash"
    # A shard sampled with other content settings must never be mixed in: the folder is keyed.
    if stamp.exists() and stamp.read_text() != content_hash(cfg):
        raise FileExistsError(f"{out} holds paragraphs of another oracle / seed / length / dtype; "
                              "choose another output_dir")
    oracle_path = materialize(cfg.oracle)
    prefix = start_ids(load_tokenizer(oracle_path))
    shards.mkdir(parents=True, exist_ok=True)
    _write_atomic(stamp, content_hash(cfg))
    # Other split sizes: the split files are rebuilt; until then no provenance says "finished".
    done.unlink(missing_ok=True)
    stats = {}
    with ray_session(cfg.execution):
        for split, rows in split_ranges(cfg.sizes).items():
            parts = []
            for start in range(rows.start, rows.stop, cfg.shard_rows):
                ids = range(start, min(start + cfg.shard_rows, rows.stop))
                # Named by global indices: a shard's text depends only on them and on the
                # content hash, so a corpus grown or shrunk later reuses what was sampled.
                part = shards / f"{split}-{ids.start:09d}-{ids.stop:09d}.jsonl"
                if not part.exists():
                    _write_atomic(part, "".join(json.dumps(r) + "\n" for r in _sample_rows(cfg, oracle_path, prefix, ids)))
                parts.append(part)
            stats[split] = _join(parts, out / f"{split}.jsonl")
    record = {
        "oracle": cfg.oracle,
        "oracle_path": oracle_path,
        "start_token_ids": prefix,
        "decoder": DECODER,
        "temperature": 1.0, "top_k": 0, "top_p": 1.0,
        "paragraph_tokens": cfg.paragraph_tokens,
        "seed": cfg.seed,
        "row_seed": "emo_ray.inference.sampler.row_seed(seed, i), i global over train, valid, test",
        "splits": {s: {"first_index": r.start, **stats[s]} for s, r in split_ranges(cfg.sizes).items()},
        "config": typed_config.to_flat(cfg),
        "config_hash": config_hash(cfg),
        "content_hash": content_hash(cfg),
    }
    _write_atomic(done, json.dumps(record, indent=2, default=list) + "\n")
    return record


def _sample_rows(cfg: OracleCorpusConfig, oracle_path: str, prefix: list[int], ids: range) -> list[dict]:
    from emo_ray.inference.executor import map_rows
    from emo_ray.inference.sampler import Sampler

    rows = [{"prompt_id": i, "seed": cfg.seed, "decoder": DECODER, "prefix_ids": prefix} for i in ids]
    out = map_rows(rows, Sampler, {"model_path": oracle_path, "gen_tokens": cfg.paragraph_tokens},
                   execution=cfg.execution, batch_size=cfg.batch_size)
    return [{"text": r["generation"], "index": int(r["prompt_id"]), "tokens": len(r["gen_ids"]),
             "ended": bool(r["ended"])} for r in out]


def _join(parts: list[Path], dest: Path) -> dict:
    """Concatenate shard files into ``dest`` atomically; counts for the provenance."""
    lines = [ln for p in parts for ln in p.read_text().splitlines() if ln.strip()]
    rows = [json.loads(ln) for ln in lines]
    _write_atomic(dest, "".join(ln + "\n" for ln in lines))
    return {"paragraphs": len(rows), "tokens": sum(r["tokens"] for r in rows),
            "ended_by_eos": sum(r["ended"] for r in rows), "empty": sum(not r["text"].strip() for r in rows),
            "sha256": hashlib.sha256(dest.read_bytes()).hexdigest()}


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def config_hash(cfg: OracleCorpusConfig) -> str:
    """What decides the corpus' content (not where or how fast it is computed)."""
    flat = typed_config.to_flat(cfg)
    keep = {k: v for k, v in flat.items()
            if k == "execution.dtype" or not k.startswith(("execution.", "output_dir"))}
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=list).encode()).hexdigest()[:16]


def content_hash(cfg: OracleCorpusConfig) -> str:
    """What decides the text of paragraph ``i`` (shards are reusable across split sizes)."""
    # execution.dtype too: bf16 weights sample other tokens than fp32 ones.
    keep = [cfg.oracle, cfg.seed, cfg.paragraph_tokens, DECODER, cfg.execution.dtype]
    return hashlib.sha256(json.dumps(keep).encode()).hexdigest()[:16]
