"""Category labels as the encoder reads them: every level of a path embedded on its own.

A whole path read as one sentence ("Beauty & Hygiene > Hair Care") is dominated by its top levels,
so a hair oil sits about as close to every "Beauty & Hygiene" category as to "Hair Care". Here a
product is compared with the category's own name (the path's last level) and, with weight
``ancestor_weight``, with the mean of its ancestors' names:

    label(c) = (cos(q, name(c)) + a * mean over ancestors p of cos(q, name(p))) / (1 + a)

so scores stay on the cosine scale, and a top-level category (no ancestors) scores
``cos(q, name(c))``. Ancestors not listed as categories themselves (a file of leaf paths only)
are still embedded: they are part of the path. For a product's own text this ranks categories
better than the whole path; ``a`` = 0.25 is chosen on the migrate benchmark's labelled 80%.
Measured: BENCHMARKS.md, "labels: zero-shot onto BigBasket's own paths, whole path vs per level"
(``python bench/label_bench.py``).

That holds for a product's own text. A source product that carries its source category path
("... | Bakery, Cakes & Dairy > Dairy", see ``MigrationSettings.category_context``) is better
compared path to path: level names then pull it to generic inner nodes whose names echo its
source path ("Dairy Products" over "Cheese"; the same section, its rows with the source category
appended). So ``by_level=False``
embeds each category's whole path as one text, and the pipeline uses it whenever source
categories are appended.

Two refinements for a taxonomy in which no product is labelled (``migrate`` turns them on only
there; ``ScoringParams.zero_shot_label_templates`` and ``zero_shot_label_centering``):

- **Templates** (prompt ensembling): each name is embedded as it is and inside a few fixed
  sentences ("{} products", "category: {}"); its vector is the normalised mean. A bare name is
  an odd sentence for an encoder trained on sentences; the mean is steadier than any one form.
- **Centering** (hub removal): some names sit close to every product (uncentered, "pasta sauce"
  and "fruit vegetable snacks" each draw several times the Instacart products they hold). Each category's
  mean score over the source products, times ``c``, is subtracted from its scores. The score is
  linear in the query, so that mean is the score of the mean query: exact and cheap.

With both, top-1 rises on every benchmark set, labels alone and self-trained, centering alone
giving about half of it; ``c`` = 0.5 and these three templates are chosen on the same six sets.
Measured: BENCHMARKS.md, "zero-shot: what each label lever adds" (``python bench/zeroshot_ablation.py``);
with a source category appended (whole paths), the ``bigbasket-3+top`` rows of "zero-shot: a catalog
onto a taxonomy nobody labelled" (``python bench/zeroshot_bench.py``).

Taxonomies are small next to catalogs (Google's 5,595 categories, Shopify's 10,595), so label
scores come from one exact matrix product per chunk of queries; FAISS indexes the products.

>>> labels = CategoryLabels(["Food > Fruit", "Food > Tea", "Home > Cleaning"])
>>> labels.names
['Food', 'Fruit', 'Tea', 'Home', 'Cleaning']
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix

from migrate.core.catalog import PATH_SEPARATOR
from migrate.mapping.scoring import ScoringParams, top_columns

CHUNK = 1024
PLAIN = ("{}",)


def path_levels(category: str) -> list[str]:
    """The path's levels, outermost first: ``"A > B > C"`` -> ``["A", "B", "C"]`` (blank levels dropped)."""
    return [p.strip() for p in category.split(PATH_SEPARATOR) if p.strip()] or [category]


