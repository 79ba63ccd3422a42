"""A supervised vote: a linear text classifier trained on the labelled target catalog (scikit-learn).

Neighbour votes look at a handful of similar products; a classifier weighs every word and word
fragment over the whole catalog ("Men" in a brand name, "Organic" in a title) the way the
retailer's own taxonomy uses them. Features are word TF-IDF plus character n-gram TF-IDF
(:data:`CHAR_NGRAMS`: brand fragments, plurals, typos); the model is a one-vs-rest linear SVM whose
decision values become a probability-like vote by a softmax with temperature ``temperature``.

For calibration the vote of a target product must come from a model that did not see it:
:func:`fit_with_out_of_fold_votes` fits one model per fold of the calibration sample (folds never
split a group of same-name listings) on every other target product; the folds' models averaged
are the classifier the source is scored with.

>>> clf = CategoryClassifier().fit(["amul butter", "amul cheese", "tata tea", "red label tea"], [0, 0, 1, 1])
>>> probs, cats = clf.vote(["green tea"], top=2)
>>> int(cats[0, 0])
1
"""

from __future__ import annotations

import logging
import os

import numpy as np
from dataclasses import dataclass

from loky import ProcessPoolExecutor
from scipy.sparse import hstack

from migrate.mapping.lexical import fit_words
from migrate.mapping.scoring import top_columns
from migrate.mapping.sparse_text import FittedTfidf, fit_tfidf

log = logging.getLogger(__name__)

CHUNK = 2048
FOLDS = 2
"""Folds of the calibration sample, whose two models, averaged, are also the final classifier:
two fits side by side on 2 cores instead of 3 folds and a final fit (four), the same top-1 and
unflagged precision at least 0.97 on BigBasket and Instacart. Measured: BENCHMARKS.md, "classifier
folds and the leave-one-out sample" (``python bench/classifier_folds.py``)."""
CHAR_NGRAMS: tuple[int, int] = (4, 4)
"""The character n-grams (inside word boundaries) beside the words: 4-grams only, half the
non-zeros of 3- and 4-grams and so a faster fit, the same top-1 and unflagged precision on BigBasket
and Instacart. Measured: BENCHMARKS.md, "classifier: character n-grams" (``python bench/classifier_features.py``)."""
POOL_FROM = 8_000
"""Target products from which the final fit and the folds' fits run in worker processes: starting
the pool (processes that import scikit-learn) costs more than a second, which a second core wins
back only on large catalogs; below this the fits run in this process, with the same votes.
Measured: BENCHMARKS.md, "classifier: process pool against in-process fits" (``python bench/classifier_pool.py``)."""


class TextFeatures:
    """Word TF-IDF (the lexical neighbours' own) + character n-gram TF-IDF (:data:`CHAR_NGRAMS`, read when
    the features are made), fitted on the target texts.

    Texts without a word character ("-", "+") give no word features, and a catalog too small for a
    character n-gram to occur twice keeps the single ones: any non-empty text has features.
    """

    def __init__(self) -> None:
        self.char_ngrams = CHAR_NGRAMS
        self.words: FittedTfidf | None = None
        self.chars: FittedTfidf | None = None

    def fit_transform(self, texts: list[str]):
        self.words, words = fit_words(texts)
        try:
            self.chars, chars = fit_tfidf(texts, analyzer="char_wb", ngram_range=self.char_ngrams, min_df=2)
        except ValueError:  # no n-gram occurs twice
            self.chars, chars = fit_tfidf(texts, analyzer="char_wb", ngram_range=self.char_ngrams, min_df=1)
        return hstack([words, chars]).tocsr() if words is not None else chars.tocsr()

    def transform(self, texts: list[str]):
        chars = self.chars.transform(texts)
        return hstack([self.words.transform(texts), chars]).tocsr() if self.words is not None else chars.tocsr()


