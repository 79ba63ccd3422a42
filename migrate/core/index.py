"""FAISS inner-product search over unit vectors (so scores are cosine similarities).

Exact search (``IndexFlatIP``) by default; an HNSW graph when the indexed set is larger than
``exact_limit``, or when the caller's queries times the indexed rows exceed :data:`EXACT_PAIRS`
(an exact search's cost); the flat index moves to the GPU when faiss-gpu and a GPU are present.

>>> index = build_index(np.eye(3, dtype=np.float32))
>>> sims, ids = search(index, np.eye(3, dtype=np.float32)[:1], k=2)
>>> ids[0].tolist()
[0, 1]
>>> build_index(np.eye(3, dtype=np.float32)).kind, build_index(np.eye(3, dtype=np.float32), queries=10**11).kind
('flat (exact)', 'HNSW (approximate)')
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import faiss
import numpy as np

log = logging.getLogger(__name__)

EXACT_LIMIT = 250_000
EXACT_PAIRS = 25_000_000_000
"""Exact search up to this many query x indexed pairs (100k queries over 250k rows); beyond, an HNSW
graph (BENCHMARKS.md, "scale: match 100,000 x 1,000,000 products")."""
HNSW_NEIGHBOURS = 32
HNSW_EF_SEARCH = 128


def gpu_count() -> int:
    """Number of GPUs faiss can use (0 with faiss-cpu)."""
    get = getattr(faiss, "get_num_gpus", None)
    try:
        return int(get()) if get else 0
    except RuntimeError:  # pragma: no cover - driver problems
        return 0


@dataclass
class VectorIndex:
    """A faiss index and a words-for-people description of it (reported in the Summary)."""

    index: faiss.Index
    kind: str

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)


def build_index(vectors: np.ndarray, *, exact_limit: int = EXACT_LIMIT, use_gpu: bool | None = None,
                queries: int | None = None) -> VectorIndex:
    """Index ``vectors`` (n, d), float32 unit rows. Returns an index whose ids are row numbers.
    ``queries``: how many queries the caller will search with (None: unknown, the size rule alone)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    if n > exact_limit or (queries is not None and queries * n > EXACT_PAIRS):
        index = faiss.IndexHNSWFlat(dim, HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = HNSW_EF_SEARCH
        kind = "HNSW (approximate)"
    else:
        index = faiss.IndexFlatIP(dim)
        kind = "flat (exact)"
    if (use_gpu if use_gpu is not None else gpu_count() > 0) and kind.startswith("flat") and gpu_count() > 0:
        index = faiss.index_cpu_to_all_gpus(index)
        kind += " on GPU"
    index.add(vectors)
    log.info("built %s index over %d vectors", kind, n)
    return VectorIndex(index, kind)


SEARCH_CHUNK = 65_536  # queries per faiss call when a progress bar is shown


def search(index: VectorIndex, queries: np.ndarray, k: int, *, progress: bool = False,
           desc: str = "searching") -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` (similarities, ids); ids are -1 where the index holds fewer than ``k`` vectors.
    ``progress``: a bar over chunks of :data:`SEARCH_CHUNK` queries (a million take minutes); a
    :class:`~migrate.core.progress.Progress`: counted on that run's display instead."""
    k = max(1, min(k, index.ntotal)) if index.ntotal else 1
    if len(queries) == 0 or index.ntotal == 0:
        return np.zeros((len(queries), k), np.float32), np.full((len(queries), k), -1, np.int64)
    if not progress or len(queries) <= SEARCH_CHUNK:
        return index.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    from tqdm.auto import tqdm

    from migrate.core.progress import Progress, stage_of

    sims = np.empty((len(queries), k), np.float32)
    ids = np.empty((len(queries), k), np.int64)
    # a run's display (a step of its open stage), else a bar of its own
    with (stage_of(progress, desc, total=len(queries), unit="products") if isinstance(progress, Progress)
          else tqdm(total=len(queries), unit="products", desc=desc)) as bar:
        for start in range(0, len(queries), SEARCH_CHUNK):
            stop = min(start + SEARCH_CHUNK, len(queries))
            sims[start:stop], ids[start:stop] = index.index.search(
                np.ascontiguousarray(queries[start:stop], dtype=np.float32), k)
            bar.update(stop - start)
    return sims, ids
