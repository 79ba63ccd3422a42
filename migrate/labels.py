"""Category labels as the encoder reads them: every level of a path embedded on its own.

A whole path read as one sentence ("Beauty & Hygiene > Hair Care") is dominated by its top levels,
so a hair oil sits about as close to every "Beauty & Hygiene" category as to "Hair Care". Here a
product is compared with the category's own name (the path's last level) and, with weight
``ancestor_weight``, with the mean of its ancestors' names:

    label(c) = (cos(q, name(c)) + a * mean over ancestors p of cos(q, name(p))) / (1 + a)

so scores stay on the cosine scale, and a top-level category (no ancestors) scores
``cos(q, name(c))``. Ancestors not listed as categories themselves (a file of leaf paths only)
are still embedded: they are part of the path. Zero-shot onto BigBasket's own paths (base model,
the migrate benchmark's held-out 20%) this raised top-1 from 0.252 to 0.317 with two-level paths
and from 0.237 to 0.319 with three; ``a`` = 0.25 was chosen on the other 80%
(``python bench/label_bench.py``, the 2026-11-23 04:38 UTC row of BENCHMARKS.md).

That holds for a product's own text. A source product that carries its source category path
("... | Bakery, Cakes & Dairy > Dairy", see ``MigrationSettings.category_context``) is better
compared path to path: level names then pull it to generic inner nodes whose names echo its
source path ("Dairy Products" over "Cheese"): with BigBasket's ``category > sub_category``
appended, top-1 onto the three-level paths (inner nodes listed) is 0.393 by whole path and 0.244
by level (same benchmark, the 04:38 UTC row). So ``by_level=False``
embeds each category's whole path as one text, and the pipeline uses it whenever source
categories are appended.

Taxonomies are small next to catalogs (Google's 5,595 categories, Shopify's 10,595), so label
scores come from one exact matrix product per chunk of queries; FAISS indexes the products.

>>> labels = CategoryLabels(["Food > Fruit", "Food > Tea", "Home > Cleaning"])
>>> labels.names
['Food', 'Fruit', 'Tea', 'Home', 'Cleaning']
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix

from migrate.catalog import PATH_SEPARATOR
from migrate.scoring import top_columns

CHUNK = 1024


def path_levels(category: str) -> list[str]:
    """The path's levels, outermost first: ``"A > B > C"`` -> ``["A", "B", "C"]`` (blank levels dropped)."""
    return [p.strip() for p in category.split(PATH_SEPARATOR) if p.strip()] or [category]


class CategoryLabels:
    """The distinct level names to embed (``names``) and how each category's score is built from them."""

    def __init__(self, categories: list[str], ancestor_weight: float = 0.25, *, by_level: bool = True) -> None:
        self.by_level = by_level
        self.ancestor_weight = ancestor_weight
        index_of: dict[str, int] = {}
        own, rows, cols, weights = [], [], [], []
        for c, category in enumerate(categories):
            levels = path_levels(category) if by_level else [category]
            ids = [index_of.setdefault(name, len(index_of)) for name in levels]
            own.append(ids[-1])
            ancestors = ids[:-1] or ids[-1:]  # a top-level category: its own name stands in
            rows += [c] * len(ancestors)
            cols += ancestors
            weights += [1.0 / len(ancestors)] * len(ancestors)
        self.names = list(index_of)
        self.own = np.asarray(own, dtype=np.int64)
        self.ancestors = csr_matrix((weights, (rows, cols)), shape=(len(categories), len(self.names)))
        self.vectors: np.ndarray | None = None

    def describe(self) -> str:
        """How labels are scored, in words for the Summary sheet."""
        if not self.by_level:
            return "exact; whole category paths (source categories are appended to product texts)"
        return f"exact; each path level ({len(self.names)} level names), ancestor weight {self.ancestor_weight}"

    def __len__(self) -> int:
        return len(self.own)

    def fit(self, name_vectors: np.ndarray) -> "CategoryLabels":
        """Take the unit vectors of ``names`` (same order)."""
        self.vectors = np.ascontiguousarray(name_vectors, dtype=np.float32)
        return self

    def scores(self, queries: np.ndarray) -> np.ndarray:
        """(n_queries, n_categories) label scores of unit ``queries``."""
        sims = np.asarray(queries, dtype=np.float32) @ self.vectors.T
        if not self.by_level:  # one name per category, its whole path: the cosine is the score
            return sims[:, self.own]
        ancestors = np.asarray((self.ancestors @ sims.T).T)
        return (sims[:, self.own] + self.ancestor_weight * ancestors) / (1.0 + self.ancestor_weight)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (label scores, category ids) per query, best first; ids -1 past the last category."""
        k = max(1, k)
        sims = np.zeros((len(queries), k), dtype=np.float32)
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        if len(self) == 0:
            return sims, ids
        for start in range(0, len(queries), CHUNK):
            best_ids, best = top_columns(self.scores(queries[start:start + CHUNK]), k)
            sims[start:start + len(best), :best.shape[1]] = best
            ids[start:start + len(best), :best.shape[1]] = best_ids
        return sims, ids
