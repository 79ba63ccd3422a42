"""Without labelled pairs: how many left products have a twin on the right, and how likely each
pair is the same product -- from the run's own pair features, never from labels.

Contract of :func:`estimate_matches`: given a run's scored candidate pairs (flat ``left``,
``right``, ``scores``, feature rows in :data:`~migrate.matching.features.FEATURES` order) and the
:class:`~migrate.matching.features.PairContext` they came from, it fits a Fellegi-Sunter model
(the EM Splink and fastLink use) on each left product's best-scoring pair: every comparison of
:data:`COMPARISONS` is cut into agreement levels, the match (m) and non-match (u) level
probabilities and the prior ``lambda`` (the share of left products whose best pair is a match)
are fitted by EM, starting from the run's scores. It returns an :class:`OverlapEstimate`: the
estimated overlap (share of left products with a twin) with a bootstrap interval over left
products, each scored pair's match probability (0 for pairs that are not their left product's
best), the probability cut that maximises expected F1 among the mutual best pairs, and the
expected precision and recall there. Deterministic for a given ``seed``; no labels read.

Model codes are one comparison with Splink-style levels (:data:`CODE_LEVELS`): ``exact`` (a
normalised code of one side equals one of the other's), ``fuzzy`` (a code of one side is inside
the other's title or codes), ``missing`` (a side has none) and ``conflicting`` (both have codes,
none agree); EM learns what each is worth.

What it gives on whole catalogs with 0-90% of the twins removed:
BENCHMARKS.md, "match: whole tables, no labels (issue 38)".

>>> x = np.array([[0.9, 0, 0, 0.9, 0.9, 0, 0, 1.0, 1.0, 1.0]], dtype=np.float32)
>>> code_levels(x, [frozenset({"ab12"})], [frozenset({"ab12"})], np.array([0]), np.array([0])).tolist()
[3]
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from migrate.matching.features import FEATURES, UNKNOWN

log = logging.getLogger(__name__)

CODE_LEVELS = ("conflicting", "missing", "fuzzy", "exact")
"""Agreement levels of the model-code comparison, worst first (what :func:`code_levels` returns)."""
COMPARISONS = ("cosine", "title_partial", "codes", "numbers", "brand", "margin", "mutual")
"""The comparisons the EM fits, each cut into levels by :func:`comparison_levels`: encoder cosine,
rapidfuzz partial title ratio, model codes (:data:`CODE_LEVELS`), numbers in the titles, brands,
the score's margin over the left product's second-best candidate, and whether the pair is the
right product's best too. Chosen against other sets (title token-set ratio, the right side's
margin, the gap features) in BENCHMARKS.md, "match: whole tables, no labels (issue 38)"."""
CUTS = (0.6, 0.7, 0.8, 0.9)
"""Level edges of cosine and partial title ratio (Splink-style thresholds)."""
MARGIN_CUTS = (0.05, 0.15, 0.3, 0.5)
"""Level edges of the score's margin over the left product's second-best candidate."""
RERANKER_COMPARISON = "cross_encoder"
RERANKER_CUTS = (0.05, 0.2, 0.5, 0.8, 0.95)
"""Level edges of a re-ranker's probability, the comparison a ``--reranker`` adds: a re-ranker
trained on other catalogs joins the estimate as one more piece of evidence whose worth EM learns
from this run's pairs (a probability that does not separate this run's twins from the rest gets
levels of weight near 0). Measured: BENCHMARKS.md, "match: whole tables, no labels, a re-ranker
trained on the other benchmark"."""
SMOOTHING = 0.5
"""Pseudo-count added to every level's m and u counts (no level gets probability 0)."""
MAX_ITER = 200
TOLERANCE = 1e-6
BOOTSTRAP = 50
"""Bootstrap resamples of the left products for the overlap's interval."""
INTERVAL = 0.90


