"""Turn raw category scores into a calibrated probability that the top category is right.

Fitted on labelled data the run gets for free: the target catalog, scored leave-one-out (each
target product against the others, its own near-duplicates excluded). A logistic regression on
(top score, margin, nearest similarity, label similarity) gives the probability.

>>> cal = ConfidenceCalibrator().fit(np.array([[0.9, 0.8, 0.9, 0.5], [0.3, 0.01, 0.4, 0.2]] * 20),
...                                  np.array([True, False] * 20))
>>> bool(cal.predict(np.array([[0.95, 0.9, 0.9, 0.5]]))[0] > 0.5)
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import expit


@dataclass
class LeaveOneOut:
    """What the leave-one-out over a labelled target catalog measured (the calibration sample,
    each product scored with its own listings left out): top-1 accuracy, the unflagged share and
    its accuracy under the chosen ``thresholds``, and where ``min_confidence`` came from."""

    products: int
    top1_accuracy: float
    unflagged_share: float
    unflagged_accuracy: float
    thresholds: Any  # migrate.mapping.settings.Thresholds
    min_confidence_source: str = "given"


class ConfidenceCalibrator:
    """Logistic calibration of score features; ``fitted`` is False until :meth:`fit` saw both classes.

    Fitted with scikit-learn's LogisticRegression; what it keeps is the regression's coefficients
    and intercept, applied in :meth:`predict` as scikit-learn's ``predict_proba`` does, so a night
    with a kept calibrator need not import scikit-learn (migrate.mapping.sparse_text says why).
    """

    def __init__(self) -> None:
        self.coef: np.ndarray | None = None  # (1, features)
        self.intercept: np.ndarray | None = None  # (1,)
        self.constant: float | None = None

    @property
    def fitted(self) -> bool:
        return self.coef is not None or self.constant is not None

    @property
    def logistic(self) -> bool:
        """True when a regression was fitted (not a constant, not the raw score)."""
        return self.coef is not None

    def fit(self, features: np.ndarray, correct: np.ndarray) -> "ConfidenceCalibrator":
        correct = np.asarray(correct, dtype=bool)
        if len(correct) == 0:
            return self
        if correct.all() or not correct.any():
            self.constant = float(correct.mean())
            return self
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=10.0, max_iter=1000).fit(features, correct)
        self.coef, self.intercept = model.coef_.copy(), model.intercept_.copy()
        return self

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Probability of being right per row; the raw top score when not fitted."""
        if self.coef is not None:
            return expit((np.asarray(features) @ self.coef.T + self.intercept).reshape(-1))
        if self.constant is not None:
            return np.full(len(features), self.constant)
        return np.clip(features[:, 0], 0.0, 1.0)


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    """Weighted mean gap between confidence and accuracy over equal-width confidence bins."""
    confidence = np.asarray(confidence, dtype=float)
    correct = np.asarray(correct, dtype=float)
    if len(confidence) == 0:
        return float("nan")
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(ece)


def wilson_lower_bound(successes: np.ndarray, totals: np.ndarray, confidence: float = 0.95) -> np.ndarray:
    """One-sided Wilson score lower bound of a binomial proportion (vectorised).

    >>> round(float(wilson_lower_bound(np.array([97]), np.array([100]))[0]), 3)
    0.927
    """
    from scipy.stats import norm

    z = norm.ppf(confidence)
    n = np.maximum(np.asarray(totals, dtype=float), 1.0)
    p = np.asarray(successes, dtype=float) / n
    centre = p + z * z / (2 * n)
    spread = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - spread) / (1 + z * z / n)


def choose_min_confidence(confidence: np.ndarray, correct: np.ndarray, passes_other_flags: np.ndarray,
                          target_precision: float, min_rows: int = 20, level: float = 0.95) -> float | None:
    """Lowest confidence threshold whose unflagged rows reach ``target_precision`` with confidence
    ``level``: the one-sided Wilson lower bound of their precision must be at least the target, so
    that new rows -- not the ones the threshold was chosen on -- reach it too.

    Rows are those of the leave-one-out run; ``passes_other_flags`` marks rows no other flag
    catches. Returns None when no threshold keeps ``min_rows`` rows at that precision.

    >>> conf = np.linspace(1, 0, 1000)
    >>> right = np.r_[np.ones(600), np.zeros(400)].astype(bool)
    >>> round(choose_min_confidence(conf, right, np.ones(1000, bool), 0.99), 3)
    0.398
    """
    confidence = np.asarray(confidence, dtype=float)
    keep = np.asarray(passes_other_flags, dtype=bool)
    conf, right = confidence[keep], np.asarray(correct, dtype=float)[keep]
    order = np.argsort(-conf, kind="stable")
    conf, right = conf[order], right[order]
    counts = np.arange(1, len(right) + 1)
    bound = wilson_lower_bound(np.cumsum(right), counts, level)
    # a threshold can only sit between distinct confidences: use the last row of each tie run
    last_of_tie = np.r_[conf[1:] != conf[:-1], True]
    ok = np.flatnonzero((bound >= target_precision) & last_of_tie & (counts >= min_rows))
    return float(conf[ok[-1]]) if ok.size else None
