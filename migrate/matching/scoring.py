"""From pair features to a match score (0-1) and from scores to match / no match.

The score is a logistic combination of :data:`~migrate.matching.features.FEATURES`. Without labelled
pairs it uses :data:`DEFAULT_WEIGHTS` (fitted once, with the bundled base model, on the train
splits of the Abt-Buy and Amazon-Google benchmarks; ``python bench/match_bench.py
--print-default-weights`` refits them) and the threshold 0.5. With labelled pairs
(``--labels``) the weights are refitted on them (scikit-learn ``LogisticRegression``, or
``HistGradientBoostingClassifier`` with ``--scorer boosting``) and the threshold is the one that
maximises F1 -- or, with ``--min-precision``, the lowest that reaches that precision -- on
out-of-fold scores (5-fold cross-validation grouped by left product), so the precision and
recall reported at it are not measured on pairs the weights were fitted to.

>>> t = choose_threshold(np.array([0.9, 0.8, 0.6, 0.3, 0.2]), np.array([1, 1, 0, 1, 0]))
>>> t.value, t.precision, t.recall
(0.3, 0.75, 1.0)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from migrate.errors import TaxmigError
from migrate.matching.features import FEATURES, RERANKER_FEATURES

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS: dict[str, float] = {
    "cosine": -0.02, "cosine_gap_left": 7.35, "cosine_gap_right": 7.49, "title_similarity": -1.91,
    "title_partial": 2.43, "title_gap_left": 4.61, "title_gap_right": 6.64, "code_agreement": 4.17,
    "number_agreement": 1.07, "brand_agreement": 0.38,
}
"""The score's weights without labelled pairs (``--labels`` refits them), fitted on both benchmarks'
train splits with the bundled base model. Their pairs are hard (every non-match was picked because
it looks like a match), so the weights lean on the gaps to each product's best candidate and on
identifiers rather than on raw similarity. What they give on catalogs they were not fitted on:
BENCHMARKS.md, "match: Abt-Buy and Amazon-Google (DeepMatcher splits)", the leave-one-benchmark-out rows."""
DEFAULT_INTERCEPT = -2.87
DEFAULT_THRESHOLD = 0.5
NO_LABEL_FLOOR = 0.1
"""Without labelled pairs, two catalogs pair one to one: a pair is a match when each product is
the other's best-scoring candidate (:func:`mutual_best`) and its score is at least this. Weights
fitted on one benchmark rank another catalog's candidates well but their scores do not transfer;
the mutual best does, and the floor keeps a product whose best candidate is plainly different
unmatched. Chosen on the valid splits, in the floor table of:
BENCHMARKS.md, "match: Abt-Buy and Amazon-Google (DeepMatcher splits)"."""
SCORERS = ("logistic", "boosting")
JOIN_COLUMNS = ("hybrid", *RERANKER_FEATURES)
"""The joined score's inputs (:func:`fit_join`): the logit of the hybrid's score, the logit of the
re-ranker's probability and the probability's gaps to each product's best (:data:`RERANKER_FEATURES`)."""
JOIN_HYBRID = "boosting"
"""How the joined score's hybrid half is fitted on the re-ranker's training pairs: gradient boosting
over the pair features (it beat logistic weights under the same join on both benchmarks).
Measured: BENCHMARKS.md, "match: Abt-Buy and Amazon-Google (DeepMatcher splits)", the re-ranker's comparison rows."""
JOIN_KIND = "boosting"
"""How the joined score itself is fitted on the validation pairs, over :data:`JOIN_COLUMNS`: gradient
boosting (it beat a logistic regression of the same columns on both benchmarks).
Measured: BENCHMARKS.md, "match: Abt-Buy and Amazon-Google (DeepMatcher splits)", the re-ranker's comparison rows."""
MIN_LABELS_TO_FIT = 10
"""Matches and non-matches (each) needed to refit the weights; fewer only choose the threshold."""
CV_FOLDS = 5