@dataclass
class FellegiSunter:
    """A fitted model: ``lam`` the prior, ``m``/``u`` per comparison the level probabilities."""

    lam: float
    m: list[np.ndarray]
    u: list[np.ndarray]

    def probability(self, levels: np.ndarray) -> np.ndarray:
        """Match probability of rows of levels (one column per comparison)."""
        z = np.full(len(levels), np.log(self.lam / (1 - self.lam)))
        for j, (m, u) in enumerate(zip(self.m, self.u)):
            z += np.log(m[levels[:, j]]) - np.log(u[levels[:, j]])
        return 1.0 / (1.0 + np.exp(-z))

    def weights(self, names: Sequence[str]) -> dict[str, list[float]]:
        """Splink's match weights: log2(m / u) per level, worst level first."""
        return {n: [round(float(np.log2(m[k] / u[k])), 2) for k in range(len(m))]
                for n, m, u in zip(names, self.m, self.u)}


def fit_fellegi_sunter(levels: np.ndarray, start: np.ndarray, n_levels: Sequence[int],
                       counts: np.ndarray | None = None) -> tuple[FellegiSunter, np.ndarray]:
    """EM over rows of levels from ``start`` (initial match probabilities): (model, posteriors).
    ``counts``: how many pairs each row stands for (rows are then distinct level patterns; None: 1 each)."""
    p = np.clip(np.asarray(start, dtype=np.float64), 1e-4, 1 - 1e-4)
    w = np.ones(len(levels)) if counts is None else np.asarray(counts, dtype=np.float64)
    model = None
    for _ in range(MAX_ITER):
        lam = float(np.clip((w * p).sum() / max(w.sum(), 1e-12), 1e-4, 1 - 1e-4))
        m = [np.bincount(levels[:, j], weights=w * p, minlength=k) + SMOOTHING for j, k in enumerate(n_levels)]
        u = [np.bincount(levels[:, j], weights=w * (1 - p), minlength=k) + SMOOTHING for j, k in enumerate(n_levels)]
        model = FellegiSunter(lam, [a / a.sum() for a in m], [a / a.sum() for a in u])
        new = model.probability(levels)
        done = np.abs(new - p).max() < TOLERANCE
        p = new
        if done:
            break
    return model, p


def code_levels(features: np.ndarray, left_codes: Sequence[frozenset[str]], right_codes: Sequence[frozenset[str]],
                li: np.ndarray, ri: np.ndarray) -> np.ndarray:
    """Index into :data:`CODE_LEVELS` per pair: exact when the two code sets share a code, fuzzy when
    ``code_agreement`` found one side's code inside the other's text, conflicting when it is 0,
    else missing."""
    agreement = features[:, FEATURES.index("code_agreement")]
    out = np.where(agreement == 1.0, 2, np.where(agreement == 0.0, 0, 1))
    for n, (i, j) in enumerate(zip(np.asarray(li).tolist(), np.asarray(ri).tolist())):
        if out[n] == 2 and left_codes[i] & right_codes[j]:
            out[n] = 3
    return out.astype(np.int64)


def _second_margin(scores: np.ndarray, side: np.ndarray) -> np.ndarray:
    """Each pair's score minus the second-best score of its product on ``side`` (its score when none)."""
    order = np.lexsort((-scores, side))
    ordered = side[order]
    first = np.r_[True, ordered[1:] != ordered[:-1]]
    second = np.r_[False, first[:-1]] & ~first
    runner_up = np.zeros(int(side.max()) + 1 if len(side) else 0)
    runner_up[ordered[second]] = scores[order][second]
    return scores - runner_up[side]


