"""Lexical nearest neighbours: TF-IDF cosine between product texts, top-k per query.

The encoder's neighbours and these complement each other: the encoder knows that "earbuds" and
"headphones" are alike, word overlap knows brands and product-line names the encoder blurs
("Tata Tea Gold" is tea, whatever else is gold), so ``migrate`` adds this vote to the encoder's.
Measured: BENCHMARKS.md, "migrate: BigBasket 80/20, base model" (``python bench/migrate_bench.py``).

>>> index = LexicalIndex().fit(["Amul Butter 500 g", "Tata Tea Gold", "Amul Cheese Slices"])
>>> sims, ids = index.search(["amul butter"], k=2)
>>> ids[0].tolist()
[0, 2]
"""

from __future__ import annotations

import numpy as np

from migrate.mapping.sparse_text import FittedTfidf, fit_tfidf

CHUNK = 2048

WORDS = r"(?u)\b\w+\b"
"""The word TF-IDF's tokens, which the lexical neighbours and the classifier share: one-letter words kept."""


def fit_words(texts: list[str]) -> tuple[FittedTfidf | None, object]:
    """Word TF-IDF (sublinear tf) fitted on ``texts``: (vectorizer, rows), or (None, None) when no
    text has a word ("-", "+")."""
    try:
        return fit_tfidf(texts, token_pattern=WORDS)
    except ValueError:  # empty vocabulary
        return None, None


class LexicalIndex:
    """Word TF-IDF (sublinear tf, unit rows) over the indexed texts."""

    def __init__(self) -> None:
        self.vectorizer: FittedTfidf | None = None
        self._matrix_t = None
        self.size = 0

    @classmethod
    def from_parts(cls, vectorizer: FittedTfidf | None, matrix_t) -> "LexicalIndex":
        """An index of what :meth:`fit` fitted: the word TF-IDF and its transposed rows of the indexed
        texts (:attr:`matrix_t`; both None when no text had a word), as a kept target side reads it back."""
        index = cls()
        index.vectorizer, index._matrix_t = vectorizer, matrix_t
        index.size = matrix_t.shape[1] if matrix_t is not None else 0
        return index

    @property
    def matrix_t(self):
        """The indexed texts' TF-IDF rows, transposed (features x texts, CSR), or None."""
        return self._matrix_t

    def fit(self, texts: list[str]) -> "LexicalIndex":
        self.vectorizer, matrix = fit_words(texts)
        if matrix is None:  # no text has a word: nothing to search, every query finds nothing
            self._matrix_t, self.size = None, 0
            return self
        self._matrix_t = matrix.T.tocsr()
        self.size = matrix.shape[0]
        return self

    def search(self, queries: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (cosines, ids) per query, best first; ids -1 (cosine 0) where fewer share a word."""
        n = len(queries)
        sims = np.zeros((n, k), dtype=np.float32)
        ids = np.full((n, k), -1, dtype=np.int64)
        if not n or not self.size:
            return sims, ids
        q = self.vectorizer.transform(queries)
        for start in range(0, n, CHUNK):
            product = (q[start:start + CHUNK] @ self._matrix_t).tocsr()
            product.sort_indices()
            for row in range(product.shape[0]):
                lo, hi = product.indptr[row], product.indptr[row + 1]
                if lo == hi:
                    continue
                data = product.data[lo:hi]
                cols = product.indices[lo:hi]
                take = min(k, hi - lo)
                best = np.argpartition(-data, take - 1)[:take] if take < hi - lo else np.arange(hi - lo)
                order = best[np.lexsort((cols[best], -data[best]))]
                sims[start + row, :take] = data[order]
                ids[start + row, :take] = cols[order]
        return sims, ids
