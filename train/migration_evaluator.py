"""The number that matters, as a training evaluator: top-1 of mapping held-out products onto the
training products' categories the way ``taxmig migrate`` does.

sentence-transformers' evaluator contract (a metrics dict with ``primary_metric``, higher is
better), so the trainer keeps the checkpoint, and stops early, by it. It runs the encoder-dependent
part of the mapping -- the neighbour vote over the target products and the level-wise label
scores, combined by :func:`migrate.mapping.scoring.score_categories` with the default
:class:`~migrate.mapping.scoring.ScoringParams` -- and leaves out the lexical and classifier
votes and the calibration, which do not change with the encoder and would cost a classifier fit
at every evaluation. ``secondary`` evaluators (the held-out pair similarity) report beside it.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
from sentence_transformers.sentence_transformer.evaluation import SentenceEvaluator

from migrate.core.index import build_index, search
from migrate.errors import TaxmigError
from migrate.mapping.labels import PLAIN, CategoryLabels
from migrate.mapping.scoring import ScoringParams, score_categories

log = logging.getLogger(__name__)

PRIMARY = "migrate_top1"
MAX_TARGET_PRODUCTS = 8_000
"""Target products the neighbour vote searches at each evaluation (a seeded sample beyond): with
:data:`MAX_HELD_OUT`, what bounds the texts one evaluation encodes (the CPU's encode rate:
BENCHMARKS.md, "migrate: BigBasket 80/20, base model")."""
MAX_HELD_OUT = 2_000
"""Held-out products scored at each evaluation (a seeded sample beyond)."""


def _sample(n: int, limit: int, seed: int) -> np.ndarray:
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


class MigrationTop1Evaluator(SentenceEvaluator):
    """Top-1 / top-3 of mapping ``texts`` (true ``categories``) onto the categories of
    ``target_texts`` / ``target_categories`` with the mapping's own neighbour and label scores."""

    def __init__(self, texts: Sequence[str], categories: Sequence[str], target_texts: Sequence[str],
                 target_categories: Sequence[str], *, name: str = "heldout", batch_size: int = 64,
                 params: ScoringParams | None = None, secondary: Sequence[SentenceEvaluator] = (),
                 seed: int = 0) -> None:
        super().__init__()
        self.categories = list(dict.fromkeys(target_categories))
        index = {c: i for i, c in enumerate(self.categories)}
        held = [i for i, c in enumerate(categories) if c in index]
        if not held:
            raise TaxmigError("no held-out product has a category of the training products",
                              hint="the eval split needs categories that training products have")
        held = [held[i] for i in _sample(len(held), MAX_HELD_OUT, seed)]
        self.texts = [texts[i] for i in held]
        self.truth = np.array([index[categories[i]] for i in held], dtype=np.int64)
        targets = _sample(len(target_texts), MAX_TARGET_PRODUCTS, seed + 1)
        self.target_texts = [target_texts[i] for i in targets]
        self.target_ids = np.array([index[target_categories[i]] for i in targets], dtype=np.int64)
        self.params = params or ScoringParams()
        self.secondary = list(secondary)
        self.name, self.batch_size = name, batch_size
        self.primary_metric = f"{name}_{PRIMARY}"

    def _encode(self, model, texts: list[str]) -> np.ndarray:
        return model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True,
                            show_progress_bar=False)

    def top_accuracy(self, model) -> tuple[float, float]:
        """(top-1, top-3) of the held-out products under ``model``."""
        params = self.params
        labels = CategoryLabels(self.categories, params.label_ancestor_weight, by_level=True, templates=PLAIN)
        vectors = self._encode(model, [*self.texts, *self.target_texts, *labels.texts])
        queries = vectors[: len(self.texts)]
        targets = vectors[len(self.texts): len(self.texts) + len(self.target_texts)]
        labels.fit(vectors[len(self.texts) + len(self.target_texts):])
        label_sims, label_ids = labels.search(queries, params.label_candidates)
        nn_sims, nn_ids = search(build_index(targets), queries, params.neighbours)
        nn_cats = np.where(nn_ids >= 0, self.target_ids[np.clip(nn_ids, 0, None)], -1)
        scores = score_categories(len(self.categories), params, nn_sims=nn_sims, nn_categories=nn_cats,
                                  label_sims=label_sims, label_ids=label_ids, nn_ids=nn_ids)
        top = scores.top_ids
        top1 = float(np.mean(top[:, 0] == self.truth))
        top3 = float(np.mean((top[:, :3] == self.truth[:, None]).any(axis=1)))
        return top1, top3

    def __call__(self, model, output_path: str | None = None, epoch: int = -1, steps: int = -1) -> dict[str, float]:
        top1, top3 = self.top_accuracy(model)
        metrics = {PRIMARY: top1, "migrate_top3": top3}
        log.info("held-out migrate-path top-1 %.4f, top-3 %.4f (%d products onto %d categories, %d target "
                 "products)", top1, top3, len(self.texts), len(self.categories), len(self.target_texts))
        metrics = self.prefix_name_to_metrics(metrics, self.name)
        self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
        for other in self.secondary:
            metrics.update(other(model, output_path, epoch, steps))
        return metrics

    def get_config_dict(self) -> dict:
        return {"products": len(self.texts), "categories": len(self.categories),
                "target_products": len(self.target_texts)}