def comparison_levels(features: np.ndarray, margin: np.ndarray, li: np.ndarray, ri: np.ndarray, mutual: np.ndarray,
                      left_codes: Sequence[frozenset[str]], right_codes: Sequence[frozenset[str]],
                      reranker: np.ndarray | None = None) -> tuple[np.ndarray, tuple[int, ...]]:
    """(levels per pair, one column per :data:`COMPARISONS`, then :data:`RERANKER_COMPARISON` when a
    re-ranker's probabilities are given; the number of levels of each). ``margin``: each pair's score
    minus its left product's second-best score."""
    col = {f: k for k, f in enumerate(FEATURES)}
    numbers = features[:, col["number_agreement"]]
    brand = features[:, col["brand_agreement"]]
    columns = [
        np.searchsorted(CUTS, features[:, col["cosine"]], side="right"),
        np.searchsorted(CUTS, features[:, col["title_partial"]], side="right"),
        code_levels(features, left_codes, right_codes, li, ri),
        np.select([numbers == UNKNOWN, numbers == 1.0, numbers > 0], [1, 3, 2], 0),
        np.select([brand == 1.0, brand == 0.0], [2, 0], 1),
        np.searchsorted(MARGIN_CUTS, margin, side="right"),
        mutual.astype(np.int64),
    ]
    sizes = (len(CUTS) + 1, len(CUTS) + 1, len(CODE_LEVELS), 4, 3, len(MARGIN_CUTS) + 1, 2)
    if reranker is not None:
        columns.append(np.searchsorted(RERANKER_CUTS, np.asarray(reranker, dtype=np.float64), side="right"))
        sizes = (*sizes, len(RERANKER_CUTS) + 1)
    return np.column_stack(columns).astype(np.int64), sizes


def expected_f1_cut(probabilities: np.ndarray, expected_matches: float) -> tuple[float, float, float]:
    """(cut, expected precision, expected recall): calling the pairs with probability >= cut matches
    maximises 2 E[TP] / (called + expected matches), the expected F1.

    >>> [round(v, 3) for v in expected_f1_cut(np.array([0.99, 0.95, 0.2, 0.1]), 2.24)]
    [0.95, 0.97, 0.866]
    """
    order = np.sort(np.asarray(probabilities, dtype=np.float64))[::-1]
    if not len(order) or expected_matches <= 0:
        return 1.0, 0.0, 0.0
    tp = np.cumsum(order)
    called = np.arange(1, len(order) + 1)
    best = int(np.argmax(2 * tp / (called + expected_matches)))
    return float(order[best]), float(tp[best] / called[best]), float(min(1.0, tp[best] / expected_matches))


@dataclass
class OverlapEstimate:
    """What :func:`estimate_matches` found (see the module's contract)."""

    overlap: float
    low: float
    high: float
    n_left: int
    cut: float
    precision: float
    recall: float
    probabilities: np.ndarray = field(repr=False)
    weights: dict[str, list[float]] = field(default_factory=dict)
    chosen: np.ndarray | None = field(default=None, repr=False)
    """The run's matches as a mask over the scored pairs (set by the matcher once it has paired them)."""

    @property
    def expected_twins(self) -> float:
        return self.overlap * self.n_left

    def quality_of(self, chosen: np.ndarray) -> tuple[float, float]:
        """Expected (precision, recall) of calling the pairs ``chosen`` (a mask over the scored pairs) matches."""
        p = self.probabilities[np.asarray(chosen, dtype=bool)]
        if not len(p):
            return 0.0, 0.0
        return float(p.mean()), float(min(1.0, p.sum() / max(self.expected_twins, 1e-9)))

    def summary(self) -> dict[str, Any]:
        """The Summary's (and the JSON summary's) rows about the estimate (with :attr:`chosen`, the
        expected precision and recall of the run's matches)."""
        chosen = self.chosen
        out: dict[str, Any] = {
            "Estimated overlap (no labels)": (
                f"about {self.overlap:.0%} of left products have a twin on the right ({INTERVAL:.0%} interval "
                f"{self.low:.0%}-{self.high:.0%}, bootstrap over left products; Fellegi-Sunter EM over "
                f"{', '.join(self.weights or COMPARISONS)}). The interval is sampling noise only: where products "
                f"come in close "
                f"variants (editions, upgrades, sizes) a look-alike passes for a twin and the estimate runs high; "
                f"labelled pairs (--labels) measure it"),
            "Estimated overlap": {"share": round(self.overlap, 4), "low": round(self.low, 4),
                                  "high": round(self.high, 4), "left_products": self.n_left,
                                  "expected_twins": round(self.expected_twins, 1)},
            "Expected-F1 cut (no labels)": {"probability": round(self.cut, 4),
                                            "expected_precision": round(self.precision, 4),
                                            "expected_recall": round(self.recall, 4)},
            "Match weights (log2 m/u per level, worst first)": self.weights,
        }
        if chosen is not None:
            p, r = self.quality_of(chosen)
            out["Estimated precision / recall of the matches (no labels)"] = {"precision": round(p, 4),
                                                                            "recall": round(r, 4)}
        return out


