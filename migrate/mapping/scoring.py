"""Per-category scores for each product from its nearest target products and the category labels.

For a product, category c scores

    score(c) = (1 - w) * vote(c) + w * label(c)
    vote(c)  = (1 - x) * ((1 - l) * dense_vote(c) + l * lexical_vote(c)) + x * classifier(c)

where ``dense_vote`` is the similarity-weighted vote of the ``neighbours`` nearest target products under
the encoder (weights ``exp((sim - best_sim) / vote_temperature)``, normalised to sum to 1),
``lexical_vote`` the same over the ``neighbours`` nearest by word TF-IDF cosine (``lexical_temperature``;
weight ``l`` = ``lexical_weight``), ``classifier`` the softmax vote of a linear text classifier
trained on the target catalog (:mod:`migrate.mapping.classifier`; weight ``x`` = ``classifier_weight``,
temperature ``classifier_temperature``) and ``label`` is a softmax over the label scores of
:mod:`migrate.mapping.labels` (the product against the category's own name and, with weight
``label_ancestor_weight``, its ancestors' names; temperature ``label_temperature``, over the
``label_candidates`` best labels). With no target products (a taxonomy file only) the score
is the label part alone. Scores lie in [0, 1] and sum to at
most 1 per product, so ``margin = top1 - top2`` is comparable across runs.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

CHUNK = 2048


@dataclass(frozen=True)
class ScoringParams:
    """Knobs of :func:`score_categories`; the labelled-catalog defaults are chosen on the BigBasket
    benchmark: BENCHMARKS.md, "migrate: BigBasket 80/20, base model" (``python bench/migrate_bench.py``)
    and "tune: classifier vote weight x temperature (leave-one-out on the target)" (``python
    bench/tune_scoring.py``); the taxonomy-only ones: :mod:`migrate.mapping.zeroshot`."""

    neighbours: int = 20  # nearest target products that vote (--neighbours)
    vote_temperature: float = 0.05
    lexical_weight: float = 0.5
    lexical_temperature: float = 0.1
    classifier_weight: float = 0.5
    classifier_temperature: float = 0.3
    label_weight: float = 0.1
    label_temperature: float = 0.05
    label_ancestor_weight: float = 0.25
    label_candidates: int = 50
    top_n: int = 3  # categories kept per product, the top one plus alternatives (--top-n)
    # taxonomy only (no labelled target products): transductive self-training, migrate/mapping/zeroshot.py
    self_training_rounds: int = 3
    self_training_seed_share: float = 0.5
    self_training_neighbours: int = 10
    self_training_label_temperature: float = 0.03
    self_training_word_weight: float = 0.5
    self_training_source_weight: float = 0.0
    # taxonomy only: how category names are embedded and de-biased (migrate/mapping/labels.py's docstring)
    zero_shot_label_templates: tuple[str, ...] = ("{}", "{} products", "category: {}")
    zero_shot_label_centering: float = 0.5

    RENAMED = {"k": "neighbours"}
    """Old field names that remembered settings (a state folder's meta.json) may still hold: new name."""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ScoringParams":
        """Scoring knobs remembered as plain data (:func:`dataclasses.asdict`, JSON): old names of
        :data:`RENAMED` are read under their new ones (the new name wins when both are given, as
        when a night's ``--neighbours`` meets a remembered ``k``), a list of templates becomes a tuple.

        >>> ScoringParams.from_dict({"k": 30, "zero_shot_label_templates": ["{}"]}).neighbours
        30
        """
        values = dict(data)
        for old, new in cls.RENAMED.items():
            if old in values:
                values.setdefault(new, values.pop(old))
        if "zero_shot_label_templates" in values:  # JSON gave a list
            values["zero_shot_label_templates"] = tuple(values["zero_shot_label_templates"])
        return cls(**values)


@dataclass
class CategoryScores:
    """Top categories per product (indices into the category list, -1 where fewer exist)."""

    top_ids: np.ndarray      # (n, top_n) int
    top_scores: np.ndarray   # (n, top_n) float
    nearest_sim: np.ndarray  # (n,) cosine of the nearest target product (nan without products)
    nearest_idx: np.ndarray  # (n,) row of the nearest target product (-1 without products)
    label_sim: np.ndarray    # (n,) cosine between the product and the top category's label
    lexical_sim: np.ndarray | None = None  # (n,) TF-IDF cosine of the lexically nearest target product
    classifier_prob: np.ndarray | None = None  # (n,) the classifier's probability of the top category
    backed_off: np.ndarray | None = None  # (n,) taxonomy only: a broader category suggested (PARENT_BACKOFF)

    @property
    def margin(self) -> np.ndarray:
        second = np.where(self.top_ids[:, 1] >= 0, self.top_scores[:, 1], 0.0) if self.top_ids.shape[1] > 1 else 0.0
        return self.top_scores[:, 0] - second

    def features(self) -> np.ndarray:
        """The inputs of the confidence calibrator: top score, margin, nearest and label similarity
        (and the lexical nearest similarity and the classifier's probability when they voted)."""
        nearest = np.nan_to_num(self.nearest_sim, nan=0.0)
        columns = [self.top_scores[:, 0], self.margin, nearest, self.label_sim]
        if self.lexical_sim is not None:
            columns.append(self.lexical_sim)
        if self.classifier_prob is not None:
            columns.append(self.classifier_prob)
        return np.column_stack(columns).astype(np.float64)


def concat_scores(parts: list[CategoryScores]) -> CategoryScores:
    """The scores of consecutive chunks of products as one (fields that are None stay None)."""
    if len(parts) == 1:
        return parts[0]
    joined = {}
    for f in fields(CategoryScores):
        values = [getattr(p, f.name) for p in parts]
        joined[f.name] = None if any(v is None for v in values) else np.concatenate(values)
    return CategoryScores(**joined)


def top_columns(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(column indices, values) of the ``k`` largest entries of each row, largest first.

    >>> ids, vals = top_columns(np.array([[0.1, 0.7, 0.2]]), 2)
    >>> ids.tolist(), vals.tolist()
    ([[1, 2]], [[0.7, 0.2]])
    """
    k = min(k, values.shape[1])
    part = np.argpartition(-values, k - 1, axis=1)[:, :k] if k < values.shape[1] else \
        np.tile(np.arange(values.shape[1]), (len(values), 1))
    part_values = np.take_along_axis(values, part, axis=1)
    order = np.argsort(-part_values, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(part_values, order, axis=1)


def softmax_rows(values: np.ndarray, temperature: float, valid: np.ndarray) -> np.ndarray:
    shifted = np.where(valid, values, -np.inf)
    best = shifted.max(axis=1, keepdims=True)
    best = np.where(np.isfinite(best), best, 0.0)
    weights = np.where(valid, np.exp((values - best) / temperature), 0.0)
    total = weights.sum(axis=1, keepdims=True)
    return np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)


def score_categories(n_categories: int, params: ScoringParams, *,
                     nn_sims: np.ndarray | None, nn_categories: np.ndarray | None,
                     label_sims: np.ndarray, label_ids: np.ndarray,
                     nn_ids: np.ndarray | None = None, lex_sims: np.ndarray | None = None,
                     lex_categories: np.ndarray | None = None, clf_probs: np.ndarray | None = None,
                     clf_categories: np.ndarray | None = None) -> CategoryScores:
    """Combine neighbour votes and label similarity into the top ``params.top_n`` categories.

    ``nn_categories`` holds, for each neighbour, the category index of that target product
    (-1 for padding); ``label_ids`` the category index of each label candidate (-1 padding);
    ``lex_sims``/``lex_categories`` the same for the lexical neighbours, ``clf_probs``/``clf_categories``
    the classifier's most probable categories (both optional).
    """
    n = len(label_sims)
    top_n = min(params.top_n, n_categories)
    top_ids = np.full((n, params.top_n), -1, dtype=np.int64)
    top_scores = np.zeros((n, params.top_n), dtype=np.float64)
    has_products = nn_sims is not None and nn_sims.size > 0
    has_lexical = has_products and lex_sims is not None and params.lexical_weight > 0
    label_weight = params.label_weight if has_products else 1.0
    has_classifier = has_products and clf_probs is not None and params.classifier_weight > 0
    neighbour_share = (1.0 - params.classifier_weight) if has_classifier else 1.0
    dense_share = (1.0 - params.lexical_weight) if has_lexical else 1.0
    classifier_prob = np.zeros(n) if has_classifier else None
    nearest_sim = np.full(n, np.nan)
    nearest_idx = np.full(n, -1, dtype=np.int64)
    label_sim = np.zeros(n)
    for start in range(0, n, CHUNK):
        rows = slice(start, min(start + CHUNK, n))
        m = rows.stop - rows.start
        dense = np.zeros((m, n_categories), dtype=np.float64)
        r_index = np.arange(m)[:, None]
        lvalid = label_ids[rows] >= 0
        lprob = softmax_rows(label_sims[rows].astype(np.float64), params.label_temperature, lvalid)
        np.add.at(dense, (np.broadcast_to(r_index, lprob.shape)[lvalid], label_ids[rows][lvalid]),
                  label_weight * lprob[lvalid])
        if has_products:
            cats = nn_categories[rows]
            valid = cats >= 0
            vote = softmax_rows(nn_sims[rows].astype(np.float64), params.vote_temperature, valid)
            share = np.full((m, 1), dense_share)
            if has_lexical:
                lcats = lex_categories[rows]
                xvalid = lcats >= 0
                lvote = softmax_rows(lex_sims[rows].astype(np.float64), params.lexical_temperature, xvalid)
                share[~xvalid.any(axis=1)] = 1.0  # sharing no word with any target: the encoder votes alone
                np.add.at(dense, (np.broadcast_to(r_index, lvote.shape)[xvalid], lcats[xvalid]),
                          (1.0 - label_weight) * neighbour_share * params.lexical_weight * lvote[xvalid])
            np.add.at(dense, (np.broadcast_to(r_index, vote.shape)[valid], cats[valid]),
                      ((1.0 - label_weight) * neighbour_share * share * vote)[valid])
            if has_classifier:
                ccats = clf_categories[rows]
                cvalid = ccats >= 0
                np.add.at(dense, (np.broadcast_to(r_index, ccats.shape)[cvalid], ccats[cvalid]),
                          (1.0 - label_weight) * params.classifier_weight * clf_probs[rows][cvalid])
            first = np.where(valid[:, 0], nn_sims[rows][:, 0], np.nan)
            nearest_sim[rows] = first
            if nn_ids is not None:
                nearest_idx[rows] = np.where(valid[:, 0], nn_ids[rows][:, 0], -1)
        ids, scores = top_columns(dense, top_n)
        ids = np.where(scores > 0, ids, -1)
        top_ids[rows, :top_n] = ids
        top_scores[rows, :top_n] = scores
        # cosine between product and the label of its top category (0 if that label is not a candidate)
        match = (label_ids[rows] == ids[:, :1]) & lvalid
        label_sim[rows] = np.where(match.any(axis=1), np.where(match, label_sims[rows], -np.inf).max(axis=1), 0.0)
        if has_classifier:
            hit = clf_categories[rows] == ids[:, :1]
            classifier_prob[rows] = np.where(hit, clf_probs[rows], 0.0).sum(axis=1)
    lexical_sim = None
    if has_lexical:
        lexical_sim = np.where(lex_categories[:, 0] >= 0, lex_sims[:, 0], 0.0).astype(np.float64)
    return CategoryScores(top_ids, top_scores, nearest_sim, nearest_idx, label_sim, lexical_sim, classifier_prob)
