"""Learning from a reviewer's decisions: the decided products teach the undecided ones, at once.

Onto a taxonomy nobody labelled, every product starts with its zero-shot distribution over
candidate categories (:mod:`migrate.mapping.zeroshot`). Each product a person decides is a
labelled example of its category (a row decision with weight 1, a product covered by a category
or pair decision with :data:`COVERED_WEIGHT`: the reviewer judged the majority, and exceptions
hide there). Every undecided product is then scored again by one model over its candidates --
its zero-shot candidates plus the categories of its nearest decided products -- with these
features per candidate category ``c``:

- ``zero_shot``: log of the zero-shot (self-trained) probability of ``c``;
- ``vote``: log of the vote of the nearest decided products for ``c``, each weighing
  ``exp((sim - 1) / VOTE_TEMPERATURE)`` times its decision's weight: a near-copy of a decided
  product about 1, a product far from every decision about nothing (a vote normalised over the
  neighbours, as the labelled-catalog path's, lets a few far-away decisions outvote the zero-shot
  evidence of every product near none of them);
- ``nearest``: the cosine of the nearest decided product of ``c`` minus that of the nearest
  decided product of any category (0 for the closest category, negative for the others, and
  :data:`NO_NEIGHBOUR` when none of ``c``'s decided products is among the neighbours);
- ``words``: log of a naive Bayes word model's probability of ``c``, its counts from the decided
  products' words (the labelled-catalog path's lexical evidence);
- ``covered``: 1 when some product of ``c`` was decided anywhere;
- ``parent_vote``: ``vote`` for ``c``'s parent category (decided siblings and cousins), where the
  taxonomy lists it;
- ``spread``: log of the decisions' label mass that reaches the product through chains of similar
  products, decided or not (label propagation over the products' nearest-neighbour graph,
  :func:`spread_decisions`): a product far from every decision but close to undecided products
  that are close to one still hears of it;
- ``linear``: log of a linear probe's probability of ``c``: a multinomial logistic regression on
  the decided products' embeddings (:class:`_LinearProbe`), which weighs the directions of the
  embedding that tell this reviewer's categories apart, where ``vote`` and ``nearest`` weigh all
  alike.

``spread`` and ``linear`` are built only when named in :data:`LEARNERS` (the benchmark turns them
off for its before-and-after rows); left out, they are 0 and the fit keeps their weight at 0.

The score is a conditional logit over the candidates, ``P(c) = softmax_c(w . f(c))``: the weights
``w`` are fitted on the decisions themselves, out of fold (each decided product scored by the
other folds' decisions, so its own category is often one with few or no other decisions -- just
as for an undecided product), never by hand. Categories with no decided product keep their
zero-shot evidence; how much a category with a few decisions may draw its neighbours' products is
the weight of ``covered``, ``vote`` and ``nearest``, measured on held-out decisions. With no
decisions the zero-shot distribution is returned unchanged.

The same held-out decisions calibrate the confidence (:func:`calibrate`), and the random checks
among them decide which rows may go unflagged (:func:`unflag_threshold`);
:func:`migrate.mapping.questions.choose_questions` picks the next round's questions. The benchmark is ``python bench/review_rounds.py``.

>>> import numpy as np
>>> _union(np.array([[3, 1, -1]]), np.array([[1, 7, 7]])).tolist()  # candidates: zero-shot's, then the neighbours'
[[3, 1, 7]]
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.sparse import csr_matrix

from migrate.core.index import build_index, search
from migrate.mapping.calibration import wilson_lower_bound
from migrate.mapping.scoring import softmax_rows
from migrate.mapping.sparse_text import binary_word_matrix

log = logging.getLogger(__name__)

ROW_WEIGHT = 1.0
COVERED_WEIGHT = 0.5
"""Weight of a product decided by a category or pair decision (a row decision counts 1)."""
NEIGHBOURS = 20          # decided products that vote for each product
VOTE_TEMPERATURE = 0.05  # the labelled-catalog path's (ScoringParams.vote_temperature): sim 0.9 weighs e^-2
NO_NEIGHBOUR = -0.5      # ``nearest`` of a category none of whose decided products is a neighbour
ZERO_SHOT_FLOOR = 1e-4   # probability of a candidate outside the zero-shot list
VOTE_FLOOR = 1e-3
WORD_SMOOTHING = 0.1
FOLDS = 5
L2 = 1e-2                # ridge on the weights towards FIT_PRIOR, per decided product ...
RIDGE_DECISIONS = 20.0
"""... and at least as strong as this many decisions: the questions are the hard products, and a
few dozen of them fitted freely trust the zero-shot evidence too little for the easier rest."""
FEATURES = ("zero_shot", "vote", "nearest", "words", "covered", "parent_vote", "spread", "linear")
MIX_ITEM = "Feedback mix (weights fitted on the decisions)"  # its Summary item, on the Parameters sheet
DEFAULT_WEIGHTS = np.array([1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
"""The zero-shot distribution alone: what a round with too few decisions to fit on uses."""
FIT_PRIOR = np.array([1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
"""Where the fitted weights start and what the ridge pulls them towards: the zero-shot evidence and
the decided neighbours' vote, equally. The held-out decisions cannot teach that a near-copy of a
decided product belongs with it (the questions are one per group of similar products, so no
held-out decision has a near-copy among the others): the prior keeps the vote."""
MIN_DECISIONS = 20       # fewer decisions than this: too few to fit the mix on; zero-shot alone
LEARNERS = ("spread", "linear")
"""The features beyond the neighbours' and the words' that are built. Measured: BENCHMARKS.md,
"Review in rounds" (``python bench/review_rounds.py --before spread,linear --seeds 4``)."""
SPREAD_NEIGHBOURS = 10   # each product's nearest products the decisions spread through
SPREAD_ALPHA = 0.8       # share of its mass a product passes on to its neighbours at each step
SPREAD_STEPS = 8
SPREAD_FLOOR = 1e-3      # ``spread`` of a category no decision's mass reached
SPREAD_PRUNE = 1e-4      # mass below this is dropped at each step (keeps the matrix sparse)
LINEAR_C = 10.0          # the linear probe's inverse L2 strength (BENCHMARKS.md "Review in rounds")
LINEAR_FLOOR = 1e-3      # ``linear`` of a category the probe was not trained on


@dataclass
class Feedback:
    """What a round learns from: the decision in force per product id (a target category) and its
    weight (:data:`ROW_WEIGHT` or :data:`COVERED_WEIGHT`); ``measured``: what this round's answers
    showed of the previous round's suggestions (for the Summary); ``ask``: questions to ask."""

    decisions: dict[str, str]
    weights: dict[str, float]
    round: int = 1
    measured: dict[str, Any] = field(default_factory=dict)
    ask: int | None = None
    new_category: set[str] = field(default_factory=set)
    """Products a person said need a category the target lacks: settled (never asked again, flag
    ``DECIDED``), but no example of any category."""
    audited: set[str] = field(default_factory=set)
    """Decided products that were random checks when answered
    (:data:`migrate.mapping.questions.WHY_AUDIT`): the unbiased sample the unflagging threshold is
    calibrated on (:func:`unflag_threshold`)."""

    def arrays(self, ids: list[str], categories: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(decided category index per product, -1 undecided or not a target category; weights)."""
        index = {c: i for i, c in enumerate(categories)}
        decided = np.array([index.get(self.decisions.get(pid, ""), -1) for pid in ids], dtype=np.int64)
        weights = np.array([self.weights.get(pid, ROW_WEIGHT) for pid in ids], dtype=np.float64)
        return decided, np.where(decided >= 0, weights, 0.0)

    def audit_mask(self, ids: list[str]) -> np.ndarray:
        """(n,) whether each product is a decided random check."""
        return np.array([pid in self.audited for pid in ids], dtype=bool)


@dataclass
class ZeroShot:
    """Each product's zero-shot distribution: (n, K) probabilities over (n, K) category ids (-1 pad)."""

    probs: np.ndarray
    ids: np.ndarray


@dataclass
class Candidates:
    """Per product, the candidate categories (``ids``, -1 pad) and their features (n, W, F)."""

    ids: np.ndarray
    features: np.ndarray


@dataclass
class FeedbackModel:
    """The fitted mix and what it was fitted on (:func:`fit_feedback`)."""

    weights: np.ndarray
    candidates: Candidates
    decided: np.ndarray            # (n,) decided category per product, -1 undecided
    fitted_on: int                 # decided products the weights were fitted on (0: defaults)
    held_out_top1: float = float("nan")  # out-of-fold top-1 of the decided products under the fit
    zero_shot_top1: float = float("nan")  # the zero-shot top-1 of the same products
    held_out_confidence: np.ndarray | None = None  # (decided,) out-of-fold top probability
    held_out_correct: np.ndarray | None = None     # (decided,) out-of-fold top == the decision
    held_out_audit: np.ndarray | None = None  # (decided,) a random check when it was answered
    calibration: "Calibration | None" = None   # of the confidence (:func:`calibrate`)
    notes: list[str] = field(default_factory=list)

    def predict(self) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, category ids) per product, best first, over its candidates."""
        return _sorted(conditional_logit(self.candidates.features, self.candidates.ids, self.weights),
                       self.candidates.ids)


def _sorted(probs: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-probs, axis=1, kind="stable")
    p, i = np.take_along_axis(probs, order, 1), np.take_along_axis(ids, order, 1)
    return p, np.where(p > 0, i, -1)


def conditional_logit(features: np.ndarray, ids: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(n, W) softmax over each row's valid candidates of ``features @ weights``."""
    return softmax_rows(features @ weights, 1.0, ids >= 0)