def best_of_each_left(li: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Indices (ascending) of each left product's best-scoring pair among the flat scored pairs."""
    order = np.lexsort((-scores, li))
    first = np.r_[True, li[order][1:] != li[order][:-1]] if len(li) else np.zeros(0, bool)
    return np.sort(order[first])


def estimate_matches(li: np.ndarray, ri: np.ndarray, scores: np.ndarray, features: np.ndarray, mutual: np.ndarray,
                     left_codes: Sequence[frozenset[str]], right_codes: Sequence[frozenset[str]], n_left: int, *,
                     reranker: np.ndarray | None = None, seed: int = 0,
                     bootstrap: int = BOOTSTRAP) -> OverlapEstimate:
    """The module's contract: ``mutual`` marks the pairs that are both products' best (the one-to-one
    pairing's candidates); ``n_left`` counts every left product, those without candidates included;
    ``reranker``: a re-ranker's probability per scored pair, one more comparison
    (:data:`RERANKER_COMPARISON`); only each left product's best pair's is read."""
    li, ri = np.asarray(li, dtype=np.int64), np.asarray(ri, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    best = best_of_each_left(li, scores)
    levels, sizes = comparison_levels(features[best], _second_margin(scores, li)[best], li[best], ri[best],
                                      mutual[best], left_codes, right_codes,
                                      None if reranker is None else np.asarray(reranker)[best])
    names = COMPARISONS if reranker is None else (*COMPARISONS, RERANKER_COMPARISON)
    # EM over the distinct level patterns, each weighted by its pairs: the same fit, at the cost of the
    # patterns (a few thousand at most) instead of the left products
    patterns, inverse, counts = np.unique(levels, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    start = np.bincount(inverse, weights=scores[best], minlength=len(patterns)) / counts
    model, fitted = fit_fellegi_sunter(patterns, start, sizes, counts)
    posterior = fitted[inverse]
    probabilities = np.zeros(len(scores))
    probabilities[best] = posterior
    overlap = float(posterior.sum() / max(n_left, 1))
    rng = np.random.default_rng(seed)
    shares = []
    for _ in range(bootstrap):  # a resample of the left products: multinomial counts over the patterns
        resampled = rng.multinomial(len(best), counts / counts.sum())
        _, p = fit_fellegi_sunter(patterns, fitted, sizes, resampled)
        shares.append(float((resampled * p).sum() / max(n_left, 1)))
    tail = (1 - INTERVAL) / 2
    low, high = (float(np.quantile(shares, tail)), float(np.quantile(shares, 1 - tail))) if shares else (overlap,
                                                                                                         overlap)
    candidates = probabilities[best][mutual[best]]
    cut, precision, recall = expected_f1_cut(candidates, posterior.sum())
    log.info("no labels: about %.1f%% of %d left products have a twin (%.1f%%-%.1f%%); expected-F1 cut %.3f "
             "(expected precision %.3f, recall %.3f)", 100 * overlap, n_left, 100 * low, 100 * high, cut, precision,
             recall)
    return OverlapEstimate(overlap, low, high, n_left, cut, precision, recall, probabilities,
                           model.weights(names))