def _softmax_top(decision: np.ndarray, classes: np.ndarray, temperature: float, top: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Softmax over all classes, then the ``top`` most probable (probabilities, category ids)."""
    probs = np.exp((decision - decision.max(axis=1, keepdims=True)) / temperature)
    probs /= probs.sum(axis=1, keepdims=True)
    columns, best = top_columns(probs, top)
    out_probs = np.zeros((len(probs), top))
    out_cats = np.full((len(probs), top), -1, dtype=np.int64)
    out_probs[:, :best.shape[1]] = best
    out_cats[:, :best.shape[1]] = classes[columns]
    return out_probs, out_cats


@dataclass
class LinearDecision:
    """A fitted linear classifier as data (scikit-learn's ``coef_``, ``intercept_``, ``classes_``),
    applied as its ``decision_function`` is, without importing scikit-learn at night."""

    coef: np.ndarray  # (classes, features); one row for two classes
    intercept: np.ndarray
    classes: np.ndarray

    @classmethod
    def from_sklearn(cls, model) -> "LinearDecision":
        return cls(np.asarray(model.coef_), np.asarray(model.intercept_), np.asarray(model.classes_))

    def decision_function(self, matrix) -> np.ndarray:
        scores = np.asarray(matrix @ self.coef.T) + self.intercept
        return scores.reshape(-1) if scores.shape[1] == 1 else scores


class CategoryClassifier:
    """Linear SVM over :class:`TextFeatures`; ``usable`` is False when fewer than two categories."""

    def __init__(self, temperature: float = 0.3, features: TextFeatures | None = None) -> None:
        self.temperature = temperature
        self.features = features
        self.model: LinearDecision | None = None

    @property
    def usable(self) -> bool:
        return self.model is not None

    def fit(self, texts: list[str], categories) -> "CategoryClassifier":
        """Fit on target texts and their category indices."""
        self.features = self.features or TextFeatures()
        return self.fit_features(self.features.fit_transform(texts), categories)

    def fit_features(self, matrix, categories) -> "CategoryClassifier":
        """Fit on already computed features (rows of ``matrix``) and their category indices.

        Seeded, and never fitted from two threads at once: liblinear's solver draws from the C
        library's one random state, so concurrent fits in one process give different models from
        the same inputs -- and a product could map differently from one night to the next.
        """
        categories = np.asarray(categories, dtype=np.int64)
        if len(np.unique(categories)) >= 2:
            from sklearn.svm import LinearSVC

            self.model = LinearDecision.from_sklearn(LinearSVC(C=1.0, tol=1e-2, random_state=0).fit(matrix, categories))
        return self

    def vote_matrix(self, matrix, top: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``top`` (probabilities, category ids) per feature row; ids -1 where fewer classes."""
        n = matrix.shape[0]
        if self.model is None or n == 0:
            return np.zeros((n, top)), np.full((n, top), -1, dtype=np.int64)
        parts = [_softmax_top(self._decision(matrix[s:s + CHUNK]), self.model.classes, self.temperature, top)
                 for s in range(0, n, CHUNK)]
        return np.vstack([p for p, _ in parts]), np.vstack([c for _, c in parts])

    def vote(self, texts: list[str], top: int) -> tuple[np.ndarray, np.ndarray]:
        return self.vote_matrix(self.features.transform(texts), top)

    def _decision(self, matrix) -> np.ndarray:
        decision = self.model.decision_function(matrix)
        if decision.ndim == 1:  # two classes: one column, positive for classes_[1]
            decision = np.column_stack([-decision, decision])
        return decision


def _fit_job(matrix, categories: np.ndarray, train: np.ndarray | None, rows: np.ndarray | None,
             top: int, temperature: float):
    """One fit in a worker process: the final model (``train`` None), or a fold's (model, votes for ``rows``)."""
    if train is None:
        return CategoryClassifier(temperature).fit_features(matrix, categories).model
    model = CategoryClassifier(temperature).fit_features(matrix[train], categories[train])
    return model.model, model.vote_matrix(matrix[rows], top)


def average_models(models: list[LinearDecision | None]) -> LinearDecision | None:
    """The linear model whose decision function is the mean of ``models``' (their coefficients and
    intercepts averaged); None unless every model is fitted on the same classes."""
    if not models or any(m is None for m in models):
        return None
    first = models[0]
    if any(m.classes.shape != first.classes.shape or (m.classes != first.classes).any()
           or m.coef.shape != first.coef.shape for m in models):
        return None
    return LinearDecision(np.mean([m.coef for m in models], axis=0), np.mean([m.intercept for m in models], axis=0),
                          first.classes)


def fit_with_out_of_fold_votes(texts: list[str], categories, sample: np.ndarray, groups: np.ndarray, *,
                               top: int, temperature: float, folds: int = FOLDS, seed: int = 0,
                               workers: int | None = None, final_from_folds: bool = True
                               ) -> tuple[CategoryClassifier, tuple[np.ndarray, np.ndarray]]:
    """The classifier on all target ``texts``, and votes for the target rows ``sample`` each from a
    model fitted without its group's rows (``groups``: same-name group of every target product; the
    sample is cut into ``folds`` folds by group). From :data:`POOL_FROM` target products the final
    fit and the folds' fits run side by side in worker processes, one per core (``workers``: how many,
    1 for none; default by size); the pool ends with the call, so no worker outlives the run (a
    lingering worker would hold the caller's stdout/stderr pipes open). Both ways give the same votes.
    """
    categories = np.asarray(categories, dtype=np.int64)
    features = TextFeatures()
    matrix = features.fit_transform(texts)
    sample_groups = groups[sample]
    distinct = np.unique(sample_groups)
    fold_of_distinct = np.random.default_rng(seed).permutation(len(distinct)) % folds
    fold = fold_of_distinct[np.searchsorted(distinct, sample_groups)]
    held = [np.flatnonzero(fold == f) for f in range(min(folds, len(distinct)))]
    jobs = [] if final_from_folds else [(None, None)]
    jobs += [(~np.isin(groups, sample_groups[h]), sample[h]) for h in held]
    if workers is None:
        workers = (os.cpu_count() or 1) if len(texts) >= POOL_FROM else 1
    workers = max(1, min(len(jobs), workers))
    if workers == 1:
        results = [_fit_job(matrix, categories, train, rows, top, temperature) for train, rows in jobs]
    else:  # loky: fresh processes, no fork of torch's threads, no `__main__` guard needed
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_fit_job, *zip(*[(matrix, categories, train, rows, top, temperature)
                                                     for train, rows in jobs])))
    fold_results = results if final_from_folds else results[1:]
    final = CategoryClassifier(temperature, features)
    final.model = average_models([m for m, _ in fold_results]) if final_from_folds else results[0]
    if final_from_folds and final.model is None:
        log.info("classifier: the folds' models differ in their classes; fitted on every target product")
        final.model = _fit_job(matrix, categories, None, None, top, temperature)
    probs = np.zeros((len(sample), top))
    cats = np.full((len(sample), top), -1, dtype=np.int64)
    for h, (_, (p, c)) in zip(held, fold_results):
        probs[h], cats[h] = p, c
    log.info("classifier: fitted on %d target products; out-of-fold votes for %d in %d folds",
             len(texts), len(sample), folds)
    return final, (probs, cats)
