"""Mapping onto a taxonomy nobody labelled: label scores refined by self-training over the source
products (:mod:`migrate.mapping.zeroshot`), and, with a reviewer's decisions, the mix fitted on them
(:mod:`migrate.mapping.feedback`)."""

from __future__ import annotations

import numpy as np
import polars as pl

from migrate.core.catalog import Catalog
from migrate.core.progress import Progress, stage_of
from migrate.mapping.calibration import ConfidenceCalibrator
from migrate.mapping.feedback import Feedback, FeedbackModel, ZeroShot, fit_feedback
from migrate.mapping.inputs import Targets, rows_of
from migrate.mapping.labels import CategoryLabels
from migrate.mapping.scoring import CategoryScores, ScoringParams, score_categories
from migrate.mapping.tables import scored_frame
from migrate.mapping.zeroshot import confidence_features, listed_ancestors, proxy_confidence, refine

SELF_TRAINING_CONTEXT = 5000
"""Onto a taxonomy, a night's new and changed products self-train among their neighbours and a
sample of the catalog up to this many products (:func:`~migrate.mapping.zeroshot.self_training_context`)
instead of the whole catalog: their top-1 stays close to self-training over everything, for a
fraction of the scoring time (a smaller context saves little more and agrees less with it).
Measured: BENCHMARKS.md, "zero-shot: a night's new products self-trained among a context instead of the
whole catalog" (``python bench/zeroshot_incremental.py --contexts 5000 --share 0.05``)."""


def score_taxonomy(source: Catalog, targets: Targets, src_vec: np.ndarray, labels: CategoryLabels,
                    calibrator: ConfidenceCalibrator, params: ScoringParams, progress: "bool | Progress", *,
                    keep: np.ndarray | None = None, feedback: Feedback | None = None,
                    seed: int = 0) -> tuple[pl.DataFrame, FeedbackModel | None]:
    """The scored frame of every source product onto a taxonomy (label scores, refined by
    self-training unless it is switched off); ``keep``: of the products at these positions
    alone (the others are a night's context: they self-train with them, their scores are kept);
    ``feedback``: decisions to learn from (:mod:`migrate.mapping.feedback`), and the fitted mix;
    ``progress``: the run's display (its stages: scoring, finding neighbours, self-training)."""
    learned = None
    if params.self_training_rounds > 0:
        source_groups = None
        if source.has_categories:
            names = {c: i for i, c in enumerate(dict.fromkeys(c for c in source.categories if c))}
            source_groups = np.array([names.get(c, -1) for c in source.categories], dtype=np.int64)
        scores, features, learned = self_trained_scores(
            src_vec, labels, source.texts, targets.categories, params, source_groups, progress=progress,
            keep=keep, feedback=feedback, ids=source.ids, seed=seed)
        if learned is None or not learned.fitted_on:
            confidence = proxy_confidence(features)
            if learned is not None:
                confidence[learned.decided >= 0] = 1.0
        else:  # the mix's probability, calibrated on the held-out decisions; a decision is certain
            confidence = (learned.calibration(scores.top_scores[:, 0]) if learned.calibration is not None
                          else scores.top_scores[:, 0].copy())
            confidence[learned.decided >= 0] = 1.0
    else:
        src_vec = src_vec if keep is None else src_vec[keep]
        with stage_of(progress, "scoring", total=len(src_vec), unit="products") as bar:
            label_sims, label_ids = labels.search(src_vec, params.label_candidates)
            bar.update(len(src_vec))
        scores = score_categories(len(targets.categories), params, nn_sims=None, nn_categories=None,
                                  label_sims=label_sims, label_ids=label_ids)
        confidence = calibrator.predict(scores.features())
    if labels.bias is not None:  # NO_MATCH reads the label score before centering
        scores.label_sim = labels.uncentered(scores.label_sim, scores.top_ids[:, 0])
    frame = scored_frame(source if keep is None else rows_of(source, keep), targets, scores, confidence, [])
    return frame, learned


