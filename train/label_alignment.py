"""The label-alignment objective (``taxmig train --objective labels``): products paired with the
names of their categories, so the encoder learns what a category name means for products.

Every product of the train split gives a ``path`` pair ``(product text, its whole category path)``
-- the path written as the mapping code compares labels, ``"A > B > C"`` -- and, with
``leaf_names``, a ``leaf`` pair ``(product text, the path's last level)``: the mapping code
(:mod:`migrate.mapping.labels`) scores a product's own text against each level's own name. The pairs train
MultipleNegativesRankingLoss with in-batch negatives: every other category text in the batch is a
negative. sentence-transformers' no-duplicates batch sampler keeps two pairs with the same text
(two products of one category path, or one leaf name under two parents) out of one batch, where
the other's category would be a false negative. The two kinds go to separate datasets (one
``DatasetDict``, each batch drawn from one of them): a product's own leaf name would otherwise be
an in-batch negative for another product's path of the same category, which the sampler cannot see.

Held out, :class:`CategoryAccuracyEvaluator` maps the eval split's products onto all the catalog's
category paths by cosine and reports top-1 (the primary metric) and top-3, by whole path and by
level (:class:`migrate.mapping.labels.CategoryLabels`), in sentence-transformers' evaluator contract.

>>> lp = build_label_pairs(["Dark Chocolate | Amul", "Shampoo | Dove", "Dark Chocolate | Amul"],
...                        ["Food > Chocolate", "Beauty > Hair Care", "Food > Chocolate"], leaf_names=True)
>>> lp.pairs.rows()
[('Dark Chocolate | Amul', 'Food > Chocolate', 'path'), ('Shampoo | Dove', 'Beauty > Hair Care', 'path'), \
('Dark Chocolate | Amul', 'Chocolate', 'leaf'), ('Shampoo | Dove', 'Hair Care', 'leaf')]
>>> lp.counts()
{'label_path': 2, 'label_leaf': 2}
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import polars as pl
from sentence_transformers.sentence_transformer.evaluation import SentenceEvaluator

from migrate.core.catalog import PATH_SEPARATOR, normalise_text
from migrate.errors import TaxmigError

log = logging.getLogger(__name__)

LABEL_KINDS = ("path", "leaf")
LABEL_COLUMNS = ("anchor", "positive")
PRIMARY = "path_top1"


def leaf_name(category: str) -> str:
    """The path's last level: ``"Food > Snacks > Chips"`` -> ``"Chips"``."""
    levels = [p.strip() for p in category.split(PATH_SEPARATOR) if p.strip()]
    return levels[-1] if levels else category


@dataclass
class LabelPairs:
    """``pairs``: anchor (product text), positive (category text), kind (one of :data:`LABEL_KINDS`)."""

    pairs: pl.DataFrame
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return self.pairs.height

    def counts(self) -> dict[str, int]:
        """Pairs per kind, as ``label_path`` / ``label_leaf`` (0 when none)."""
        got = dict(self.pairs.group_by("kind").len().iter_rows()) if self.pairs.height else {}
        return {f"label_{k}": int(got.get(k, 0)) for k in LABEL_KINDS}

    def to_dataset(self):
        """A ``datasets.Dataset`` (anchor, positive) of the path pairs, or with leaf pairs a
        ``DatasetDict`` {"path", "leaf"} so no batch mixes the two kinds."""
        from datasets import Dataset, DatasetDict

        parts = {k: Dataset.from_dict({c: self.pairs.filter(pl.col("kind") == k)[c].to_list() for c in LABEL_COLUMNS})
                 for k in LABEL_KINDS if (self.pairs["kind"] == k).any()}
        if not parts:
            raise TaxmigError("no (product, category) pairs to train on", hint="give a catalog with categories")
        return parts["path"] if list(parts) == ["path"] else DatasetDict(parts)


