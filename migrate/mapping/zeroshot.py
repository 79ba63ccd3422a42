"""Mapping onto a taxonomy nobody has labelled: the source products teach each other (self-training).

With a taxonomy file only, each product has just its label scores (:mod:`migrate.mapping.labels`): how
close its text is to each category's names. Those are noisy, but they are noisy *independently*
per product, and a catalog holds many products of one kind. This module refines them
transductively, using nothing but the source products themselves:

1. **Prior**: ``p0`` = softmax of the label scores over each product's ``label_candidates`` best
   categories (temperature ``self_training_label_temperature``).
2. **Neighbours**: every product's ``self_training_neighbours`` nearest *other* source products
   (FAISS, the product never its own neighbour) vote with their current distributions, weighted
   ``exp((sim - best) / T)``; ``q ∝ p0 x vote`` (label propagation, one step per round).
3. **Word model** (``self_training_rounds`` rounds): the products whose top category is most
   certain -- the top ``self_training_seed_share`` of each category's products, so small
   categories get seeds too (TaxoClass's per-class "core" documents) -- train a multinomial naive
   Bayes model over the catalog's words. It learns which words the catalog uses for a category
   ("jeera" for spices) that no category name contains (TELEClass's class-indicative terms). A seed
   product's own words are taken out of its category's counts before it is scored (leave one
   out: a row never votes for itself). ``q ∝ p0 x exp(w x log P(words | c))``, then the
   neighbours' vote again.
4. **Most specific** (:func:`prefer_specific`): an inner category's probability goes to its
   descendants among the row's candidates, in proportion to theirs. Label scores pull a product
   to a generic inner node whose name it echoes ("deli" for "Deli Oven Roasted Turkey"); the
   evidence under it says which child. An inner node is suggested only when none of its
   descendants is a candidate, or when no child holds half of the evidence under it (the
   children cannot be told apart: back-off, flagged ``PARENT_BACKOFF``). It helps taxonomies that
   list their inner nodes and leaves flat ones untouched (BENCHMARKS.md, "zero-shot: what each
   label lever adds").

The word model reads the products' own texts. When the source's categories are appended to the
embedded text (``migrate``'s default), they stay out of the word model: there they lower top-1.
An explicit source-category prior -- each row's candidates under the mean distribution of the other
products of its source category, ``self_training_source_weight`` -- is off by default: it raises
first-level accuracy but lowers top-1.
Measured: BENCHMARKS.md, "zero-shot: self-training knobs and the source category" (``python bench/zeroshot_grid.py``).

Everything stays on the candidate categories, so memory grows with the products and the
candidates, not with the taxonomy (Google's 5,595 categories, Shopify's 10,595). The knobs'
defaults are first guesses, not tuned: changing any one of them moves top-1 by about a point at
most (the same section). The mapping benchmark: BENCHMARKS.md, "zero-shot: a catalog onto a
taxonomy nobody labelled" (``python bench/zeroshot_bench.py``).

>>> import numpy as np
>>> sims = np.array([[0.50, 0.45], [0.46, 0.50], [0.50, 0.40]], dtype=np.float32)
>>> ids = np.array([[0, 1], [1, 0], [0, 1]])
>>> vectors = np.eye(3, dtype=np.float32)
>>> probs, cats, _ = refine(sims, ids, vectors, ["tata tea", "tata tea gold", "amul butter"], 2)
>>> cats[:, 0].tolist()
[0, 0, 0]
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.sparse import csr_matrix

from migrate.core.index import build_index, search
from migrate.core.progress import Progress, stage_of
from migrate.mapping.scoring import ScoringParams, softmax_rows
from migrate.mapping.sparse_text import binary_word_matrix

log = logging.getLogger(__name__)

CHUNK = 1024
# A candidate no neighbour supports keeps this much vote. 0.1 rather than ~0: with few products per
# category neighbours are often of other kinds, and a near-zero floor lets them veto the right one;
# on large catalogs the two floors tie.
# Measured: BENCHMARKS.md, "zero-shot: self-training knobs and the source category", its floor rows.
VOTE_FLOOR = 0.1
WORD_SMOOTHING = 0.1  # naive Bayes additive smoothing (alpha); a word unseen in a category's seeds
# prefer_specific backs off to the ancestor when the child it handed down to holds under this share of the
# evidence among the ancestor's candidate descendants: no child has the majority, they cannot be told apart
# (a first guess, not tuned; what the back-off gives: BENCHMARKS.md, "zero-shot: what each label lever adds").
BACKOFF_SHARE = 0.5


def self_training_context(vectors: np.ndarray, rows: np.ndarray, *, size: int, neighbours: int,
                          seed: int = 0) -> np.ndarray:
    """Positions (sorted) of the products to self-train ``rows`` among, when only ``rows`` need
    new scores (a night's new and changed products; the others keep theirs): ``rows``, each one's
    ``neighbours`` nearest products, then a seeded random sample of the rest up to ``size`` -- the
    neighbour vote sees the rows' own neighbourhoods, the word model and the seeds a sample of the
    whole catalog. Every position when the catalog is not larger than ``size``."""
    n = len(vectors)
    if n <= size or len(rows) >= size:
        return np.arange(n)
    _, near = search(build_index(vectors), vectors[rows], min(neighbours + 1, n))
    chosen = np.union1d(rows, near[near >= 0])
    if len(chosen) < size:
        rest = np.setdiff1d(np.arange(n), chosen, assume_unique=True)
        fill = np.random.default_rng(seed).choice(rest, size=min(size - len(chosen), len(rest)), replace=False)
        chosen = np.union1d(chosen, fill)
    return chosen


@dataclass
class SelfTrainingReport:
    """What the refinement did, for the Summary and the confidence features."""

    rounds: int
    seeds: int
    words: int
    prior_top: np.ndarray      # (n,) the label prior's top category
    words_top: np.ndarray      # (n,) the word model's top category (-1 without it)
    neighbours_top: np.ndarray  # (n,) the neighbours' top category
    backed_off: np.ndarray | None = None  # (n,) the suggestion is the ancestor prefer_specific backed off to
    neighbours: tuple[np.ndarray, np.ndarray] | None = None
    """(similarities, positions) of each product's nearest other products, -1 padded, when asked
    for (``refine(..., keep_neighbours=True)``): the review rounds' graph reuses them."""

    def agreement(self, chosen: np.ndarray) -> np.ndarray:
        """(n,) how many of prior, word model and neighbours name ``chosen`` (0-3)."""
        return ((self.prior_top == chosen).astype(int) + (self.words_top == chosen) +
                (self.neighbours_top == chosen))


def _normalise(log_values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    return softmax_rows(log_values, 1.0, valid)


def neighbour_vote(probs: np.ndarray, ids: np.ndarray, nn_sims: np.ndarray, nn_ids: np.ndarray,
                   n_categories: int, temperature: float) -> np.ndarray:
    """(n, K): the neighbours' similarity-weighted probability of each row's candidate categories."""
    n = len(ids)
    out = np.zeros(ids.shape)
    weights = softmax_rows(nn_sims.astype(np.float64), temperature, nn_ids >= 0)
    for start in range(0, n, CHUNK):
        stop = min(start + CHUNK, n)
        nbr = nn_ids[start:stop]                            # (m, k) neighbour rows
        cats = ids[np.clip(nbr, 0, None)]                   # (m, k, K) their candidate categories
        mass = weights[start:stop, :, None] * probs[np.clip(nbr, 0, None)]
        keep = (nbr >= 0)[:, :, None] & (cats >= 0)
        row = np.broadcast_to(np.arange(stop - start)[:, None, None], cats.shape)
        # per row and category, the neighbours' mass summed in order: np.add.at's sums, from np.bincount
        # in one pass (np.add.at was the night's hot spot)
        dense = np.bincount(row[keep] * n_categories + cats[keep], weights=mass[keep],
                            minlength=(stop - start) * n_categories).reshape(stop - start, n_categories)
        out[start:stop] = np.take_along_axis(dense, np.clip(ids[start:stop], 0, None), axis=1)
    return np.where(ids >= 0, out, 0.0)


class WordModel:
    """Multinomial naive Bayes over binary word counts, fitted on seed rows, scored leave-one-out."""

    def __init__(self, texts: list[str]) -> None:
        self.matrix = binary_word_matrix(texts)  # None when no text has a word of two letters
        self.lengths = np.asarray(self.matrix.sum(axis=1)).ravel() if self.matrix is not None else None

    @property
    def words(self) -> int:
        return 0 if self.matrix is None else self.matrix.shape[1]

    def log_likelihoods(self, ids: np.ndarray, seeds: np.ndarray, labels: np.ndarray, n_categories: int,
                        alpha: float = WORD_SMOOTHING) -> np.ndarray:
        """(n, K) log P(words of row | candidate category), up to a per-row constant; a seed row's
        own words are left out of its own category's counts."""
        X = self.matrix
        n, vocab = X.shape
        seed_rows = np.flatnonzero(seeds)
        assign = csr_matrix((np.ones(len(seed_rows)), (labels[seed_rows], seed_rows)), shape=(n_categories, n))
        counts = (assign @ X).tocsr()  # (C, V) word counts of each category's seeds
        totals = np.asarray(counts.sum(axis=1)).ravel()
        log_counts = counts.copy()
        log_counts.data = np.log1p(log_counts.data / alpha)
        denom = np.log(totals + alpha * vocab)
        out = np.zeros(ids.shape)
        safe = np.clip(ids, 0, None)
        for start in range(0, n, CHUNK):
            rows = slice(start, min(start + CHUNK, n))
            dense = (X[rows] @ log_counts.T).toarray()
            ll = dense - self.lengths[rows, None] * denom[None, :]
            out[rows] = np.take_along_axis(ll, safe[rows], axis=1)
        # leave one out: a seed row against its own category, without its own words
        seed_x = X[seed_rows].tocoo()
        own_cat = labels[seed_rows]
        pair_cats = own_cat[seed_x.row]
        kept = np.asarray(counts[pair_cats, seed_x.col]).ravel() - seed_x.data
        own_ll = np.bincount(seed_x.row, weights=seed_x.data * np.log1p(np.maximum(kept, 0.0) / alpha),
                             minlength=len(seed_rows))
        lengths = self.lengths[seed_rows]
        own_ll -= lengths * np.log(np.maximum(totals[own_cat] - lengths, 0.0) + alpha * vocab)
        hit = ids[seed_rows] == own_cat[:, None]
        r, col = np.nonzero(hit)
        out[seed_rows[r], col] = own_ll[r]
        return np.where(ids >= 0, out, 0.0)


def choose_seeds(probs: np.ndarray, ids: np.ndarray, share: float) -> tuple[np.ndarray, np.ndarray]:
    """(top category per row, seed mask): the most certain ``share`` of each category's rows."""
    top = ids[:, 0]
    certainty = probs[:, 0]
    seeds = np.zeros(len(top), dtype=bool)
    order = np.lexsort((-certainty, top))
    sorted_top = top[order]
    starts = np.flatnonzero(np.r_[True, sorted_top[1:] != sorted_top[:-1]])
    ends = np.r_[starts[1:], len(order)]
    for s, e in zip(starts, ends):
        if sorted_top[s] < 0:
            continue
        seeds[order[s:s + max(1, int(np.ceil(share * (e - s))))]] = True
    return top, seeds


def _sorted(probs: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-probs, axis=1, kind="stable")
    return np.take_along_axis(probs, order, 1), np.take_along_axis(ids, order, 1)


def source_category_prior(probs: np.ndarray, ids: np.ndarray, groups: np.ndarray, n_categories: int
                          ) -> np.ndarray:
    """(n, K): each row's candidates under the distribution of the *other* products of its source
    category (the mean of their current probabilities, plus one uniform pseudo-product so a
    category none of them chose keeps some mass). Rows without a source category (-1) get 1."""
    out = np.ones(ids.shape)
    has = groups >= 0
    if not has.any():
        return out
    codes, group = np.unique(groups[has], return_inverse=True)
    rows = np.flatnonzero(has)
    sums = np.zeros((len(codes), n_categories))
    valid = ids[rows] >= 0
    g = np.broadcast_to(group[:, None], ids[rows].shape)
    np.add.at(sums, (g[valid], ids[rows][valid]), probs[rows][valid])
    counts = np.bincount(group, minlength=len(codes)).astype(float)
    safe = np.clip(ids[rows], 0, None)
    own = np.where(valid, probs[rows], 0.0)
    others = np.take_along_axis(sums[group], safe, 1) - own
    out[rows] = (others + 1.0 / n_categories) / counts[group][:, None]
    return np.where(ids >= 0, out, 0.0)


def listed_ancestors(categories: list[str], separator: str = " > ") -> np.ndarray:
    """(C, D) each category's ancestors that are categories themselves, nearest first, -1 padded."""
    index = {c: i for i, c in enumerate(categories)}
    chains = []
    for category in categories:
        levels = category.split(separator)
        prefixes = (separator.join(levels[:k]) for k in range(len(levels) - 1, 0, -1))
        chains.append([index[a] for a in prefixes if a in index])
    out = np.full((len(categories), max([1, *map(len, chains)])), -1, dtype=np.int64)
    for i, chain in enumerate(chains):
        out[i, :len(chain)] = chain
    return out


def prefer_specific(probs: np.ndarray, ids: np.ndarray, ancestors: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's probability of an inner category handed down to its descendants among the row's
    candidates, in proportion to theirs, shallowest first; re-sorted. An inner node keeps its mass
    only when none of its descendants is a candidate, so the suggestion is the most specific
    category the evidence points into ("deli > lunch meat", not "deli"). ``ancestors``:
    :func:`listed_ancestors` of the taxonomy.

    Back-off: where the evidence named an ancestor more than the child it handed down to, and that
    child holds under :data:`BACKOFF_SHARE` of the evidence among the ancestor's candidate
    descendants (the children cannot be told apart), the row keeps its distribution as it was, so
    the broader category is suggested and its children follow as alternatives. Returns
    (probabilities, ids, backed_off)."""
    backed_off = np.zeros(len(ids), dtype=bool)
    if ancestors.shape[1] == 0 or (ancestors < 0).all():
        return probs, ids, backed_off
    out = np.where(ids >= 0, probs, 0.0).astype(np.float64)
    valid = ids >= 0
    safe = np.clip(ids, 0, None)
    depth = (ancestors >= 0).sum(axis=1)
    for start in range(0, len(ids), CHUNK):
        rows = slice(start, min(start + CHUNK, len(ids)))
        v, before = valid[rows], out[rows]
        chains = np.where(v[:, :, None], ancestors[safe[rows]], -1)                        # (m, K, D)
        below = ((chains[:, :, :, None] == ids[rows][:, None, None, :]).any(axis=2)
                 & v[:, None, :] & v[:, :, None]).astype(np.float64)                     # [r, j, a]: a above j
        row_depth = np.where(v, depth[safe[rows]], -1)
        q = before
        for level in range(int(row_depth.max()) + 1 if v.any() else 0):
            descendants = np.einsum("rja,rj->ra", below, q)                              # mass under each candidate
            give = np.where((row_depth == level) & (descendants > 0), q, 0.0)
            share = np.divide(give, descendants, out=np.zeros_like(give), where=give > 0)
            q = q - give + q * np.einsum("rja,ra->rj", below, share)
        m = np.arange(len(q))
        child = q.argmax(axis=1)
        above = below[m, child] * before                      # own evidence of the child's ancestors
        parent = above.argmax(axis=1)
        siblings = np.einsum("rj,rj->r", below[m, :, parent], before)  # evidence under that ancestor
        child_share = np.divide(before[m, child], siblings, out=np.ones(len(m)), where=siblings > 0)
        back = (above[m, parent] > before[m, child]) & (child_share < BACKOFF_SHARE)
        q[back] = before[back]
        backed_off[rows] = back & (below[m, child, before.argmax(axis=1)] > 0)
        out[rows] = q
    probs_sorted, ids_sorted = _sorted(out, ids)
    return probs_sorted, np.where(probs_sorted > 0, ids_sorted, -1), backed_off


def refine(label_sims: np.ndarray, label_ids: np.ndarray, vectors: np.ndarray, texts: list[str],
           n_categories: int, params: ScoringParams | None = None, groups: np.ndarray | None = None,
           ancestors: np.ndarray | None = None, *, progress: "bool | Progress" = False, keep: np.ndarray | None = None,
           keep_neighbours: bool = False) -> tuple[np.ndarray, np.ndarray, SelfTrainingReport]:
    """Self-trained (probabilities, category ids) per product over its label candidates, best first.

    ``label_sims``/``label_ids``: each product's candidate categories and label scores
    (:meth:`CategoryLabels.search`); ``vectors``: the products' unit embeddings; ``texts`` their
    texts (for the word model); ``ancestors`` (:func:`listed_ancestors`): hand inner categories'
    probability down to their candidate descendants at the end (:func:`prefer_specific`).
    ``progress``: the run's display: stages "finding neighbours" (products) and "self-training"
    (rounds), minutes each for a million products.
    ``keep``: positions of the products whose results are wanted (a night's new products among
    their context): every product teaches, only these are finished and returned, in this order.
    ``keep_neighbours`` (without ``keep``): the report keeps the products' neighbours.
    """
    params = params or ScoringParams()
    n = len(label_ids)
    valid = label_ids >= 0
    prior_log = np.log(np.maximum(softmax_rows(label_sims.astype(np.float64),
                                                params.self_training_label_temperature, valid), 1e-300))
    prior_log = np.where(valid, prior_log, -np.inf)
    p0 = _normalise(prior_log, valid)
    prior_top = np.take_along_axis(label_ids, p0.argmax(axis=1)[:, None], 1)[:, 0]
    empty = np.full(n, -1, dtype=np.int64)
    if n < 3 or params.self_training_rounds <= 0:
        if keep is not None:
            p0, label_ids, prior_top, empty = p0[keep], label_ids[keep], prior_top[keep], empty[keep]
        probs, ids = _sorted(p0, label_ids)
        return probs, ids, SelfTrainingReport(0, 0, 0, prior_top, empty, prior_top)
    # the (n, K) float64 arrays below take 400 MB each per million products: each is dropped as
    # soon as it is spent (a million products onto Google's 5,595 categories peaked at 9.2 GB before)
    del p0
    k = min(params.self_training_neighbours, n - 1)
    with stage_of(progress, "finding neighbours", total=n, unit="products") as bar:
        nn_sims, nn_ids = search(build_index(vectors), vectors, k + 1, progress=progress, desc="neighbours")
        bar.complete()
    self_hit = nn_ids == np.arange(n)[:, None]
    order = np.argsort(self_hit, axis=1, kind="stable")[:, :k]  # drop the product itself
    nn_ids = np.take_along_axis(np.where(self_hit, -1, nn_ids), order, 1)
    nn_sims = np.take_along_axis(nn_sims, order, 1)
    temperature = params.vote_temperature

    def with_neighbours(log_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q = _normalise(log_probs, valid)
        vote = neighbour_vote(q, label_ids, nn_sims, nn_ids, n_categories, temperature)
        return _normalise(np.log(np.maximum(q, 1e-300)) + np.log(vote + VOTE_FLOOR), valid), vote

    with stage_of(progress, "self-training", total=params.self_training_rounds, unit="rounds") as bar:
        q, vote = with_neighbours(prior_log)
        words = WordModel(texts)
        words_top = empty
        seeds = np.zeros(n, dtype=bool)
        rounds = params.self_training_rounds if words.matrix is not None else 0
        bar.set_total(rounds)  # none without words to learn
        for _ in range(rounds):
            sorted_q, sorted_ids = _sorted(q, label_ids)
            labels, seeds = choose_seeds(sorted_q, sorted_ids, params.self_training_seed_share)
            del sorted_q, sorted_ids
            ll = words.log_likelihoods(label_ids, seeds, labels, n_categories)
            words_top = np.take_along_axis(label_ids, np.where(valid, ll, -np.inf).argmax(axis=1)[:, None], 1)[:, 0]
            ll *= params.self_training_word_weight
            log_q = np.add(prior_log, ll, out=ll)
            if groups is not None and params.self_training_source_weight > 0:
                shared = source_category_prior(q, label_ids, groups, n_categories)
                log_q += params.self_training_source_weight * np.log(np.maximum(shared, 1e-300))
                del shared
            del q, vote
            q, vote = with_neighbours(log_q)
            del log_q, ll
            bar.update(1)
    neighbours_top = np.take_along_axis(label_ids, np.where(valid, vote, -1).argmax(axis=1)[:, None], 1)[:, 0]
    neighbours = (nn_sims, nn_ids) if keep_neighbours and keep is None else None
    del vote, prior_log, nn_sims, nn_ids
    if keep is not None:  # the rest only taught: finish the products asked for
        q, label_ids, valid = q[keep], label_ids[keep], valid[keep]
        prior_top, words_top, neighbours_top = prior_top[keep], words_top[keep], neighbours_top[keep]
    q[~valid] = 0.0
    probs, ids = _sorted(q, label_ids)
    del q
    ids = np.where(probs > 0, ids, -1)
    backed_off = None
    if ancestors is not None:
        probs, ids, backed_off = prefer_specific(probs, ids, ancestors)
    log.info("self-training: %d rounds, %d seed products, %d words", rounds, int(seeds.sum()), words.words)
    return probs, ids, SelfTrainingReport(rounds, int(seeds.sum()), words.words, prior_top, words_top,
                                          neighbours_top, backed_off, neighbours)


def confidence_features(probs: np.ndarray, ids: np.ndarray, report: SelfTrainingReport, label_sims: np.ndarray,
                        label_ids: np.ndarray) -> np.ndarray:
    """Inputs of the proxy calibration, one row per product: top probability, log-odds margin of
    the top two (scaled to [0, 1]; probabilities saturate near 1, log-odds do not), agreement of
    prior, word model and neighbours (0-1), the label cosine of the chosen category, and the label
    scores' own top-1 minus top-2."""
    top = ids[:, 0]
    second = probs[:, 1] if probs.shape[1] > 1 else np.zeros(len(probs))
    log_margin = np.clip(np.log(np.maximum(probs[:, 0], 1e-300)) - np.log(np.maximum(second, 1e-300)), 0, 50) / 50
    hit = (label_ids == top[:, None]) & (label_ids >= 0)
    chosen_label = np.where(hit.any(axis=1), np.where(hit, label_sims, -np.inf).max(axis=1), 0.0)
    label_margin = label_sims[:, 0] - (label_sims[:, 1] if label_sims.shape[1] > 1 else 0.0)
    return np.column_stack([probs[:, 0], log_margin, report.agreement(top) / 3.0, chosen_label,
                            label_margin]).astype(np.float64)


# Logistic calibration of :func:`confidence_features` (coefficients, intercept), fitted on the
# public proxy tasks -- every BigBasket product onto its two- and three-level paths, Instacart onto
# its aisles, 64,312 products, labels with migrate's templates and centering, the most specific
# category with back-off -- by ``python bench/zeroshot_calibration.py``, which also measures how far
# off it is on a set it was not fitted on.
# Measured: BENCHMARKS.md, "zero-shot confidence: calibration fitted on proxy tasks, each set left out once".
CALIBRATION: tuple[tuple[float, ...], float] = ((1.7017, 2.6944, 0.3533, 0.4339, 4.7307), -2.9425)


def proxy_confidence(features: np.ndarray) -> np.ndarray:
    """Estimated probability that the chosen category is right (:data:`CALIBRATION`)."""
    coefficients, intercept = CALIBRATION
    return 1.0 / (1.0 + np.exp(-(features @ np.asarray(coefficients) + intercept)))
