"""A persistent embedding cache: (model fingerprint, text hash) -> vector, in SQLite.

The nightly job embeds only texts it has not seen under the same model: a text is keyed by the
sha256 of its exact string, the model by the fingerprint of its weights, so a new model or a
changed text never reuses a stale vector. Inserts are committed in batches inside transactions,
so a run killed half way keeps every batch it finished and a re-run starts where it stopped.

>>> cache = EmbeddingCache(":memory:")
>>> cache.put("fp1", ["Dark Chocolate"], np.ones((1, 3), dtype=np.float32))
>>> cache.get("fp1", ["Dark Chocolate", "Sugar"])[0].shape, cache.get("fp1", ["Sugar"])[1]
((1, 3), [0])
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Sequence

import numpy as np

from migrate.core.hashing import text_hash
from migrate.errors import TaxmigError

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    model TEXT NOT NULL,
    text_hash TEXT NOT NULL,
    dim INTEGER NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (model, text_hash)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sizes (
    model TEXT PRIMARY KEY,
    rows INTEGER NOT NULL
)
"""
# ``sizes``: how many vectors each model has, so :meth:`EmbeddingCache.get` can choose between a
# scan and lookups without counting them (a count reads every row, as the scan does). Written on
# the first count, kept up by :meth:`EmbeddingCache.put`; only ever a hint.
LOOKUP_CHUNK = 900  # below SQLite's default limit of host parameters per statement
SCAN_SHARE = 0.25
"""When the texts asked for are at least this share of a model's cached vectors, :meth:`EmbeddingCache.get`
reads all of them in one scan instead of looking each up (a night asks for nearly all of them). A
scan reads a row for less than a lookup costs, so it wins well before half the rows are asked for;
0.25 is a round share on the safe side of that."""
SCAN_FROM = 1000  # below this many texts the lookups are quick, and counting the cache is not worth it