def build_label_pairs(texts: Sequence[str], categories: Sequence[str], *, leaf_names: bool = False,
                      max_pairs: int | None = None, seed: int = 0) -> LabelPairs:
    """(product, category path) pairs, and (product, leaf name) pairs with ``leaf_names``.

    A product listed twice under the same category (same text up to case and spacing) gives one
    pair; a one-level path has no separate leaf pair. ``max_pairs`` keeps a seeded random subset.
    """
    if len(texts) != len(categories):
        raise TaxmigError(f"{len(texts)} texts but {len(categories)} categories", hint="give one category per text")
    seen: set[tuple[str, str]] = set()
    anchors, paths = [], []
    for text, category in zip(texts, categories):
        key = (normalise_text(text), category)
        if not category or key in seen:
            continue
        seen.add(key)
        anchors.append(text)
        paths.append(category)
    notes = []
    if len(anchors) < len(texts):
        notes.append(f"{len(texts) - len(anchors)} repeated (product, category) rows or rows without a category "
                     "gave no extra pair")
    rows = {"anchor": list(anchors), "positive": list(paths), "kind": ["path"] * len(anchors)}
    if leaf_names:
        leaves = [(a, leaf_name(p)) for a, p in zip(anchors, paths) if leaf_name(p) != p]
        rows["anchor"] += [a for a, _ in leaves]
        rows["positive"] += [leaf for _, leaf in leaves]
        rows["kind"] += ["leaf"] * len(leaves)
    pairs = pl.DataFrame(rows, schema={"anchor": pl.String, "positive": pl.String, "kind": pl.String})
    if max_pairs is not None and pairs.height > max_pairs:
        keep = np.sort(np.random.default_rng(seed).choice(pairs.height, max_pairs, replace=False))
        pairs = pairs[keep]
        notes.append(f"a seeded random {max_pairs} of the pairs kept (max_pairs)")
    result = LabelPairs(pairs, notes)
    log.info("built %s label pairs from %d products in %d categories", result.counts(), len(anchors), len(set(paths)))
    return result


class CategoryAccuracyEvaluator(SentenceEvaluator):
    """Top-1 / top-3 of mapping held-out products onto ``taxonomy`` by cosine (sentence-transformers'
    evaluator contract: a metrics dict with ``primary_metric``, higher is better).

    ``path_top1`` (primary) / ``path_top3``: cosine with the whole path; ``level_top1`` /
    ``level_top3``: the mapping code's level-wise label score (:class:`migrate.mapping.labels.CategoryLabels`).
    """

    def __init__(self, texts: Sequence[str], categories: Sequence[str], taxonomy: Sequence[str], *,
                 name: str = "heldout", batch_size: int = 64) -> None:
        super().__init__()
        index = {c: i for i, c in enumerate(taxonomy)}
        missing = sorted({c for c in categories if c not in index})
        if missing:
            raise TaxmigError(f"{len(missing)} held-out categories are not in the taxonomy (e.g. {missing[0]!r})",
                              hint="list every category of the catalog")
        self.texts, self.taxonomy = list(texts), list(taxonomy)
        self.truth = np.array([index[c] for c in categories], dtype=np.int64)
        self.name, self.batch_size = name, batch_size
        self.primary_metric = PRIMARY

    def _encode(self, model, texts: list[str]) -> np.ndarray:
        return model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True,
                            show_progress_bar=False)

    def __call__(self, model, output_path: str | None = None, epoch: int = -1, steps: int = -1) -> dict[str, float]:
        from migrate.mapping.labels import CategoryLabels

        queries = self._encode(model, self.texts)
        labels = CategoryLabels(self.taxonomy)
        labels.fit(self._encode(model, labels.names))
        metrics: dict[str, float] = {}
        for kind, scores in (("path", queries @ self._encode(model, self.taxonomy).T),
                             ("level", labels.scores(queries))):
            metrics[f"{kind}_top1"], metrics[f"{kind}_top3"] = top_accuracy(scores, self.truth)
        log.info("held-out category accuracy (%d products, %d categories): %s", len(self.texts), len(self.taxonomy),
                 {k: round(v, 4) for k, v in metrics.items()})
        metrics = self.prefix_name_to_metrics(metrics, self.name)
        self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
        return metrics

    def get_config_dict(self) -> dict:
        return {"categories": len(self.taxonomy), "products": len(self.texts)}


def top_accuracy(scores: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(top-1, top-3) accuracy of score rows against true column indices.

    >>> top_accuracy(np.array([[0.9, 0.1, 0.0, 0.2], [0.1, 0.2, 0.3, 0.9]]), np.array([0, 2]))
    (0.5, 1.0)
    """
    k = min(3, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    best = top[np.arange(len(top)), np.argmax(np.take_along_axis(scores, top, axis=1), axis=1)]
    return float((best == truth).mean()), float((top == truth[:, None]).any(axis=1).mean())
