"""Turn texts into unit-length vectors with a sentence-transformers model, each distinct text once.

With an :class:`~migrate.core.embedding_cache.EmbeddingCache` (the nightly job's), texts already
embedded under the same model fingerprint are read back instead of encoded; new vectors are
stored chunk by chunk, so an interrupted run keeps what it finished.

>>> emb = Embedder(model, batch_size=64, progress=False)   # doctest: +SKIP
>>> emb.encode(["Dark Chocolate", "Dark Chocolate"]).shape  # doctest: +SKIP
(2, 384)
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    from migrate.core.embedding_cache import EmbeddingCache

log = logging.getLogger(__name__)


class Embedder:
    """Batched, normalised encoding with de-duplication of identical texts.

    ``stats`` counts texts asked for, texts actually encoded, texts read from the cache and
    seconds spent encoding, so callers can report the raw encode rate next to the end-to-end rate.
    ``cache_key`` (the model's weight fingerprint) is required with a ``cache``.
    """

    CACHE_CHUNK = 2048

    def __init__(self, model, *, batch_size: int = 64, progress: bool = True,
                 cache: "EmbeddingCache | None" = None, cache_key: str | None = None) -> None:
        if cache is not None and not cache_key:
            raise ValueError("an embedding cache needs the model fingerprint as cache_key")
        self.model = model
        self.batch_size = batch_size
        self.progress = progress
        self.cache = cache
        self.cache_key = cache_key
        self.stats = {"requested": 0, "encoded": 0, "cached": 0, "seconds": 0.0}

    @property
    def dimension(self) -> int:
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(get_dim())

    def encode(self, texts: Sequence[str], *, label: str = "texts", cache: "EmbeddingCache | None" = None
               ) -> np.ndarray:
        """float32 array of shape (len(texts), dim), rows of unit length; ``cache``: read and keep
        these texts' vectors there instead of in the embedder's own cache (category texts in the
        user's category cache)."""
        unique: dict[str, int] = {}
        positions = np.fromiter((unique.setdefault(t, len(unique)) for t in texts), dtype=np.int64, count=len(texts))
        self.stats["requested"] += len(texts)
        if not unique:
            return np.zeros((0, self.dimension), dtype=np.float32)
        distinct = list(unique)
        cached_before = self.stats["cached"]
        cache = cache if cache is not None else self.cache
        if cache is None:
            vectors = self._encode(distinct)
        else:
            vectors = self._encode_cached(distinct, cache)
        log.info("embedded %d %s (%d distinct, %d read from the cache)", len(texts), label, len(unique),
                 self.stats["cached"] - cached_before)
        return np.ascontiguousarray(vectors[positions], dtype=np.float32)

    def _encode(self, texts: list[str]) -> np.ndarray:
        start = time.perf_counter()
        vectors = self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=self.progress and len(texts) > 256)
        seconds = time.perf_counter() - start
        self.stats["encoded"] += len(texts)
        self.stats["seconds"] += seconds
        log.debug("encoded %d texts in %.1fs", len(texts), seconds)
        return np.asarray(vectors, dtype=np.float32)

    def _encode_cached(self, texts: list[str], cache: "EmbeddingCache") -> np.ndarray:
        found, missing = cache.get(self.cache_key, texts)
        self.stats["cached"] += len(texts) - len(missing)
        out = np.zeros((len(texts), found.shape[1] if found.size else self.dimension), dtype=np.float32)
        if found.size:
            have = np.ones(len(texts), dtype=bool)
            have[missing] = False
            out[have] = found
        for start in range(0, len(missing), self.CACHE_CHUNK):
            chunk = missing[start:start + self.CACHE_CHUNK]
            vectors = self._encode([texts[i] for i in chunk])
            cache.put(self.cache_key, [texts[i] for i in chunk], vectors)
            out[chunk] = vectors
        return out


class RememberingModel:
    """A model with a memory of the unit vectors it encoded, for work that encodes the same texts
    several times with one model (``taxmig evaluate`` runs the similarity evaluator, a migration and
    a Matryoshka curve over the same held-out texts; the tests map the same samples again and again).
    Only the call the :class:`Embedder` makes -- a list of texts, unit vectors as numpy -- is
    remembered; any other call, and every other attribute, goes to the model."""

    EMBEDDER_OPTIONS = {"batch_size", "normalize_embeddings", "convert_to_numpy", "show_progress_bar"}

    def __init__(self, model) -> None:
        self._model = model
        self._memory: dict[str, np.ndarray] = {}

    def encode(self, sentences, *args, **kwargs):
        if (args or set(kwargs) - self.EMBEDDER_OPTIONS or not kwargs.get("normalize_embeddings")
                or not kwargs.get("convert_to_numpy", True) or isinstance(sentences, str)):
            return self._model.encode(sentences, *args, **kwargs)
        missing = [t for t in dict.fromkeys(sentences) if t not in self._memory]
        if missing:
            vectors = self._model.encode(missing, **kwargs)
            self._memory.update(zip(missing, np.asarray(vectors, dtype=np.float32)))
        if not sentences:
            return self._model.encode(sentences, **kwargs)
        return np.stack([self._memory[t] for t in sentences])

    def __getattr__(self, name):
        return getattr(self._model, name)
