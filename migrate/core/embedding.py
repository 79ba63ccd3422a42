"""Turn texts into unit-length vectors with a sentence-transformers model, each distinct text once.

With an :class:`~migrate.core.embedding_cache.EmbeddingCache` (the nightly job's), texts already
embedded under the same model fingerprint are read back instead of encoded; new vectors are
stored chunk by chunk, so an interrupted run keeps what it finished.

Each :meth:`Embedder.encode` is a stage of the run's progress display (:mod:`migrate.core.progress`),
counted batch by batch where the model is a torch module (a forward hook sees each batch; the
encode calls and their arguments are the same with or without a display, so are the vectors), per
call for the other runtimes.

>>> emb = Embedder(model, batch_size=64, progress=False)   # doctest: +SKIP
>>> emb.encode(["Dark Chocolate", "Dark Chocolate"]).shape  # doctest: +SKIP
(2, 384)
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Sequence

import numpy as np

from migrate.core.progress import Progress, display_for

if TYPE_CHECKING:
    from migrate.core.embedding_cache import EmbeddingCache

log = logging.getLogger(__name__)


class Embedder:
    """Batched, normalised encoding with de-duplication of identical texts.

    ``stats`` counts texts asked for, texts actually encoded, texts read from the cache and
    seconds spent encoding, so callers can report the raw encode rate next to the end-to-end rate.
    ``cache_key`` (the model's weight fingerprint) is required with a ``cache``. ``progress``: the
    run's display (:class:`~migrate.core.progress.Progress`), or a switch: ``True`` reports to the
    display opened around the call (a new one per call outside any run), ``False`` to none.
    """

    CACHE_CHUNK = 2048

    def __init__(self, model, *, batch_size: int = 64, progress: "bool | Progress" = True,
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

    def encode(self, texts: Sequence[str], *, label: str = "texts", cache: "EmbeddingCache | None" = None,
               stage: str | None = None) -> np.ndarray:
        """float32 array of shape (len(texts), dim), rows of unit length; ``cache``: read and keep
        these texts' vectors there instead of in the embedder's own cache (category texts in the
        user's category cache); ``stage``: its name on the progress display (default "encoding
        ``label``"), counting ``texts`` (repeats and texts read from a cache count when found)."""
        unique: dict[str, int] = {}
        positions = np.fromiter((unique.setdefault(t, len(unique)) for t in texts), dtype=np.int64, count=len(texts))
        self.stats["requested"] += len(texts)
        if not unique:
            return np.zeros((0, self.dimension), dtype=np.float32)
        distinct = list(unique)
        cached_before = self.stats["cached"]
        cache = cache if cache is not None else self.cache
        with display_for(self.progress) as display, \
                display.stage(stage or f"encoding {label}", total=len(texts), unit="texts") as bar:
            if cache is None:
                vectors = self._encode(distinct, bar)
            else:
                vectors = self._encode_cached(distinct, cache, bar)
            bar.update(len(texts) - bar.n)  # repeats of a text, and batches no hook saw
        log.info("embedded %d %s (%d distinct, %d read from the cache)", len(texts), label, len(unique),
                 self.stats["cached"] - cached_before)
        return np.ascontiguousarray(vectors[positions], dtype=np.float32)

    def _encode(self, texts: list[str], bar=None) -> np.ndarray:
        start = time.perf_counter()
        counted = 0

        def batch_done(module, args, output) -> None:  # a torch forward hook: one batch of this call encoded
            nonlocal counted
            try:
                n = min(int(args[0]["input_ids"].shape[0]), len(texts) - counted)
            except Exception:  # not the features dict of a batch: the call's count comes at its end
                return
            counted += n
            bar.update(n)

        hook = None
        if bar is not None and self.progress:
            # through wrappers (RememberingModel, LazyModel) to the module; runtimes without torch have none
            register = getattr(self.model, "register_forward_hook", None)
            hook = register(batch_done) if callable(register) else None
        try:
            # the same call with or without a display: the display counts batches from the hook
            vectors = self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                        convert_to_numpy=True, show_progress_bar=False)
        finally:
            if hook is not None:
                hook.remove()
        if bar is not None:
            bar.update(len(texts) - counted)  # texts no batch showed (a runtime without hooks, remembered texts)
        seconds = time.perf_counter() - start
        self.stats["encoded"] += len(texts)
        self.stats["seconds"] += seconds
        log.debug("encoded %d texts in %.1fs", len(texts), seconds)
        return np.asarray(vectors, dtype=np.float32)

    def _encode_cached(self, texts: list[str], cache: "EmbeddingCache", bar=None) -> np.ndarray:
        found, missing = cache.get(self.cache_key, texts)
        self.stats["cached"] += len(texts) - len(missing)
        if bar is not None:
            bar.update(len(texts) - len(missing))
        out = np.zeros((len(texts), found.shape[1] if found.size else self.dimension), dtype=np.float32)
        if found.size:
            have = np.ones(len(texts), dtype=bool)
            have[missing] = False
            out[have] = found
        for start in range(0, len(missing), self.CACHE_CHUNK):
            chunk = missing[start:start + self.CACHE_CHUNK]
            vectors = self._encode([texts[i] for i in chunk], bar)
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
