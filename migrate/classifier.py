"""A supervised vote: a linear text classifier trained on the labelled target catalog (scikit-learn).

Neighbour votes look at a handful of similar products; a classifier weighs every word and word
fragment over the whole catalog ("Men" in a brand name, "Organic" in a title) the way the
retailer's own taxonomy uses them. Features are word TF-IDF plus character 3-4-gram TF-IDF
(brand fragments, plurals, typos); the model is a one-vs-rest linear SVM whose decision values
become a probability-like vote by a softmax with temperature ``temperature``.

For calibration the vote of a target product must come from a model that did not see it:
:func:`fit_with_out_of_fold_votes` fits one model per fold of the calibration sample (folds never
split a group of same-name listings) on every other target product.

>>> clf = CategoryClassifier().fit(["amul butter", "amul cheese", "tata tea", "red label tea"], [0, 0, 1, 1])
>>> probs, cats = clf.vote(["green tea"], top=2)
>>> int(cats[0, 0])
1
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy.sparse import hstack
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.svm import LinearSVC

log = logging.getLogger(__name__)

CHUNK = 2048
FOLDS = 3


class TextFeatures:
    """Word + character n-gram TF-IDF (sublinear tf), fitted once on the target texts.

    Texts without a word character ("-", "+") give no word features, and a catalog too small for a
    character n-gram to occur twice keeps the single ones: any non-empty text has features.
    """

    def __init__(self) -> None:
        self.words: TfidfVectorizer | None = TfidfVectorizer(sublinear_tf=True, token_pattern=r"(?u)\b\w+\b",
                                                             dtype=np.float32)
        self.chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 4), sublinear_tf=True, min_df=2,
                                     dtype=np.float32)

    def fit_transform(self, texts: list[str]):
        try:
            words = self.words.fit_transform(texts)
        except ValueError:  # empty vocabulary: no text has a word
            self.words, words = None, None
        try:
            chars = self.chars.fit_transform(texts)
        except ValueError:  # no n-gram occurs twice
            self.chars.set_params(min_df=1)
            chars = self.chars.fit_transform(texts)
        return hstack([words, chars]).tocsr() if words is not None else chars.tocsr()

    def transform(self, texts: list[str]):
        chars = self.chars.transform(texts)
        return hstack([self.words.transform(texts), chars]).tocsr() if self.words is not None else chars.tocsr()


def _softmax_top(decision: np.ndarray, classes: np.ndarray, temperature: float, top: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Softmax over all classes, then the ``top`` most probable (probabilities, category ids)."""
    shifted = (decision - decision.max(axis=1, keepdims=True)) / temperature
    probs = np.exp(shifted)
    probs /= probs.sum(axis=1, keepdims=True)
    take = min(top, probs.shape[1])
    part = np.argpartition(-probs, take - 1, axis=1)[:, :take] if take < probs.shape[1] else \
        np.tile(np.arange(probs.shape[1]), (len(probs), 1))
    part_probs = np.take_along_axis(probs, part, axis=1)
    order = np.argsort(-part_probs, axis=1, kind="stable")
    out_probs = np.zeros((len(probs), top))
    out_cats = np.full((len(probs), top), -1, dtype=np.int64)
    out_probs[:, :take] = np.take_along_axis(part_probs, order, axis=1)
    out_cats[:, :take] = classes[np.take_along_axis(part, order, axis=1)]
    return out_probs, out_cats


class CategoryClassifier:
    """Linear SVM over :class:`TextFeatures`; ``usable`` is False when fewer than two categories."""

    def __init__(self, temperature: float = 0.3, features: TextFeatures | None = None) -> None:
        self.temperature = temperature
        self.features = features
        self.model: LinearSVC | None = None

    @property
    def usable(self) -> bool:
        return self.model is not None

    def fit(self, texts: list[str], categories, matrix=None) -> "CategoryClassifier":
        """Fit on target texts and their category indices (``matrix``: their features, if computed)."""
        categories = np.asarray(categories, dtype=np.int64)
        if matrix is None:
            self.features = self.features or TextFeatures()
            matrix = self.features.fit_transform(texts)
        if len(np.unique(categories)) >= 2:
            self.model = LinearSVC(C=1.0, tol=1e-2).fit(matrix, categories)
        return self

    def vote_matrix(self, matrix, top: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``top`` (probabilities, category ids) per feature row; ids -1 where fewer classes."""
        n = matrix.shape[0]
        if self.model is None or n == 0:
            return np.zeros((n, top)), np.full((n, top), -1, dtype=np.int64)
        parts = [_softmax_top(np.atleast_2d(self._decision(matrix[s:s + CHUNK])), self.model.classes_,
                              self.temperature, top) for s in range(0, n, CHUNK)]
        return np.vstack([p for p, _ in parts]), np.vstack([c for _, c in parts])

    def vote(self, texts: list[str], top: int) -> tuple[np.ndarray, np.ndarray]:
        return self.vote_matrix(self.features.transform(texts), top)

    def _decision(self, matrix) -> np.ndarray:
        decision = self.model.decision_function(matrix)
        if decision.ndim == 1:  # two classes: one column, positive for classes_[1]
            decision = np.column_stack([-decision, decision])
        return decision


def fit_with_out_of_fold_votes(texts: list[str], categories, sample: np.ndarray, groups: np.ndarray, *,
                               top: int, temperature: float, folds: int = FOLDS, seed: int = 0
                               ) -> tuple[CategoryClassifier, tuple[np.ndarray, np.ndarray]]:
    """The classifier on all target ``texts``, and votes for the target rows ``sample`` each from a
    model fitted without its group's rows (``groups``: same-name group of every target product; the
    sample is cut into ``folds`` folds by group). The final fit and the folds' fits share one pool.
    """
    categories = np.asarray(categories, dtype=np.int64)
    features = TextFeatures()
    matrix = features.fit_transform(texts)
    final = CategoryClassifier(temperature, features)
    probs = np.zeros((len(sample), top))
    cats = np.full((len(sample), top), -1, dtype=np.int64)
    sample_groups = groups[sample]
    distinct = np.unique(sample_groups)
    shuffled = np.random.default_rng(seed).permutation(len(distinct)) % folds
    fold_of_group = dict(zip(distinct.tolist(), shuffled.tolist()))
    fold = np.fromiter((fold_of_group[g] for g in sample_groups.tolist()), dtype=np.int64, count=len(sample))

    def one_fit(f: int) -> None:
        if f < 0:
            final.fit(texts, categories, matrix=matrix)
            return
        held = np.flatnonzero(fold == f)
        train = ~np.isin(groups, sample_groups[held])
        model = CategoryClassifier(temperature).fit([], categories[train], matrix=matrix[train])
        probs[held], cats[held] = model.vote_matrix(matrix[sample[held]], top)

    # liblinear releases the GIL: the fits run side by side on the cores
    jobs = [-1, *range(min(folds, len(distinct)))]
    with ThreadPoolExecutor(max_workers=max(1, min(len(jobs), os.cpu_count() or 1))) as pool:
        list(pool.map(one_fit, jobs))
    log.info("classifier: fitted on %d target products; out-of-fold votes for %d in %d folds",
             len(texts), len(sample), folds)
    return final, (probs, cats)
