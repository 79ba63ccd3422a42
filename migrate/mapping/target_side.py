"""Mapping onto a labelled target catalog: the target side fitted once (vectors indexed, labels
embedded, classifier and calibration fitted or read back from a state), then the source scored
against it chunk by chunk."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from migrate.core.catalog import TEXT_SEPARATOR, Catalog, normalise_text
from migrate.core.embedding import Embedder
from migrate.core.index import VectorIndex, build_index, search
from migrate.core.progress import Progress, stage_of
from migrate.mapping.calibration import ConfidenceCalibrator, LeaveOneOut, choose_min_confidence
from migrate.mapping.classifier import fit_with_out_of_fold_votes
from migrate.mapping.fitted_target import FittedTarget, FittedTargetStore, fit_settings, fitted_target_key
from migrate.mapping.inputs import Targets
from migrate.mapping.labels import PLAIN, CategoryLabels
from migrate.mapping.lexical import LexicalIndex
from migrate.mapping.scoring import CategoryScores, ScoringParams, concat_scores, score_categories
from migrate.mapping.settings import MigrationSettings

log = logging.getLogger(__name__)

LEAVE_OUT_EXTRA = 10
# source products encoded and scored at a time onto a labelled target: 64k rows keep a chunk's
# vectors (384 dims) near 100 MB and its dense search results small, whatever the source size
SOURCE_CHUNK = 65_536


def _calibration_sample(target_texts: list[str], settings: MigrationSettings) -> tuple[np.ndarray, np.ndarray]:
    """(rows of the target catalog that calibration scores, same-name group of every target product).

    A product's own listings -- the same name, whatever the brand or other text columns -- are
    left out together: a new source product has no copy of itself in the target (as in the
    benchmark's split by name), and counting one would make the calibration optimistic.
    """
    n = len(target_texts)
    rng = np.random.default_rng(settings.seed)
    sample = np.sort(rng.choice(n, size=min(n, settings.calibration_limit), replace=False)) if n else \
        np.zeros(0, dtype=np.int64)
    group_of: dict[str, int] = {}
    groups = np.fromiter((group_of.setdefault(normalise_text(t.split(TEXT_SEPARATOR, 1)[0]), len(group_of))
                          for t in target_texts), dtype=np.int64, count=n)
    return sample, groups


def _exclude_groups(sims: np.ndarray, ids: np.ndarray, query_groups: np.ndarray, index_groups: np.ndarray, *,
                    k: int) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-out neighbours: drop each query's own near-duplicates (same normalised text)."""
    keep = (ids >= 0) & (index_groups[np.clip(ids, 0, None)] != query_groups[:, None])
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
    out_ids = np.where(np.take_along_axis(keep, order, 1), np.take_along_axis(ids, order, 1), -1)
    out_sims = np.where(out_ids >= 0, np.take_along_axis(sims, order, 1), 0.0)
    return out_sims, out_ids


@dataclass(frozen=True)
class TargetScorer:
    """What scores a product against a labelled target catalog: its vectors indexed, labels
    embedded, lexical index and classifier fitted (the calibration is fitted on its scores)."""

    targets: Targets
    target_texts: list[str]
    labels: CategoryLabels
    product_index: VectorIndex
    lexical: LexicalIndex | None
    classifier: Any
    params: ScoringParams

    def score(self, queries: np.ndarray, texts: list[str], *,
              leave_out: tuple[np.ndarray, np.ndarray] | None = None,
              clf_votes: tuple[np.ndarray, np.ndarray] | None = None) -> CategoryScores:
        """Score encoded ``queries`` (``texts``: their plain texts, for the lexical and classifier
        votes); ``leave_out=(query_groups, index_groups)`` drops same-group neighbours (calibration);
        ``clf_votes`` replaces the classifier's votes (its out-of-fold ones in calibration)."""
        params, cats = self.params, self.targets.product_categories
        if clf_votes is None and self.classifier is not None:
            clf_votes = self.classifier.vote(texts, params.neighbours)
        label_sims, label_ids = self.labels.search(queries, params.label_candidates)
        extra = LEAVE_OUT_EXTRA if leave_out is not None else 0
        nn_sims, nn_ids = search(self.product_index, queries, params.neighbours + extra)
        if leave_out is not None:
            nn_sims, nn_ids = _exclude_groups(nn_sims, nn_ids, *leave_out, k=params.neighbours)
        nn_cats = np.where(nn_ids >= 0, cats[np.clip(nn_ids, 0, None)], -1)
        lex_sims = lex_cats = None
        if self.lexical is not None:
            lex_sims, lex_ids = self.lexical.search(texts, params.neighbours + extra)
            if leave_out is not None:
                lex_sims, lex_ids = _exclude_groups(lex_sims, lex_ids, *leave_out, k=params.neighbours)
            lex_cats = np.where(lex_ids >= 0, cats[np.clip(lex_ids, 0, None)], -1)
        return score_categories(len(self.targets.categories), params, nn_sims=nn_sims, nn_categories=nn_cats,
                                label_sims=label_sims, label_ids=label_ids, nn_ids=nn_ids,
                                lex_sims=lex_sims, lex_categories=lex_cats,
                                clf_probs=clf_votes[0] if clf_votes is not None else None,
                                clf_categories=clf_votes[1] if clf_votes is not None else None)



@dataclass(frozen=True)
class TargetSide:
    """A labelled target catalog fitted for mapping (:func:`fit_target_side`): its scorer and the
    calibration fitted on it. Picklable: the Ray engine builds it once and ships it to every worker."""

    scorer: TargetScorer
    calibrator: ConfidenceCalibrator
    loo: LeaveOneOut | None
    fitted_here: bool  # False: the classifier and calibration were read back from the state

    @property
    def targets(self) -> Targets:
        return self.scorer.targets

    @property
    def target_texts(self) -> list[str]:
        return self.scorer.target_texts

    @property
    def labels(self) -> CategoryLabels:
        return self.scorer.labels

    @property
    def product_index(self) -> VectorIndex:
        return self.scorer.product_index

    @property
    def params(self) -> ScoringParams:
        return self.scorer.params

    def score(self, queries: np.ndarray, texts: list[str]) -> CategoryScores:
        """Score encoded ``queries`` (``texts``: their plain texts) (:meth:`TargetScorer.score`)."""
        return self.scorer.score(queries, texts)

    def confidence(self, scores: CategoryScores) -> np.ndarray:
        return self.calibrator.predict(scores.features())

def fit_target_side(settings: MigrationSettings, targets: Targets, embedder: Embedder, *,
                    model_fingerprint: str, source_has_categories: bool,
                    fitted_targets: FittedTargetStore | None = None) -> "TargetSide":
    """Everything mapping onto a labelled target catalog needs before the first source product:
    target vectors and their index, label vectors, the lexical index, the classifier and the
    calibration (all but the index read back from ``fitted_targets`` when the target, model and
    settings are unchanged). Built once; the Ray engine ships it to its workers. Its stages report
    to the embedder's progress display."""
    params = settings.scoring
    target_texts = [targets.catalog.texts[p] for p in targets.product_rows]
    labels = CategoryLabels(targets.categories, params.label_ancestor_weight,
                            by_level=not (settings.category_context and source_has_categories), templates=PLAIN)
    fitted = side_key = None
    if fitted_targets is not None:
        side_key = fitted_target_key(model_fingerprint=model_fingerprint, categories=targets.categories,
                                     texts=target_texts, product_categories=targets.product_categories,
                                     settings=fit_settings(settings, by_level=labels.by_level))
        fitted = fitted_targets.get(side_key, products=len(target_texts), labels=len(labels.texts),
                                    categories=len(targets.categories))
    if fitted is not None:
        tgt_vec, label_vectors, lexical = fitted.target_vectors, fitted.label_vectors, fitted.lexical
    else:
        vectors = embedder.encode([*target_texts, *labels.texts], label="target texts",
                                  stage="encoding the target catalog")
        tgt_vec, label_vectors = vectors[: len(target_texts)], vectors[len(target_texts):]
        lexical = LexicalIndex().fit(target_texts) if params.lexical_weight > 0 else None
    labels.fit(label_vectors)
    product_index = build_index(tgt_vec)
    if fitted is not None:
        scorer = TargetScorer(targets, target_texts, labels, product_index, lexical, fitted.classifier, params)
        return TargetSide(scorer, fitted.calibrator, fitted.loo, fitted_here=False)
    sample, groups = _calibration_sample(target_texts, settings)
    classifier = oof_votes = None
    if params.classifier_weight > 0:
        with stage_of(embedder.progress, "fitting the classifier", total=len(target_texts), unit="products") as bar:
            classifier, oof_votes = fit_with_out_of_fold_votes(
                target_texts, targets.product_categories, sample, groups, top=params.neighbours,
                temperature=params.classifier_temperature, seed=settings.seed)
            bar.update(len(target_texts))
        if not classifier.usable:
            log.info("classifier: the target catalog has one category; no classifier vote")
            classifier = oof_votes = None
    scorer = TargetScorer(targets, target_texts, labels, product_index, lexical, classifier, params)
    with stage_of(embedder.progress, "calibrating", total=len(sample), unit="products") as bar:
        calibrator, loo = _calibrate(scorer, tgt_vec, settings, sample, groups, oof_votes)
        bar.update(len(sample))
    if fitted_targets is not None:
        fitted_targets.put(side_key, FittedTarget(classifier, calibrator, loo, tgt_vec, label_vectors, lexical))
    return TargetSide(scorer, calibrator, loo, fitted_here=True)

def _calibrate(side: TargetScorer, tgt_vec: np.ndarray, settings: MigrationSettings, sample: np.ndarray,
               groups: np.ndarray, clf_votes: tuple[np.ndarray, np.ndarray] | None = None
               ) -> tuple[ConfidenceCalibrator, LeaveOneOut]:
    """Leave-one-out over a ``sample`` of the target catalog (``groups``: same-name groups, left
    out together; ``clf_votes``: the sample's out-of-fold classifier votes): fit the calibrator,
    measure flags."""
    scores = side.score(tgt_vec[sample], [side.target_texts[i] for i in sample],
                        leave_out=(groups[sample], groups), clf_votes=clf_votes)
    truth = side.targets.product_categories[sample]
    correct = scores.top_ids[:, 0] == truth
    calibrator = ConfidenceCalibrator().fit(scores.features(), correct)
    conf = calibrator.predict(scores.features())
    th = settings.thresholds
    others = (scores.margin >= th.min_margin) & (np.nan_to_num(scores.nearest_sim, nan=-1) >= th.min_similarity)
    how = "given"
    if th.min_confidence is None:
        chosen = choose_min_confidence(conf, correct, others, th.target_precision)
        how = (f"chosen on leave-one-out for precision {th.target_precision}" if chosen is not None else
               f"precision {th.target_precision} not reachable on leave-one-out: every row flagged")
        th = replace(th, min_confidence=round(chosen, 4) if chosen is not None else 1.0 + 1e-9)
    unflagged = others & (conf >= th.min_confidence)
    loo = LeaveOneOut(products=int(len(sample)), top1_accuracy=float(correct.mean()),
                      unflagged_share=float(unflagged.mean()),
                      unflagged_accuracy=float(correct[unflagged].mean()) if unflagged.any() else float("nan"),
                      thresholds=th, min_confidence_source=how)
    log.info("leave-one-out on %d target products: top-1 %.3f, unflagged %.1f%% at %.3f",
             loo.products, loo.top1_accuracy, 100 * loo.unflagged_share, loo.unflagged_accuracy)
    return calibrator, loo

def score_source(source: Catalog, texts: list[str], embedder: Embedder, side: "TargetSide",
                  progress: "bool | Progress") -> CategoryScores:
    """Encode and score the source against a labelled target in chunks of :data:`SOURCE_CHUNK`
    products: memory for vectors and votes grows with the chunk, not with the source. On the
    ``progress`` display (the embedder's too): "encoding products" then "scoring" for one chunk;
    one stage, "encoding and scoring products", over all the chunks of a larger source."""
    parts = []
    if len(texts) <= SOURCE_CHUNK:
        queries = embedder.encode(texts, label="source texts", stage="encoding products")
        with stage_of(progress, "scoring", total=len(texts), unit="products") as bar:
            parts.append(side.score(queries, source.texts))
            bar.update(len(texts))
        return concat_scores(parts)
    with stage_of(progress, "encoding and scoring products", total=len(texts), unit="products"):
        for start in range(0, len(texts), SOURCE_CHUNK):  # each chunk's encoding counts towards the stage
            stop = min(start + SOURCE_CHUNK, len(texts))
            queries = embedder.encode(texts[start:stop], label="source texts")
            parts.append(side.score(queries, source.texts[start:stop]))
    return concat_scores(parts)