def self_trained_scores(queries: np.ndarray, labels: CategoryLabels, texts: list[str], categories: list[str],
                  params, groups: np.ndarray | None = None, *, progress: "bool | Progress" = False,
                  keep: np.ndarray | None = None, feedback: Feedback | None = None,
                  ids: list[str] | None = None, seed: int = 0
                  ) -> tuple[CategoryScores, np.ndarray, FeedbackModel | None]:
    """Label scores refined by self-training over the source products (:mod:`migrate.mapping.zeroshot`;
    ``texts``: the products' own texts, for its word model; ``groups``: source category per row):
    the scores, the confidence features and (with ``feedback``: decisions on the products
    ``ids``) the mix fitted on them (:mod:`migrate.mapping.feedback`). The suggestion is the most
    specific category the evidence points into, or a broader one where its children cannot be
    told apart (:func:`migrate.mapping.zeroshot.prefer_specific`); ``progress``: the display its
    stages report to (scoring, then :func:`~migrate.mapping.zeroshot.refine`'s, then learning from
    the decisions)."""
    with stage_of(progress, "scoring", total=len(queries), unit="products") as bar:
        label_sims, label_ids = labels.search(queries, params.label_candidates, progress=progress)
        bar.complete()
    ancestors = listed_ancestors(categories)
    probs, cats, report = refine(label_sims, label_ids, queries, texts, len(categories), params, groups,
                                 ancestors, progress=progress, keep=keep, keep_neighbours=feedback is not None)
    if keep is not None:
        label_sims, label_ids = label_sims[keep], label_ids[keep]
    learned = None
    zero_shot_features = confidence_features(probs, cats, report, label_sims, label_ids)
    if feedback is not None:
        if keep is not None:  # the products finished here: tonight's and the decided ones
            queries, texts, ids = queries[keep], [texts[i] for i in keep], [ids[i] for i in keep]
        decided, weights = feedback.arrays(ids, categories)
        with stage_of(progress, "learning from decisions", total=int((decided >= 0).sum()), unit="decisions") as bar:
            learned = fit_feedback(queries, texts, ZeroShot(probs, cats), decided, weights,
                                   n_categories=len(categories), parents=ancestors[:, 0],
                                   audited=feedback.audit_mask(ids), seed=seed, neighbours=report.neighbours)
            bar.complete()
        report.neighbours = None  # spent: (n, k) arrays not kept past the fit
        probs, cats = learned.predict()
        rows = np.flatnonzero(decided >= 0)  # a decided product: its decision, for certain
        probs[rows], cats[rows] = 0.0, -1
        probs[rows, 0], cats[rows, 0] = 1.0, decided[rows]
        report.backed_off = None
        features = np.zeros((len(cats), 5))
        hit = (label_ids == cats[:, :1]) & (label_ids >= 0)
        features[:, 3] = np.where(hit.any(axis=1), np.where(hit, label_sims, -np.inf).max(axis=1), np.nan)
        missing = np.flatnonzero(np.isnan(features[:, 3]) & (cats[:, 0] >= 0))
        for start in range(0, len(missing), 1024):  # the chosen category outside the label candidates
            part = missing[start:start + 1024]
            features[part, 3] = labels.scores(queries[part])[np.arange(len(part)), cats[part, 0]]
        features[:, 3] = np.nan_to_num(features[:, 3], nan=0.0)
        if not learned.fitted_on:  # too few decisions to fit on: the zero-shot ranking, its confidence
            features = zero_shot_features
    else:
        features = zero_shot_features
    top_n = params.top_n
    top_ids = np.full((len(cats), top_n), -1, dtype=np.int64)
    top_scores = np.zeros((len(cats), top_n))
    width = min(top_n, cats.shape[1])
    top_ids[:, :width], top_scores[:, :width] = cats[:, :width], probs[:, :width]
    scores = CategoryScores(top_ids, top_scores, np.full(len(cats), np.nan), np.full(len(cats), -1, dtype=np.int64),
                            features[:, 3], backed_off=report.backed_off)
    return scores, features, learned