class _Words:
    """Naive Bayes over binary word counts, its counts from decided products."""

    def __init__(self, texts: list[str]) -> None:
        self.matrix = binary_word_matrix(texts)
        self.lengths = np.asarray(self.matrix.sum(axis=1)).ravel() if self.matrix is not None else None

    def counts(self, labelled: np.ndarray, labels: np.ndarray, weights: np.ndarray, n_categories: int
               ) -> tuple[csr_matrix, np.ndarray] | None:
        """(log-smoothed word counts per category, log denominators) of the ``labelled`` products."""
        if self.matrix is None or not len(labelled):
            return None
        X = self.matrix
        assign = csr_matrix((weights, (labels, labelled)), shape=(n_categories, X.shape[0]))
        counts = (assign @ X).tocsr()
        totals = np.asarray(counts.sum(axis=1)).ravel()
        counts.data = np.log1p(counts.data / WORD_SMOOTHING)
        return counts.T.tocsr(), np.log(totals + WORD_SMOOTHING * X.shape[1])

    def log_probs(self, rows: np.ndarray, ids: np.ndarray, fitted: tuple[csr_matrix, np.ndarray] | None
                  ) -> np.ndarray:
        """(len(rows), W) log P(c | words) normalised over each row's candidates ``ids``."""
        if fitted is None:
            return np.zeros(ids.shape)
        log_counts_t, denom = fitted
        dense = (self.matrix[rows] @ log_counts_t).toarray() - self.lengths[rows, None] * denom[None, :]
        out = np.where(ids >= 0, np.take_along_axis(dense, np.clip(ids, 0, None), axis=1), -np.inf)
        top = out.max(axis=1, keepdims=True)
        top = np.where(np.isfinite(top), top, 0.0)
        out = out - top - np.log(np.maximum(np.exp(out - top).sum(axis=1, keepdims=True), 1e-300))
        return np.where(ids >= 0, out, 0.0)