class EmbeddingCache:
    """Vectors by model fingerprint and text hash; ``path`` may be ``":memory:"`` for tests."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        try:
            self._db = sqlite3.connect(self.path, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL") if self.path != ":memory:" else None
            self._db.executescript(SCHEMA)
            self._db.commit()
        except sqlite3.DatabaseError as exc:
            raise TaxmigError(f"{self.path}: the embedding cache cannot be opened ({exc})",
                              hint="delete the file; it only holds vectors that are recomputed on the next run") from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "EmbeddingCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def get(self, model: str, texts: Sequence[str]) -> tuple[np.ndarray, list[int]]:
        """Vectors of the cached texts (in ``texts`` order) and the positions of the missing ones.

        Returns ``(found, missing)`` where ``found`` has one row per text *not* in ``missing``.
        """
        hashes = [text_hash(t) for t in texts]
        position: dict[str, int] = {}
        blobs: list[bytes] = []
        dim = 0
        distinct = list(dict.fromkeys(hashes))
        if len(distinct) >= SCAN_FROM and len(distinct) >= SCAN_SHARE * self._size(model):
            wanted = set(distinct)
            rows = self._db.execute("SELECT text_hash, dim, vector FROM embeddings WHERE model = ?", [model])
            for h, d, blob in rows:
                if h in wanted:
                    position[h] = len(blobs)
                    blobs.append(blob)
                    dim = d
        else:
            for start in range(0, len(distinct), LOOKUP_CHUNK):
                chunk = distinct[start:start + LOOKUP_CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT text_hash, dim, vector FROM embeddings WHERE model = ? AND text_hash IN ({marks})",
                    [model, *chunk])
                for h, d, blob in rows:
                    position[h] = len(blobs)
                    blobs.append(blob)
                    dim = d
        missing = [i for i, h in enumerate(hashes) if h not in position]
        if not blobs:
            return np.zeros((0, 0), np.float32), missing
        stored = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), dim)
        rows_found = [position[h] for h in hashes if h in position]
        return stored[rows_found].copy(), missing

    def put(self, model: str, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Store vectors (one transaction); existing entries are kept as they are."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        rows = [(model, text_hash(t), int(v.size), v.tobytes()) for t, v in zip(texts, vectors)]
        with self._db:
            added = self._db.executemany("INSERT OR IGNORE INTO embeddings VALUES (?, ?, ?, ?)", rows).rowcount
            self._db.execute("UPDATE sizes SET rows = rows + ? WHERE model = ?", [max(added, 0), model])

    def _size(self, model: str) -> int:
        """How many vectors ``model`` has, from ``sizes`` (counted and written there the first time)."""
        row = self._db.execute("SELECT rows FROM sizes WHERE model = ?", [model]).fetchone()
        if row is not None:
            return int(row[0])
        rows = self.count(model)
        try:
            with self._db:
                self._db.execute("INSERT OR IGNORE INTO sizes VALUES (?, ?)", [model, rows])
        except sqlite3.DatabaseError as exc:  # a hint not written costs the next run a count, nothing else
            log.debug("embedding cache size not recorded: %s", exc)
        return rows

    def count(self, model: str | None = None) -> int:
        if model is None:
            return int(self._db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0])
        return int(self._db.execute("SELECT COUNT(*) FROM embeddings WHERE model = ?", [model]).fetchone()[0])

    def trim(self, keep_model: str, max_vectors: int) -> int:
        """Hold at most ``max_vectors``: past it, drop the other models' vectors, then, if still
        past it, every vector (a cache: dropped vectors are encoded again when needed). Returns how
        many were dropped."""
        total = self.count()
        if total <= max_vectors:
            return 0
        with self._db:
            self._db.execute("DELETE FROM embeddings WHERE model != ?", [keep_model])
            self._db.execute("DELETE FROM sizes WHERE model != ?", [keep_model])
            if self.count() > max_vectors:
                self._db.execute("DELETE FROM embeddings")
                self._db.execute("DELETE FROM sizes")
        self._db.execute("VACUUM")
        dropped = total - self.count()
        log.info("%s: dropped %d cached vectors (the cache holds at most %d)", self.path, dropped, max_vectors)
        return dropped


CATEGORY_CACHE_MAX_VECTORS = 300_000
"""The user-level category cache's size cap: about 450 MB of 384-dimension vectors, the three
phrasings of Google's and Shopify's taxonomies many times over."""


def open_category_cache(model: str, *, max_vectors: int = CATEGORY_CACHE_MAX_VECTORS) -> EmbeddingCache | None:
    """The user-level cache of category texts (:func:`models.cache.category_cache_path`), trimmed
    to ``max_vectors`` keeping ``model``'s; None, with a warning, where it cannot be opened (a run
    never fails for its cache)."""
    from models.cache import category_cache_path

    path = category_cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        cache = EmbeddingCache(path)
        cache.trim(model, max_vectors)
        return cache
    except (OSError, sqlite3.Error, TaxmigError) as exc:
        log.warning("category embedding cache %s not used: %s", path, exc)
        return None


class LayeredCache:
    """Two caches as one: read ``first``, then ``second`` for what ``first`` lacks (copying those
    into ``first``); written into both. A state's own cache before the user's category cache: the
    state keeps every vector its nights need, whatever becomes of the user's cache."""

    def __init__(self, first: EmbeddingCache, second: EmbeddingCache) -> None:
        self.first, self.second = first, second

    def get(self, model: str, texts: Sequence[str]) -> tuple[np.ndarray, list[int]]:
        """As :meth:`EmbeddingCache.get`: the vectors found in either cache, in ``texts`` order, and
        the positions found in neither."""
        found, missing = self.first.get(model, texts)
        if not missing:
            return found, missing
        rest = [texts[i] for i in missing]
        more, still = self.second.get(model, rest)
        if not more.size:
            return found, missing
        hit = np.setdiff1d(np.arange(len(rest)), still)         # positions in ``rest`` the second cache had
        self.first.put(model, [rest[j] for j in hit], more)
        have = np.ones(len(texts), dtype=bool)
        have[np.asarray(missing)[still]] = False                # the rows returned: every text but ``still``
        row = np.cumsum(have) - 1                               # each such text's row in the result
        out = np.empty((int(have.sum()), more.shape[1]), dtype=np.float32)
        from_first = np.ones(len(texts), dtype=bool)
        from_first[missing] = False
        out[row[from_first]] = found.reshape(-1, more.shape[1])
        out[row[np.asarray(missing)[hit]]] = more
        return out, [missing[j] for j in still]

    def put(self, model: str, texts: Sequence[str], vectors: np.ndarray) -> None:
        self.first.put(model, texts, vectors)
        self.second.put(model, texts, vectors)