@dataclass
class PairScorer:
    """Scores feature rows. ``kind``: ``default`` (fixed weights), ``logistic`` or ``boosting``
    (fitted), ``reranker`` (the re-ranker's probability as it is), ``joined`` (:func:`fit_join`:
    ``model`` is the hybrid's scorer over :data:`FEATURES`, ``join`` the scorer over
    :data:`JOIN_COLUMNS`). ``names``: the feature columns, :data:`FEATURES` plus
    :data:`RERANKER_FEATURES` when there is a re-ranker."""

    kind: str
    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    intercept: float = DEFAULT_INTERCEPT
    model: Any = None
    names: tuple[str, ...] = FEATURES
    join: "PairScorer | None" = None

    def score(self, features: np.ndarray) -> np.ndarray:
        """Match probability per row, 0-1."""
        if len(features) == 0:
            return np.zeros(0, dtype=np.float64)
        if self.kind == "reranker":
            return features[:, self.names.index(RERANKER_FEATURES[0])].astype(np.float64)
        if self.kind == "joined":
            return self.join.score(join_inputs(self.model, features))
        if self.kind == "boosting":
            with _one_openmp_thread():
                return self.model.predict_proba(features)[:, 1]
        w = np.array([self.weights[f] for f in self.names])
        z = features.astype(np.float64) @ w + self.intercept
        return 1.0 / (1.0 + np.exp(-z))

    def describe(self) -> dict[str, Any]:
        """For the Summary: the kind and, for logistic scorers, the weights."""
        if self.kind == "reranker":
            return {"kind": "the cross-encoder re-ranker's probability (no labelled pairs to fit weights on)"}
        if self.kind == "joined":
            return {"kind": f"joined score (train-match): {self.join.kind} over {', '.join(JOIN_COLUMNS)}, fitted "
                            f"on the re-ranker's validation pairs; the hybrid's score is {self.model.kind} over the "
                            "pair features, fitted on its training pairs"}
        if self.kind == "boosting":
            return {"kind": "gradient boosting (HistGradientBoostingClassifier), fitted on the labelled pairs"}
        how = ("logistic, default weights (fitted on the Abt-Buy and Amazon-Google train splits with the base model)"
               if self.kind == "default" else "logistic, weights fitted on the labelled pairs")
        return {"kind": how, **{k: round(v, 3) for k, v in self.weights.items()}, "intercept": round(self.intercept, 3)}


def default_scorer(names: tuple[str, ...] = FEATURES) -> PairScorer:
    """The scorer without labelled pairs: :data:`DEFAULT_WEIGHTS`, or the re-ranker's probability
    when ``names`` has a re-ranker column (the default weights know nothing of it)."""
    return PairScorer("default") if names == FEATURES else PairScorer("reranker", names=names)


def _estimator(kind: str, seed: int):
    if kind == "logistic":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=1.0, max_iter=2000)
    if kind == "boosting":
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, random_state=seed)
    raise TaxmigError(f"unknown scorer '{kind}'", hint=f"use one of {', '.join(SCORERS)}")