def _zero_shot_feature(zs: ZeroShot, rows: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """log zero-shot probability of each candidate (``ZERO_SHOT_FLOOR`` outside the list)."""
    zids, zp = zs.ids[rows], zs.probs[rows]
    hit = (ids[:, :, None] == zids[:, None, :]) & (ids[:, :, None] >= 0)
    p = np.where(hit, zp[:, None, :], 0.0).sum(axis=2)
    return np.log(np.maximum(p, ZERO_SHOT_FLOOR))


def _union(first: np.ndarray, extra: np.ndarray) -> np.ndarray:
    """Per row, ``first``'s ids then ``extra``'s ids not already there (-1 padded)."""
    both = np.concatenate([first, extra], axis=1)
    # a later repeat of an id on the same row is dropped: sort by id, mark repeats, keep first positions
    order = np.argsort(both, axis=1, kind="stable")
    sorted_ids = np.take_along_axis(both, order, 1)
    repeat = np.zeros_like(both, dtype=bool)
    repeat[:, 1:] = sorted_ids[:, 1:] == sorted_ids[:, :-1]
    drop = np.zeros_like(repeat)
    np.put_along_axis(drop, order, repeat, axis=1)
    both = np.where(drop | (both < 0), -1, both)
    keep_order = np.argsort(both < 0, axis=1, kind="stable")
    out = np.take_along_axis(both, keep_order, 1)
    width = max(1, int((out >= 0).sum(axis=1).max()))
    return out[:, :width]


def product_graph(vectors: np.ndarray, neighbours: tuple[np.ndarray, np.ndarray] | None = None) -> csr_matrix:
    """(n, n) row-stochastic graph of each product's :data:`SPREAD_NEIGHBOURS` nearest other
    products, weighted ``exp((sim - 1) / VOTE_TEMPERATURE)``: a near-copy takes most of the weight.
    ``neighbours``: (similarities, positions) of each product's nearest others, -1 padded, where
    the caller has them (self-training found them: :attr:`SelfTrainingReport.neighbours`)."""
    n = len(vectors)
    if neighbours is None:
        sims, nn = search(build_index(vectors, queries=n), vectors, min(SPREAD_NEIGHBOURS + 1, n))
        nn = np.where(nn == np.arange(n)[:, None], -1, nn)
    else:
        sims, nn = neighbours
    sims, nn = sims[:, :SPREAD_NEIGHBOURS + 1], nn[:, :SPREAD_NEIGHBOURS + 1]
    w = np.where(nn >= 0, np.exp((sims.astype(np.float64) - 1.0) / VOTE_TEMPERATURE), 0.0)
    total = w.sum(axis=1, keepdims=True)
    w = np.divide(w, total, out=np.zeros_like(w), where=total > 0)
    rows = np.repeat(np.arange(n), nn.shape[1])
    graph = csr_matrix((w.ravel(), (rows, np.clip(nn, 0, None).ravel())), shape=(n, n))
    graph.eliminate_zeros()
    return graph


def spread_decisions(graph: csr_matrix, labelled: np.ndarray, labels: np.ndarray, weights: np.ndarray,
                     columns: np.ndarray) -> csr_matrix:
    """(n, len(columns)) label propagation: ``F = Y + SPREAD_ALPHA * graph @ F`` for
    :data:`SPREAD_STEPS` steps, ``Y`` the decisions (their weights, in their category's column of
    ``columns``)."""
    col = np.searchsorted(columns, labels)
    seeds = csr_matrix((weights, (labelled, col)), shape=(graph.shape[0], len(columns)))
    mass = seeds
    for _ in range(SPREAD_STEPS):
        mass = (seeds + SPREAD_ALPHA * (graph @ mass)).tocsr()
        mass.data[mass.data < SPREAD_PRUNE] = 0.0
        mass.eliminate_zeros()
    return mass


def _log_of_candidates(table: np.ndarray, columns: np.ndarray, ids: np.ndarray, floor: float) -> np.ndarray:
    """log(value + ``floor``) of each candidate ``ids`` (n, W) in ``table`` (n, len(columns)), whose
    columns are the sorted category ids ``columns``; a candidate not among them counts 0."""
    pos = np.clip(np.searchsorted(columns, ids), 0, len(columns) - 1)
    found = (ids >= 0) & (columns[pos] == ids)
    return np.log(np.where(found, np.take_along_axis(table, pos, axis=1), 0.0) + floor)


class _LinearProbe:
    """Multinomial logistic regression (scikit-learn) from unit embeddings to decided categories."""

    def __init__(self, vectors: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> None:
        import warnings

        from sklearn.linear_model import LogisticRegression

        with warnings.catch_warnings():  # many categories of one or two decisions each is the normal case here
            warnings.simplefilter("ignore", UserWarning)
            self.model = LogisticRegression(C=LINEAR_C, max_iter=300).fit(vectors, labels, sample_weight=weights)
        self.classes = self.model.classes_

    def feature(self, vectors: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """log(probability + :data:`LINEAR_FLOOR`) of each candidate ``ids`` (n, W) of ``vectors``."""
        return _log_of_candidates(self.model.predict_proba(vectors), self.classes, ids, LINEAR_FLOOR)


CHUNK = 4096  # products whose candidate features are built at once: (CHUNK, W, k) arrays stay small
SPREAD, LINEAR = FEATURES.index("spread"), FEATURES.index("linear")  # their columns of the features


def build_candidates(vectors: np.ndarray, words: _Words, zs: ZeroShot, rows: np.ndarray,
                     labelled: np.ndarray, labels: np.ndarray, weights: np.ndarray, n_categories: int,
                     parents: np.ndarray | None = None, *, folds: np.ndarray | None = None,
                     graph: csr_matrix | None = None, learners: tuple[str, ...] = ()) -> Candidates:
    """Candidates and features of the products at ``rows``, taught by the ``labelled`` products
    (their categories ``labels`` and decision ``weights``); ``parents``: each category's parent
    category (-1 none); ``learners``: which of :data:`LEARNERS` to build (``graph``:
    :func:`product_graph` of every product, for ``spread``).
    ``folds`` (out-of-fold fitting; ``rows`` are then the labelled products): a row is taught only
    by the labelled products of other folds."""
    k = min(NEIGHBOURS, len(labelled))
    if k == 0:
        ids = zs.ids[rows]
        features = np.zeros((len(rows), ids.shape[1], len(FEATURES)))
        features[:, :, 0] = _zero_shot_feature(zs, rows, ids)
        return Candidates(ids, features)
    index = build_index(vectors[labelled])
    extra = 0 if folds is None else 2 * k
    sims, nn = search(index, vectors[rows], min(k + extra, len(labelled)))
    if folds is not None:
        same = (nn < 0) | (folds[np.clip(nn, 0, None)] == folds[:, None])
        order = np.argsort(same, axis=1, kind="stable")[:, :k]
        keep = ~np.take_along_axis(same, order, 1)
        nn = np.where(keep, np.take_along_axis(nn, order, 1), -1)
        sims = np.where(keep, np.take_along_axis(sims, order, 1), 0.0)
    nn_cats = np.where(nn >= 0, labels[np.clip(nn, 0, None)], -1)
    ids = _union(zs.ids[rows], nn_cats)
    # each decided neighbour votes exp((sim - 1) / T): a near-copy ~1, a far one ~0 (not normalised:
    # a product far from every decision gets no vote, whatever its nearest decisions say)
    vote_w = np.where(nn >= 0, np.exp((sims.astype(np.float64) - 1.0) / VOTE_TEMPERATURE), 0.0) * \
        np.where(nn >= 0, weights[np.clip(nn, 0, None)], 0.0)
    groups = [(np.arange(len(rows)), np.ones(len(labelled), dtype=bool))] if folds is None else \
        [(np.flatnonzero(folds == g), folds != g) for g in np.unique(folds)]
    features = np.zeros((len(rows), ids.shape[1], len(FEATURES)))
    columns = np.unique(labels)
    for part, others in groups:  # out of fold: each fold's words, coverage and spread without the fold
        fitted = words.counts(labelled[others], labels[others], weights[others], n_categories)
        covered = np.zeros(n_categories, dtype=bool)
        covered[labels[others]] = True
        mass = spread_decisions(graph, labelled[others], labels[others], weights[others], columns) \
            if "spread" in learners and graph is not None else None
        probe = _LinearProbe(vectors[labelled[others]], labels[others], weights[others]) \
            if "linear" in learners and len(np.unique(labels[others])) > 1 else None
        for start in range(0, len(part), CHUNK):
            at = part[start:start + CHUNK]
            features[at] = _features(zs, rows[at], ids[at], nn_cats[at], sims[at], nn[at] >= 0, vote_w[at],
                                     words.log_probs(rows[at], ids[at], fitted), covered, parents)
            if mass is not None:
                features[at, :, SPREAD] = _log_of_candidates(mass[rows[at]].toarray(), columns, ids[at], SPREAD_FLOOR)
            if probe is not None:
                features[at, :, LINEAR] = probe.feature(vectors[rows[at]], ids[at])
    features[ids < 0] = 0.0
    return Candidates(ids, features)


def _features(zs: ZeroShot, rows: np.ndarray, ids: np.ndarray, nn_cats: np.ndarray, sims: np.ndarray,
              found: np.ndarray, vote_w: np.ndarray, words: np.ndarray, covered: np.ndarray,
              parents: np.ndarray | None) -> np.ndarray:
    """(len(rows), W, len(FEATURES)) for one chunk of rows (:data:`FEATURES`, in order)."""
    out = np.zeros((len(rows), ids.shape[1], len(FEATURES)))
    out[:, :, 0] = _zero_shot_feature(zs, rows, ids)
    match = (ids[:, :, None] == nn_cats[:, None, :]) & (ids[:, :, None] >= 0)   # (m, W, k)
    out[:, :, 1] = np.log(np.einsum("mwk,mk->mw", match, vote_w) + VOTE_FLOOR)
    best_any = np.where(found, sims, -np.inf).max(axis=1)
    best_c = np.where(match, sims[:, None, :], -np.inf).max(axis=2)
    out[:, :, 2] = np.where(np.isfinite(best_c), best_c - best_any[:, None], NO_NEIGHBOUR)
    out[:, :, 3] = words
    out[:, :, 4] = covered[np.clip(ids, 0, None)] & (ids >= 0)
    if parents is not None:  # the vote for the candidate's parent: decided siblings and cousins
        pc = parents[np.clip(ids, 0, None)]
        pn = np.where(nn_cats >= 0, parents[np.clip(nn_cats, 0, None)], -2)
        pmatch = (pc[:, :, None] == pn[:, None, :]) & (pc[:, :, None] >= 0)
        out[:, :, 5] = np.log(np.einsum("mwk,mk->mw", pmatch, vote_w) + VOTE_FLOOR)
    return out


def _fit_weights(features: np.ndarray, ids: np.ndarray, truth_pos: np.ndarray, sample_weight: np.ndarray
                 ) -> np.ndarray:
    """Maximum likelihood weights of the conditional logit (ridge ``L2``, at least :data:`RIDGE_DECISIONS`
    decisions' worth, towards :data:`DEFAULT_WEIGHTS`)."""
    rows = np.flatnonzero(truth_pos >= 0)
    F, valid = features[rows], ids[rows] >= 0
    t, sw = truth_pos[rows], sample_weight[rows]
    prior = FIT_PRIOR

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = np.where(valid, F @ w, -np.inf)
        z_max = z.max(axis=1, keepdims=True)
        e = np.where(valid, np.exp(z - z_max), 0.0)
        s = e.sum(axis=1, keepdims=True)
        p = e / s
        ll = (z[np.arange(len(t)), t] - z_max[:, 0] - np.log(s[:, 0]))
        grad_rows = F[np.arange(len(t)), t] - np.einsum("rw,rwf->rf", p, F)
        total = sw.sum()
        ridge = max(L2, RIDGE_DECISIONS / total)
        value = -(sw * ll).sum() / total + ridge * ((w - prior) ** 2).sum()
        grad = -(sw[:, None] * grad_rows).sum(axis=0) / total + 2 * ridge * (w - prior)
        return value, grad

    result = minimize(loss, prior.copy(), jac=True, method="L-BFGS-B")
    return result.x


def fit_feedback(vectors: np.ndarray, texts: list[str], zs: ZeroShot, decided: np.ndarray, weights: np.ndarray,
                 *, n_categories: int, parents: np.ndarray | None = None, audited: np.ndarray | None = None,
                 seed: int = 0, neighbours: tuple[np.ndarray, np.ndarray] | None = None) -> FeedbackModel:
    """Fit the mix on the decided products (``decided``: category per product, -1 undecided;
    ``weights``: each decision's weight; ``audited``: (n,) decided as a random check) out of fold,
    and build every product's candidates taught by all of them. With fewer than
    :data:`MIN_DECISIONS` decisions the zero-shot weights stand. ``neighbours``: each product's
    nearest others where the caller found them already (:func:`product_graph`)."""
    n = len(decided)
    labelled = np.flatnonzero(decided >= 0)
    labels = decided[labelled]
    lw = weights[labelled].astype(np.float64)
    words = _Words(texts)
    learners = LEARNERS if len(labelled) >= MIN_DECISIONS else ()  # too few: the zero-shot weights stand
    graph = product_graph(vectors, neighbours) if "spread" in learners else None
    everything = build_candidates(vectors, words, zs, np.arange(n), labelled, labels, lw, n_categories, parents,
                                  graph=graph, learners=learners)
    if len(labelled) < MIN_DECISIONS:
        return FeedbackModel(DEFAULT_WEIGHTS.copy(), everything, decided, 0,
                             notes=[f"{len(labelled)} decisions: too few to learn from (at least {MIN_DECISIONS})"])
    folds = np.random.default_rng(seed).permutation(len(labelled)) % FOLDS
    held = build_candidates(vectors, words, zs, labelled, labelled, labels, lw, n_categories, parents, folds=folds,
                            graph=graph, learners=learners)
    hit = held.ids == labels[:, None]
    truth_pos = np.where(hit.any(axis=1), hit.argmax(axis=1), -1)
    w = _fit_weights(held.features, held.ids, truth_pos, lw)
    probs = conditional_logit(held.features, held.ids, w)
    best = probs.argmax(axis=1)
    top = np.take_along_axis(held.ids, best[:, None], 1)[:, 0]
    model = FeedbackModel(w, everything, decided, len(labelled),
                          held_out_top1=float(np.average(top == labels, weights=lw)),
                          zero_shot_top1=float(np.average(zs.ids[labelled, 0] == labels, weights=lw)),
                          held_out_confidence=probs[np.arange(len(best)), best], held_out_correct=top == labels,
                          held_out_audit=(audited[labelled] if audited is not None
                                          else np.zeros(len(labelled), dtype=bool)) & (lw >= ROW_WEIGHT))
    model.calibration = calibrate(model)
    log.info("feedback: %d decisions, weights %s, held-out top-1 %.3f (zero-shot %.3f)", len(labelled),
             dict(zip(FEATURES, np.round(w, 3))), model.held_out_top1, model.zero_shot_top1)
    return model


# --- when a row may go unflagged ---------------------------------------------------------------

PLATT_PRIOR = 10.0
"""Weight of the prior that the mix's confidence is calibrated as it is (slope 1, shift 0), in
answers: a few dozen random checks move the calibration, a handful cannot swing it."""
MIN_CHECKS = 30
"""Random checks answered (held out) before any row is left unflagged: fewer cannot calibrate."""
MIN_ABOVE = 10
"""Random checks at or above a threshold, at least, that must be right ``--target-precision`` of
the time (measured, not estimated) before rows above it go unflagged ..."""
CHECKS_CONFIDENCE = 0.9
"""... with this confidence (:func:`~migrate.mapping.calibration.wilson_lower_bound`, as the labelled
path's threshold does), not by their share right alone: there are a few dozen checks. Measured:
BENCHMARKS.md, "Review in rounds" (``python bench/review_rounds.py``)."""


@dataclass
class Unflagging:
    """The confidence above which undecided rows come out unflagged, and the evidence for it."""

    threshold: float | None   # None: every undecided row stays flagged
    checks: int               # random checks the calibration was fitted on
    estimated_precision: float = float("nan")  # of the undecided rows above the threshold
    share: float = 0.0                          # of the undecided rows above the threshold
    measured: str = ""        # the random checks above the threshold: "k of m right"
    reason: str = ""


def platt_scaling(log_odds: np.ndarray, right: np.ndarray, prior: float | None = None) -> tuple[float, float]:
    """(slope, shift) of ``P(right) = sigmoid(slope * log_odds + shift)``, the maximum a posteriori
    fit with a Gaussian prior of weight ``prior`` (default :data:`PLATT_PRIOR`) around (1, 0): the
    confidence as it is.

    >>> slope, shift = platt_scaling(np.array([2.0] * 10), np.array([1.0] * 5 + [0.0] * 5))
    >>> bool(1 / (1 + np.exp(-(2 * slope + shift))) < 0.88)  # half of them right: pulled down from 0.88
    True
    """
    prior = PLATT_PRIOR if prior is None else prior

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = w[0] * log_odds + w[1]
        p = 1 / (1 + np.exp(-z))
        nll = np.logaddexp(0, z) - right * z
        grad = np.array([((p - right) * log_odds).sum(), (p - right).sum()])
        reg = w - np.array([1.0, 0.0])
        return float(nll.sum() + prior * (reg ** 2).sum()), grad + 2 * prior * reg

    result = minimize(loss, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B")
    return float(result.x[0]), float(result.x[1])


@dataclass
class Calibration:
    """``P(right) = sigmoid(slope * log-odds(confidence) + shift)`` and what it was fitted on."""

    slope: float = 1.0
    shift: float = 0.0
    source: str = "not calibrated: too few decisions"
    checks: int = 0   # random checks it was fitted on (0: not on random checks)

    def __call__(self, confidence: np.ndarray) -> np.ndarray:
        p = np.clip(np.asarray(confidence, dtype=np.float64), 1e-6, 1 - 1e-6)
        return 1 / (1 + np.exp(-(self.slope * np.log(p / (1 - p)) + self.shift)))


def calibrate(model: FeedbackModel) -> Calibration:
    """The calibration of the mix's confidence, fitted on the held-out decisions (:func:`platt_scaling`).

    The chosen questions are hard products: at a given confidence they are right less often than
    the open rows, so they can only give a conservative calibration. The random checks are an
    unbiased sample of the more confident open rows: from :data:`MIN_CHECKS` of them on, they alone
    calibrate. Fewer: every held-out decision (conservative); no fitted mix: none."""
    if model.held_out_confidence is None:
        return Calibration()
    conf, right = model.held_out_confidence, model.held_out_correct.astype(np.float64)
    checks = model.held_out_audit
    log_odds = lambda p: np.log(np.clip(p, 1e-6, 1 - 1e-6) / (1 - np.clip(p, 1e-6, 1 - 1e-6)))  # noqa: E731
    m = int(checks.sum())
    if m >= MIN_CHECKS and 0 < right[checks].sum() < m:
        return Calibration(*platt_scaling(log_odds(conf[checks]), right[checks]),
                           source=f"on the {m} random checks answered, each predicted without its own fold", checks=m)
    return Calibration(*platt_scaling(log_odds(conf), right),
                       source=f"on the {len(conf)} decisions, each predicted without its own fold; the questions "
                              f"chosen are harder than the rest, so it underestimates ({m} random checks answered, "
                              f"{MIN_CHECKS} calibrate on their own)")


def unflag_threshold(model: FeedbackModel, confidence: np.ndarray, open_rows: np.ndarray,
                     target_precision: float) -> Unflagging:
    """The lowest calibrated ``confidence`` (:attr:`FeedbackModel.calibration`) at which the open
    rows above it reach ``target_precision`` -- estimated, their mean calibrated confidence, and
    measured, the random checks above it (at least :data:`MIN_ABOVE`) right that often with
    :data:`CHECKS_CONFIDENCE`. Only a calibration on :data:`MIN_CHECKS` random checks can promise
    it (:func:`calibrate`); otherwise no threshold."""
    cal = model.calibration
    if cal is None or cal.checks < MIN_CHECKS:
        m = cal.checks if cal is not None else 0
        return Unflagging(None, m, reason=f"{int(model.held_out_audit.sum()) if model.held_out_audit is not None else 0}"
                                          f" random checks answered so far; {MIN_CHECKS} are needed to measure the "
                                          "precision of the confident rows")
    open_conf = confidence[open_rows]
    order = np.argsort(-open_conf, kind="stable")
    sorted_conf = open_conf[order]
    precision = np.cumsum(sorted_conf) / np.arange(1, len(order) + 1)
    last_of_tie = np.r_[sorted_conf[1:] != sorted_conf[:-1], True]
    ok = np.flatnonzero((precision >= target_precision) & last_of_tie)
    if not ok.size:
        return Unflagging(None, cal.checks, reason=f"no open rows reach precision {target_precision:g} under the "
                                                   f"calibration on {cal.checks} random checks")
    threshold = float(sorted_conf[int(ok[-1])])
    # and measured: the random checks at or above the threshold must be right that often themselves
    checks = model.held_out_audit
    check_conf = cal(model.held_out_confidence[checks])
    right = model.held_out_correct[checks]
    order_checks = np.argsort(-check_conf, kind="stable")
    count = np.arange(1, len(order_checks) + 1)
    seen = wilson_lower_bound(np.cumsum(right[order_checks]), count, CHECKS_CONFIDENCE)
    measured_ok = (seen >= target_precision) & (count >= MIN_ABOVE) & (check_conf[order_checks] >= threshold)
    if not measured_ok.any():
        return Unflagging(None, cal.checks, reason=f"the random checks the calibration would leave unflagged do "
                                                   f"not show precision {target_precision:g} with "
                                                   f"{CHECKS_CONFIDENCE:.0%} confidence (at least {MIN_ABOVE} of "
                                                   "them needed)")
    threshold = max(threshold, float(check_conf[order_checks][np.flatnonzero(measured_ok)[-1]]))
    above_open = sorted_conf >= threshold
    above = check_conf >= threshold
    return Unflagging(threshold, cal.checks, float(sorted_conf[above_open].mean()), float(above_open.mean()),
                      f"{int(right[above].sum())} of {int(above.sum())} random checks at or above it right")
