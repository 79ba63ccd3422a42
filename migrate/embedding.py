"""Turn texts into unit-length vectors with a sentence-transformers model, each distinct text once.

>>> emb = Embedder(model, batch_size=64, progress=False)   # doctest: +SKIP
>>> emb.encode(["Dark Chocolate", "Dark Chocolate"]).shape  # doctest: +SKIP
(2, 384)
"""

from __future__ import annotations

import logging
import time
from typing import Sequence

import numpy as np

log = logging.getLogger(__name__)


class Embedder:
    """Batched, normalised encoding with de-duplication of identical texts.

    ``stats`` counts texts asked for, texts actually encoded and seconds spent encoding, so
    callers can report the raw encode rate next to the end-to-end rate.
    """

    def __init__(self, model, *, batch_size: int = 64, progress: bool = True) -> None:
        self.model = model
        self.batch_size = batch_size
        self.progress = progress
        self.stats = {"requested": 0, "encoded": 0, "seconds": 0.0}

    @property
    def dimension(self) -> int:
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(get_dim())

    def encode(self, texts: Sequence[str], *, label: str = "texts") -> np.ndarray:
        """float32 array of shape (len(texts), dim), rows of unit length."""
        unique: dict[str, int] = {}
        positions = np.fromiter((unique.setdefault(t, len(unique)) for t in texts), dtype=np.int64, count=len(texts))
        self.stats["requested"] += len(texts)
        if not unique:
            return np.zeros((0, self.dimension), dtype=np.float32)
        start = time.perf_counter()
        vectors = self.model.encode(list(unique), batch_size=self.batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=self.progress and len(unique) > 256)
        seconds = time.perf_counter() - start
        self.stats["encoded"] += len(unique)
        self.stats["seconds"] += seconds
        log.info("encoded %d %s (%d distinct) in %.1fs", len(texts), label, len(unique), seconds)
        return np.ascontiguousarray(vectors[positions], dtype=np.float32)