def _one_openmp_thread():
    """scikit-learn's OpenMP threads next to torch's (two libgomp copies) can spin against each other
    (a small gradient boosting fit after a training run then takes minutes, not a fraction of a
    second): the fits run on one OpenMP thread."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="openmp")


def fit_scorer(features: np.ndarray, labels: np.ndarray, kind: str = "logistic", *, seed: int = 0,
               names: tuple[str, ...] = FEATURES) -> PairScorer:
    """A scorer fitted on labelled feature rows (columns ``names``)."""
    with _one_openmp_thread():
        model = _estimator(kind, seed).fit(features, labels)
    if kind == "logistic":
        return PairScorer("logistic", dict(zip(names, map(float, model.coef_[0]))), float(model.intercept_[0]),
                          names=names)
    return PairScorer("boosting", model=model, names=names)


def logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)), with p kept within [1e-6, 1 - 1e-6]."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def join_inputs(hybrid: PairScorer, features: np.ndarray) -> np.ndarray:
    """The :data:`JOIN_COLUMNS` of feature rows (:data:`FEATURES` then :data:`RERANKER_FEATURES`)."""
    n = len(FEATURES)
    return np.column_stack([logit(hybrid.score(features[:, :n])), logit(features[:, n]),
                            features[:, n + 1:n + len(RERANKER_FEATURES)]])


def joined_scorer(train_features: np.ndarray, train_labels: np.ndarray, valid_features: np.ndarray,
                  valid_labels: np.ndarray, *, seed: int = 0) -> PairScorer:
    """The joined scorer of :func:`fit_join`, without its threshold (what loading a re-ranker refits)."""
    hybrid = fit_scorer(train_features, train_labels, JOIN_HYBRID, seed=seed)
    join = fit_scorer(join_inputs(hybrid, valid_features), valid_labels, JOIN_KIND, seed=seed, names=JOIN_COLUMNS)
    return PairScorer("joined", {}, 0.0, model=hybrid, names=(*FEATURES, *RERANKER_FEATURES), join=join)


def fit_join(train_features: np.ndarray, train_labels: np.ndarray, valid_features: np.ndarray,
             valid_labels: np.ndarray, valid_groups: np.ndarray, *,
             seed: int = 0) -> tuple[PairScorer, "MatchThreshold"]:
    """The score ``taxmig match --reranker`` uses without labelled pairs, fitted by ``train-match
    --cross-encoder``: the hybrid (:data:`JOIN_HYBRID` over :data:`FEATURES`) fitted on the re-ranker's
    training pairs, whose re-ranker probabilities are too good to trust, then :data:`JOIN_KIND` over
    :data:`JOIN_COLUMNS` on the validation pairs, which the re-ranker did not learn from (threshold:
    best F1 out-of-fold there). ``train_features``: :data:`FEATURES` columns; ``valid_features``:
    :data:`FEATURES` then :data:`RERANKER_FEATURES`. Refuses label sets :func:`can_fit` refuses."""
    if not (can_fit(train_labels) and can_fit(valid_labels)):
        raise TaxmigError(f"a joined score needs at least {MIN_LABELS_TO_FIT} matches and non-matches among the "
                          "training and the validation pairs", hint="label more pairs")
    scorer = joined_scorer(train_features, train_labels, valid_features, valid_labels, seed=seed)
    stacked = join_inputs(scorer.model, valid_features)
    held_out = out_of_fold_scores(stacked, valid_labels, valid_groups, JOIN_KIND, seed=seed, names=JOIN_COLUMNS)
    threshold = choose_threshold(held_out, valid_labels, source=f"{len(valid_labels)} validation pairs, out-of-fold")
    return scorer, threshold


def can_fit(labels: np.ndarray) -> bool:
    """Enough matches and non-matches to refit the weights."""
    n_pos = int(labels.sum())
    return min(n_pos, len(labels) - n_pos) >= MIN_LABELS_TO_FIT


def out_of_fold_scores(features: np.ndarray, labels: np.ndarray, groups: np.ndarray, kind: str = "logistic", *,
                       seed: int = 0, names: tuple[str, ...] = FEATURES) -> np.ndarray:
    """Each labelled pair scored by a scorer fitted without its fold (folds keep a left product's
    pairs together, so its other pairs do not leak its answer)."""
    from sklearn.model_selection import StratifiedGroupKFold

    n_pos = int(labels.sum())
    folds = max(2, min(CV_FOLDS, n_pos, len(labels) - n_pos, len(np.unique(groups))))
    out = np.zeros(len(labels), dtype=np.float64)
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, test in splitter.split(features, labels, groups):
        if labels[train].min() == labels[train].max():  # a fold without one class: cannot fit, use defaults
            out[test] = default_scorer(names).score(features[test])
            continue
        out[test] = fit_scorer(features[train], labels[train], kind, seed=seed, names=names).score(features[test])
    return out


@dataclass(frozen=True)
class MatchThreshold:
    """The score from which a pair is a match, how it was chosen, and its quality on labelled pairs."""

    value: float
    source: str
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    n_pairs: int = 0
    n_matches: int = 0

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"threshold": round(self.value, 4), "chosen": self.source}
        if self.precision is not None:
            out.update(precision=round(self.precision, 4), recall=round(self.recall, 4), f1=round(self.f1, 4),
                       labelled_pairs=self.n_pairs, labelled_matches=self.n_matches)
        return out


def quality(scores: np.ndarray, labels: np.ndarray, value: float) -> tuple[float, float, float]:
    """(precision, recall, F1) of ``scores >= value`` against ``labels`` (scikit-learn)."""
    from sklearn.metrics import f1_score, precision_score, recall_score

    pred = scores >= value
    return (float(precision_score(labels, pred, zero_division=0)), float(recall_score(labels, pred, zero_division=0)),
            float(f1_score(labels, pred, zero_division=0)))


def choose_threshold(scores: np.ndarray, labels: np.ndarray, *, min_precision: float | None = None,
                     source: str = "labelled pairs") -> MatchThreshold:
    """The threshold with the best F1 on (scores, labels) -- or, with ``min_precision``, the lowest
    reaching that precision (the best F1 one, and a note, when none does). Uses scikit-learn's
    ``precision_recall_curve``; a pair is a match when its score is ``>=`` the threshold."""
    from sklearn.metrics import precision_recall_curve

    labels = np.asarray(labels).astype(int)
    precision, recall, cuts = precision_recall_curve(labels, scores)
    precision, recall = precision[:-1], recall[:-1]
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    how = f"best F1 on {source}"
    if min_precision is not None:
        ok = np.flatnonzero(precision >= min_precision)
        if len(ok):
            k = int(ok[np.argmax(recall[ok])])
            how = f"lowest reaching precision {min_precision} on {source}"
        else:
            k = int(np.argmax(f1))
            how = f"precision {min_precision} not reachable on {source}: best F1 instead"
    else:
        k = int(np.argmax(f1))
    value = float(cuts[k])
    p, r, f = quality(scores, labels, value)
    return MatchThreshold(value, how, p, r, f, len(labels), int(labels.sum()))


def mutual_best(left: np.ndarray, right: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per scored pair (flat arrays): whether it is its left product's best-scoring pair *and* its
    right product's best-scoring pair (among the pairs scored; ties go to the first listed).

    >>> mutual_best(np.array([0, 0, 1, 1]), np.array([5, 6, 5, 6]), np.array([0.9, 0.4, 0.8, 0.3])).tolist()
    [True, False, False, False]
    """
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    best = []
    for side in (np.asarray(left), np.asarray(right)):
        mask = np.zeros(len(scores), dtype=bool)
        _, first = np.unique(side[order], return_index=True)
        mask[order[first]] = True
        best.append(mask)
    return best[0] & best[1]


def threshold_at(value: float, scores: np.ndarray | None = None, labels: np.ndarray | None = None, *,
                 source: str = "given") -> MatchThreshold:
    """A fixed threshold, with its quality on labelled pairs when they are given."""
    if scores is None or labels is None:
        return MatchThreshold(float(value), source)
    p, r, f = quality(scores, labels, value)
    return MatchThreshold(float(value), source, p, r, f, len(labels), int(np.sum(labels)))