class CategoryLabels:
    """The distinct level names to embed (``names``) and how each category's score is built from them."""

    def __init__(self, categories: list[str], ancestor_weight: float = 0.25, *, by_level: bool = True,
                 templates: tuple[str, ...] = PLAIN) -> None:
        self.by_level = by_level
        self.ancestor_weight = ancestor_weight
        self.templates = tuple(templates) or PLAIN
        self.bias: np.ndarray | None = None
        self.centering = 0.0
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
            text = "exact; whole category paths (source categories are appended to product texts)"
        else:
            text = f"exact; each path level ({len(self.names)} level names), ancestor weight {self.ancestor_weight}"
        if self.templates != PLAIN:
            text += "; names embedded as " + ", ".join(repr(t) for t in self.templates) + " (mean)"
        if self.bias is not None:
            text += f"; each category's mean score over the source products x {self.centering} subtracted"
        return text

    def __len__(self) -> int:
        return len(self.own)

    @property
    def texts(self) -> list[str]:
        """What to embed, in the order :meth:`fit` expects: every name under every template."""
        return [template.replace("{}", name) for template in self.templates for name in self.names]

    def fit(self, text_vectors: np.ndarray) -> "CategoryLabels":
        """Take the unit vectors of :attr:`texts` (same order); a name's vector is the normalised
        mean over its templates."""
        vectors = np.asarray(text_vectors, dtype=np.float32)
        vectors = vectors.reshape(len(self.templates), len(self.names), vectors.shape[-1])
        mean = vectors.mean(axis=0)
        norms = np.linalg.norm(mean, axis=1, keepdims=True)
        self.vectors = np.ascontiguousarray(mean / np.where(norms > 0, norms, 1.0), dtype=np.float32)
        self.bias = None
        return self

    def center(self, queries: np.ndarray, weight: float) -> "CategoryLabels":
        """Subtract ``weight`` x each category's mean score over ``queries`` from its scores from now
        on (the module docstring's centering; ``weight`` 0 removes it)."""
        self.bias = None
        if weight > 0 and len(queries) and len(self):
            mean_query = np.asarray(queries, dtype=np.float64).mean(axis=0, keepdims=True)
            self.bias = (weight * self.scores(mean_query)[0]).astype(np.float32)
            self.centering = weight
        return self

    def uncentered(self, values: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """``values`` (scores of categories ``ids``, -1 for none) with the centering added back."""
        if self.bias is None:
            return values
        return np.where(ids >= 0, values + self.bias[np.clip(ids, 0, None)], values)

    def scores(self, queries: np.ndarray) -> np.ndarray:
        """(n_queries, n_categories) label scores of unit ``queries``."""
        sims = np.asarray(queries, dtype=np.float32) @ self.vectors.T
        if not self.by_level:  # one name per category, its whole path: the cosine is the score
            out = sims[:, self.own]
        else:
            ancestors = np.asarray((self.ancestors @ sims.T).T)
            out = (sims[:, self.own] + self.ancestor_weight * ancestors) / (1.0 + self.ancestor_weight)
        return out - self.bias if self.bias is not None else out

    def search(self, queries: np.ndarray, k: int, *, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (label scores, category ids) per query, best first; ids -1 past the last category.
        ``progress``: a bar when there are more than 100 chunks of queries (counted on the run's
        display when it is a :class:`~migrate.core.progress.Progress`)."""
        from tqdm.auto import tqdm

        from migrate.core.progress import Progress, stage_of

        k = max(1, k)
        sims = np.zeros((len(queries), k), dtype=np.float32)
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        if len(self) == 0:
            return sims, ids
        show = progress and len(queries) > 100 * CHUNK
        # a run's display (a step of its open stage), else a bar of its own
        with (stage_of(progress, "scoring labels", total=len(queries), unit="products")
              if show and isinstance(progress, Progress)
              else tqdm(total=len(queries), unit="products", desc="scoring labels", disable=not show)) as bar:
            for start in range(0, len(queries), CHUNK):
                best_ids, best = top_columns(self.scores(queries[start:start + CHUNK]), k)
                sims[start:start + len(best), :best.shape[1]] = best
                ids[start:start + len(best), :best.shape[1]] = best_ids
                bar.update(len(best))
        return sims, ids


def zero_shot_labels(categories: list[str], queries: np.ndarray, encode, params: ScoringParams | None = None, *,
                     by_level: bool = True) -> CategoryLabels:
    """Labels as a taxonomy-only ``migrate`` run scores them (its templates and centering), for the
    benchmarks: ``encode(texts)`` gives unit vectors, ``queries`` are the source products' vectors."""
    params = params or ScoringParams()
    labels = CategoryLabels(categories, params.label_ancestor_weight, by_level=by_level,
                            templates=params.zero_shot_label_templates)
    labels.fit(encode(labels.texts) if labels.texts else np.zeros((0, queries.shape[1]), dtype=np.float32))
    return labels.center(queries, params.zero_shot_label_centering)
