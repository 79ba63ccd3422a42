"""The migration: catalogs in, a :class:`~migrate.mapping.result.MigrationResult` out.

>>> result = run_migration(MigrationSettings(source="sample_catalogs/bigbasket_sample.csv",
...                        target_taxonomy="sample_catalogs/google_taxonomy_subset.txt"))  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from migrate import __version__
from migrate.core.catalog import TEXT_SEPARATOR, Catalog, load_catalog, normalise_text
from migrate.core.embedding import Embedder
from migrate.core.embedding_cache import EmbeddingCache
from migrate.core.encoder import Encoder, load_model
from migrate.core.index import VectorIndex, build_index, search
from migrate.core.readers import Reject
from migrate.core.rejects import rejects_table
from migrate.core.taxonomy import Taxonomy, load_taxonomy
from migrate.errors import TaxmigError
from migrate.mapping.calibration import ConfidenceCalibrator, LeaveOneOut, choose_min_confidence
from migrate.mapping.classifier import fit_with_out_of_fold_votes
from migrate.mapping.feedback import FEATURES as FEEDBACK_FEATURES
from migrate.mapping.feedback import (MIX_ITEM, Feedback, FeedbackModel, Unflagging, ZeroShot, choose_questions,
                                      default_ask, fit_feedback, unflag_threshold)
from migrate.mapping.fitted_target import FittedTarget, FittedTargetStore, fit_settings, fitted_target_key
from migrate.mapping.flags import FLAG_ORDER, Thresholds, compute_flags
from migrate.mapping.kept_scores import SOURCE_COLUMNS, KeptScores, row_keys, scoring_key
from migrate.mapping.labels import PLAIN, CategoryLabels
from migrate.mapping.lexical import LexicalIndex
from migrate.mapping.result import CROSSWALK_COLUMNS, MigrationResult, mapping_dtype
from migrate.mapping.scoring import CategoryScores, ScoringParams, concat_scores, score_categories
from migrate.mapping.settings import MigrationSettings
from migrate.mapping.zeroshot import (confidence_features, listed_ancestors, proxy_confidence, refine,
                                      self_training_context)

log = logging.getLogger(__name__)


@dataclass
class Targets:
    """What products can be mapped to: category list, optional labelled products."""

    categories: list[str]
    taxonomy: Taxonomy | None
    catalog: Catalog | None
    product_categories: np.ndarray  # category index per usable target product
    product_rows: list[int]         # positions in ``catalog`` of usable target products
    rejects: list[Reject]


def load_targets(settings: MigrationSettings) -> Targets:
    """Read the target taxonomy and/or catalog; target rows whose category is not a target are rejected."""
    taxonomy = None
    if settings.target_taxonomy is not None:
        taxonomy = load_taxonomy(settings.target_taxonomy, encoding=settings.encoding,
                                 column=settings.taxonomy_column)
        if settings.leaves_only:
            taxonomy = taxonomy.leaves_only()
    catalog = None
    rejects: list[Reject] = []
    if settings.target_catalog is not None:
        catalog = load_catalog(settings.target_catalog, role="target", id=settings.target_id,
                               text=settings.target_text, category=settings.target_category,
                               category_required=True, encoding=settings.encoding)
        rejects = list(catalog.rejects)
    if taxonomy is not None:
        categories = list(taxonomy.categories)
    else:
        categories = list(dict.fromkeys(catalog.categories))
        if settings.leaves_only:
            categories = Taxonomy.from_paths(categories).leaves()
    index_of = {c: i for i, c in enumerate(categories)}
    product_categories, product_rows = [], []
    if catalog is not None:
        for pos, (cat, row, pid) in enumerate(zip(catalog.categories, catalog.rows, catalog.ids)):
            if cat in index_of:
                product_categories.append(index_of[cat])
                product_rows.append(pos)
            else:
                where = "the target taxonomy" + (" (leaves only)" if settings.leaves_only else "")
                rejects.append(Reject(row=row, id=pid, text=catalog.texts[pos],
                                      reason=f"category '{cat}' is not in {where}; fix the category or the taxonomy"))
        if not product_rows:
            raise TaxmigError(f"{catalog.path}: no target product has a usable category",
                              hint="check --target-category and that its values match the taxonomy")
    if not categories:
        raise TaxmigError("the target lists no categories", hint="check the target files")
    return Targets(categories, taxonomy, catalog, np.asarray(product_categories, dtype=np.int64),
                   product_rows, sorted(rejects, key=lambda r: r.row))


def embedding_texts(source: Catalog, category_context: bool) -> list[str]:
    """Source texts as embedded: with the source category path appended when asked and known.

    A source category is strong context in a real migration ("Bathing Bar" under "Bath & Hand
    Wash" is soap, not food); it is the answer itself when source and target share a taxonomy,
    which is why the benchmark's source file carries no category column.
    """
    if not category_context or not source.has_categories:
        return source.texts
    return [f"{t} | {c}" if c else t for t, c in zip(source.texts, source.categories)]


LEAVE_OUT_EXTRA = 10
# source products encoded and scored at a time onto a labelled target: 64k rows keep a chunk's
# vectors (384 dims) near 100 MB and its dense search results small, whatever the source size
SOURCE_CHUNK = 65_536
TARGET_SIDE = "Target side (classifier, calibration)"
TARGET_SIDE_FITTED = "fitted in this run, kept in the state"
TARGET_SIDE_READ = "read from the state: target catalog, model and settings unchanged"
SCORES_KEPT = "Products whose scores were kept (inputs unchanged since the last night)"
SELF_TRAINING_CONTEXT = 5000
"""Onto a taxonomy, a night's new and changed products self-train among their neighbours and a
sample of the catalog up to this many products (:func:`~migrate.mapping.zeroshot.self_training_context`)
instead of the whole catalog. With 5% of the products new, their top-1 moved by at most 0.4 points
against self-training over everything (BigBasket 27,554 products two-level 0.459 vs 0.463,
three-level 0.387 vs 0.389, Instacart 0.517 vs 0.515) and scoring took 3.7 s instead of 12.9 s on
BigBasket two-level (``python bench/zeroshot_incremental.py --contexts 5000 --share 0.05``,
2026-12-03). 2,000 was tried at 1% new: agreement with the whole-catalog run fell from 0.90-0.95 to
0.86-0.91 for a second saved."""


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


RAW_COLUMNS = ("_confidence", "_margin", "_nearest_sim", "_label_sim", "_backed_off")
"""Unrounded values the flags read (the mapping shows them rounded; ``_backed_off``: a broader
category suggested, PARENT_BACKOFF); dropped by :func:`with_flags`."""


def source_columns(source: Catalog) -> pl.DataFrame:
    """The columns of a scored frame that describe the products themselves (:data:`SOURCE_COLUMNS`)."""
    return pl.DataFrame({"source_row": source.rows, "source_id": source.ids, "source_text": source.texts,
                         "source_category": source.categories}, schema={c: mapping_dtype(c) for c in SOURCE_COLUMNS})


def _rows_of(source: Catalog, rows: np.ndarray) -> Catalog:
    """The products of ``source`` at positions ``rows`` (its path, columns and rejects unchanged)."""
    return replace(source, ids=[source.ids[i] for i in rows], texts=[source.texts[i] for i in rows],
                   categories=[source.categories[i] for i in rows], rows=[source.rows[i] for i in rows])


def scored_frame(source: Catalog, targets: Targets, scores: CategoryScores, confidence: np.ndarray,
                 target_texts: list[str]) -> pl.DataFrame:
    """The mapping's columns for ``source`` except needs_review and flags, plus :data:`RAW_COLUMNS`."""
    cats = targets.categories
    ids = targets.taxonomy.ids if targets.taxonomy is not None else {}

    def name(i: int) -> str:
        return cats[i] if i >= 0 else ""

    top = scores.top_ids
    data: dict[str, Any] = {
        "target_category": [name(i) for i in top[:, 0]],
        "target_id": [ids.get(name(i), "") for i in top[:, 0]],
        "confidence": np.round(confidence, 4),
        "margin": np.round(scores.margin, 4),
    }
    for j in range(1, top.shape[1]):
        data[f"alt{j}_category"] = [name(i) for i in top[:, j]]
        data[f"alt{j}_score"] = np.round(scores.top_scores[:, j], 4)
    data["score"] = np.round(scores.top_scores[:, 0], 4)
    data["nearest_target"] = [target_texts[i] if i >= 0 else "" for i in scores.nearest_idx]
    data["nearest_similarity"] = np.round(np.nan_to_num(scores.nearest_sim, nan=0.0), 4)
    if top.shape[1] < 3:  # keep the documented columns even with --top-k 1 or 2
        for j in range(top.shape[1], 3):
            data[f"alt{j}_category"] = [""] * len(source)
            data[f"alt{j}_score"] = np.zeros(len(source))
    frame = pl.concat([source_columns(source), pl.DataFrame(data, schema={c: mapping_dtype(c) for c in data})],
                      how="horizontal")
    backed_off = scores.backed_off if scores.backed_off is not None else np.zeros(len(source), dtype=bool)
    return frame.with_columns(
        *(pl.Series(name, np.asarray(values, dtype=np.float64)) for name, values in
          zip(RAW_COLUMNS, (confidence, scores.margin, scores.nearest_sim, scores.label_sim))),
        pl.Series(RAW_COLUMNS[-1], np.asarray(backed_off, dtype=bool), pl.Boolean))


def flag_inputs(scored: pl.DataFrame) -> dict[str, Any]:
    """The per-row arguments of :func:`~migrate.mapping.flags.compute_flags`, read from a :func:`scored_frame`."""
    return {"confidence": scored["_confidence"].to_numpy(), "margin": scored["_margin"].to_numpy(),
            "nearest_sim": scored["_nearest_sim"].to_numpy(), "label_sim": scored["_label_sim"].to_numpy(),
            "source_categories": scored["source_category"].to_list(),
            "target_categories": scored["target_category"].to_list(), "backed_off": scored["_backed_off"].to_numpy()}


def with_flags(scored: pl.DataFrame, flags: list[list[str]]) -> pl.DataFrame:
    """The mapping: a :func:`scored_frame` with needs_review and flags in place, raw columns dropped."""
    frame = scored.drop(RAW_COLUMNS).with_columns(pl.Series("needs_review", [bool(f) for f in flags], pl.Boolean),
                                                   pl.Series("flags", [",".join(f) for f in flags], pl.String))
    at = frame.columns.index("margin") + 1
    rest = [c for c in frame.columns if c not in ("needs_review", "flags")]
    return frame.select(rest[:at] + ["needs_review", "flags"] + rest[at:])


@dataclass
class TargetSide:
    """A labelled target catalog fitted for mapping (:meth:`Migrator.fit_target_side`): vectors
    indexed, labels embedded, classifier and calibration fitted. Picklable: the Ray engine builds it
    once and ships it to every worker."""

    targets: Targets
    target_texts: list[str]
    labels: CategoryLabels
    product_index: VectorIndex
    lexical: LexicalIndex | None
    classifier: Any
    calibrator: ConfidenceCalibrator
    loo: LeaveOneOut | None
    params: ScoringParams
    fitted_here: bool  # False: the classifier and calibration were read back from the state

    def score(self, queries: np.ndarray, texts: list[str], *,
              leave_out: tuple[np.ndarray, np.ndarray] | None = None,
              clf_votes: tuple[np.ndarray, np.ndarray] | None = None) -> CategoryScores:
        """Score encoded ``queries`` (``texts``: their plain texts, for the lexical and classifier
        votes); ``leave_out=(query_groups, index_groups)`` drops same-group neighbours (calibration);
        ``clf_votes`` replaces the classifier's votes (its out-of-fold ones in calibration)."""
        params, cats = self.params, self.targets.product_categories
        if clf_votes is None and self.classifier is not None:
            clf_votes = self.classifier.vote(texts, params.k)
        label_sims, label_ids = self.labels.search(queries, params.label_candidates)
        extra = LEAVE_OUT_EXTRA if leave_out is not None else 0
        nn_sims, nn_ids = search(self.product_index, queries, params.k + extra)
        if leave_out is not None:
            nn_sims, nn_ids = _exclude_groups(nn_sims, nn_ids, *leave_out, k=params.k)
        nn_cats = np.where(nn_ids >= 0, cats[np.clip(nn_ids, 0, None)], -1)
        lex_sims = lex_cats = None
        if self.lexical is not None:
            lex_sims, lex_ids = self.lexical.search(texts, params.k + extra)
            if leave_out is not None:
                lex_sims, lex_ids = _exclude_groups(lex_sims, lex_ids, *leave_out, k=params.k)
            lex_cats = np.where(lex_ids >= 0, cats[np.clip(lex_ids, 0, None)], -1)
        return score_categories(len(self.targets.categories), params, nn_sims=nn_sims, nn_categories=nn_cats,
                                label_sims=label_sims, label_ids=label_ids, nn_ids=nn_ids,
                                lex_sims=lex_sims, lex_categories=lex_cats,
                                clf_probs=clf_votes[0] if clf_votes is not None else None,
                                clf_categories=clf_votes[1] if clf_votes is not None else None)

    def confidence(self, scores: CategoryScores) -> np.ndarray:
        return self.calibrator.predict(scores.features())


class Migrator:
    """Holds the encoder between runs (tests and the nightly job load the model once)."""

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder

    @classmethod
    def from_settings(cls, settings: MigrationSettings, *, lazy: bool = False) -> "Migrator":
        return cls(load_model(settings.encoder, lazy=lazy))

    def run(self, settings: MigrationSettings, inputs: "Inputs | None" = None, *,
            cache: EmbeddingCache | None = None, fitted_targets: FittedTargetStore | None = None,
            kept: KeptScores | None = None, keep_scores: bool = False,
            feedback: Feedback | None = None) -> MigrationResult:
        """Map ``settings.source``; ``inputs`` are the already-read files (read here if not given);
        with a ``cache``, texts embedded before under this model are not encoded again; with
        ``fitted_targets``, a labelled target's classifier and calibration fitted before on the same
        target, model and settings are read back instead of fitted (:mod:`migrate.mapping.fitted_target`);
        with ``kept`` (last night's ``result.kept_scores``), products whose inputs did not change keep
        their scores and only the others are scored (:mod:`migrate.mapping.kept_scores`);
        ``keep_scores``: return this run's scores as ``result.kept_scores``; ``feedback``: a
        reviewer's decisions so far, onto a taxonomy (:mod:`migrate.mapping.feedback`): every
        undecided product is mapped again with them, decided products keep their decision
        (flag ``DECIDED``), confidence is calibrated on the decisions held out and rows go unflagged
        once the random checks among them vouch for a threshold (:func:`~migrate.mapping.feedback.unflag_threshold`)."""
        started = time.perf_counter()
        when = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        inputs = inputs or read_inputs(settings)
        source, targets = inputs.source, inputs.targets
        embedder = Embedder(self.encoder.model, batch_size=settings.encoder.batch_size, progress=settings.progress,
                            cache=cache, cache_key=self.encoder.fingerprint if cache is not None else None)
        params = settings.scoring
        source_texts = embedding_texts(source, settings.category_context)
        key = keys = None
        positions = np.full(len(source), -1, dtype=np.int64)
        if kept is not None or keep_scores:
            key = scoring_key(model_fingerprint=self.encoder.fingerprint, categories=targets.categories,
                              target_texts=[targets.catalog.texts[p] for p in targets.product_rows]
                              if targets.catalog is not None else [],
                              product_categories=targets.product_categories if targets.catalog is not None else None,
                              settings=settings)
            keys = row_keys(source_texts, source.texts, source.categories)
            if kept is not None:
                positions = kept.positions(key, keys)
        todo = np.flatnonzero(positions < 0)
        scored_now: pl.DataFrame | None = None
        side: TargetSide | None = None
        learned: FeedbackModel | None = None
        decided = np.zeros(len(source), dtype=bool)  # products a person decided (flag DECIDED)
        src_vec = None
        if targets.catalog is not None:  # the target side first, then the source chunk by chunk
            side = self.fit_target_side(settings, targets, embedder, source_has_categories=source.has_categories,
                                        fitted_targets=fitted_targets)
            labels, calibrator, loo = side.labels, side.calibrator, side.loo
            if len(todo):
                part = _rows_of(source, todo)
                scores = self._score_source(part, [source_texts[i] for i in todo], embedder, side, settings.progress)
                scored_now = scored_frame(part, targets, scores, side.confidence(scores), side.target_texts)
        else:  # a taxonomy alone: the source products teach each other (self-training), all at once
            labels = CategoryLabels(targets.categories, params.label_ancestor_weight,
                                    by_level=not (settings.category_context and source.has_categories),
                                    templates=params.zero_shot_label_templates)
            vectors = embedder.encode([*source_texts, *labels.texts], label="texts")
            src_vec = vectors[: len(source)]
            labels.fit(vectors[len(source):])
            # hub removal (migrate/mapping/labels.py): no category draws every product
            labels.center(src_vec, params.zero_shot_label_centering)
            calibrator, loo = ConfidenceCalibrator(), None
            if len(todo) == len(source):
                # zero decisions: exactly the run without feedback (its Summary still says what was measured)
                teach = feedback if feedback is not None and feedback.decisions else None
                scored_now, learned = self._score_taxonomy(source, targets, src_vec, labels, calibrator, params,
                                                           settings.progress, feedback=teach, seed=settings.seed)
                if learned is not None:
                    decided = learned.decided >= 0
            elif len(todo):  # the kept products keep their scores: self-train the others among a context
                context = self_training_context(src_vec, todo, size=SELF_TRAINING_CONTEXT,
                                                neighbours=2 * params.self_training_neighbours, seed=settings.seed)
                keep = todo
                if feedback is not None and feedback.decisions:  # the decided products teach tonight's too
                    taught = np.flatnonzero(feedback.arrays(source.ids, targets.categories)[0] >= 0)
                    context, keep = np.union1d(context, taught), np.union1d(todo, taught)
                scored_now, learned = self._score_taxonomy(
                    _rows_of(source, context), targets, src_vec[context], labels, calibrator, params, settings.progress,
                    keep=np.searchsorted(context, keep), feedback=feedback if len(keep) > len(todo) else None,
                    seed=settings.seed)
                if len(keep) > len(todo):  # the decided products were scored to learn from: keep tonight's
                    wanted = np.isin(keep, todo)
                    scored_now = scored_now.filter(pl.Series(wanted))
                    learned = replace(learned, decided=learned.decided[wanted])
                decided[todo[learned.decided >= 0] if learned is not None else []] = True
        self_trained = side is None and params.self_training_rounds > 0
        thresholds = loo.thresholds if loo is not None else settings.thresholds
        learned_threshold: Unflagging | None = None
        # a night's kept rows carry confidence from other runs: the threshold is chosen on a whole run only
        if learned is not None and learned.fitted_on and thresholds.min_confidence is None and len(todo) == len(source):
            open_rows = np.flatnonzero(learned.decided < 0)
            learned_threshold = unflag_threshold(learned, scored_now["_confidence"].to_numpy(), open_rows,
                                                 thresholds.target_precision)
            chosen = learned_threshold.threshold
            thresholds = replace(thresholds, min_confidence=chosen if chosen is not None else 1.0 + 1e-9)
        if self_trained and thresholds.min_confidence is None:
            # no threshold has kept a precision on a taxonomy the calibration was not fitted on
            # (bench/zeroshot_calibration.py): a person looks at every row unless told otherwise
            thresholds = replace(thresholds, min_confidence=1.0 + 1e-9)
        scored = scored_now if len(todo) == len(source) else kept.merged(source_columns(source), positions, scored_now)
        flags = compute_flags(**flag_inputs(scored), has_products=side is not None,
                              calibrated=calibrator.logistic or self_trained,
                              all_targets=targets.categories, thresholds=thresholds)
        if feedback is not None and feedback.new_category:  # settled by a person, though on no target category
            decided |= np.array([pid in feedback.new_category for pid in source.ids], dtype=bool)
        for i in np.flatnonzero(decided):
            flags[i] = []
        mapping = with_flags(scored, flags)
        if decided.any():
            mapping = mapping.with_columns(flags=pl.when(pl.Series(decided)).then(pl.lit(DECIDED))
                                           .otherwise(pl.col("flags")))
        questions = None
        if self_trained and src_vec is not None and len(todo) == len(source):
            open_rows = np.flatnonzero(mapping["needs_review"].to_numpy() & ~decided)
            asked = choose_questions(src_vec, mapping["confidence"].to_numpy(), open_rows,
                                     settings.ask if settings.ask is not None else default_ask(len(source)),
                                     seed=settings.seed + (feedback.round if feedback is not None else 0))
            questions = pl.DataFrame({"source_id": [source.ids[i] for i in asked.rows],
                                      "question": np.arange(1, len(asked.rows) + 1, dtype=np.int64),
                                      "why": asked.why, "audit": asked.audit},
                                     schema={"source_id": pl.String, "question": pl.Int64, "why": pl.String,
                                             "audit": pl.Boolean})
        rejects = rejects_frame(source.rejects, targets.rejects)
        seconds = time.perf_counter() - started
        summary = self.summary(settings, thresholds, when, source, targets, mapping, calibrator, loo,
                               labels, side.product_index if side else None, embedder.stats,
                               embedder.cache is not None, seconds)
        if feedback is not None:
            summary[0:0] = feedback_summary(feedback, learned, questions, thresholds, learned_threshold)
            if learned is not None and learned.calibration is not None:
                summary = [(k, f"yes: {learned.calibration.source}" if k == "Confidence calibrated" else v)
                           for k, v in summary]
        elif questions is not None:
            summary[0:0] = [(THIS_ROUND, _asking(questions))]
        if kept is not None:
            summary.append((SCORES_KEPT, int(len(source) - len(todo))))
        if side is not None and fitted_targets is not None:
            summary.append((TARGET_SIDE, TARGET_SIDE_FITTED if side.fitted_here else TARGET_SIDE_READ))
        return MigrationResult(mapping=mapping, rejects=rejects, crosswalk=crosswalk_frame(mapping), summary=summary,
                               target_categories=list(targets.categories),
                               thresholds=thresholds.as_dict(), calibrated=calibrator.logistic,
                               kept_scores=KeptScores.from_scored(key, scored, keys) if keep_scores else None,
                               questions=questions)

    def _score_taxonomy(self, source: Catalog, targets: Targets, src_vec: np.ndarray, labels: CategoryLabels,
                        calibrator: ConfidenceCalibrator, params: ScoringParams, progress: bool, *,
                        keep: np.ndarray | None = None, feedback: Feedback | None = None,
                        seed: int = 0) -> tuple[pl.DataFrame, FeedbackModel | None]:
        """The scored frame of every source product onto a taxonomy (label scores, refined by
        self-training unless it is switched off); ``keep``: of the products at these positions
        alone (the others are a night's context: they self-train with them, their scores are kept);
        ``feedback``: decisions to learn from (:mod:`migrate.mapping.feedback`), and the fitted mix."""
        learned = None
        if params.self_training_rounds > 0:
            source_groups = None
            if source.has_categories:
                names = {c: i for i, c in enumerate(dict.fromkeys(c for c in source.categories if c))}
                source_groups = np.array([names.get(c, -1) for c in source.categories], dtype=np.int64)
            scores, features, learned = self._self_trained(
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
            label_sims, label_ids = labels.search(src_vec, params.label_candidates)
            scores = score_categories(len(targets.categories), params, nn_sims=None, nn_categories=None,
                                      label_sims=label_sims, label_ids=label_ids)
            confidence = calibrator.predict(scores.features())
        if labels.bias is not None:  # NO_MATCH reads the label score before centering
            scores.label_sim = labels.uncentered(scores.label_sim, scores.top_ids[:, 0])
        frame = scored_frame(source if keep is None else _rows_of(source, keep), targets, scores, confidence, [])
        return frame, learned

    def fit_target_side(self, settings: MigrationSettings, targets: Targets, embedder: Embedder, *,
                        source_has_categories: bool,
                        fitted_targets: FittedTargetStore | None = None) -> "TargetSide":
        """Everything mapping onto a labelled target catalog needs before the first source product:
        target vectors and their index, label vectors, the lexical index, the classifier and the
        calibration (all but the index read back from ``fitted_targets`` when the target, model and
        settings are unchanged). Built once; the Ray engine ships it to its workers."""
        params = settings.scoring
        target_texts = [targets.catalog.texts[p] for p in targets.product_rows]
        labels = CategoryLabels(targets.categories, params.label_ancestor_weight,
                                by_level=not (settings.category_context and source_has_categories), templates=PLAIN)
        fitted = side_key = None
        if fitted_targets is not None:
            side_key = fitted_target_key(model_fingerprint=self.encoder.fingerprint, categories=targets.categories,
                                         texts=target_texts, product_categories=targets.product_categories,
                                         settings=fit_settings(settings, by_level=labels.by_level))
            fitted = fitted_targets.get(side_key, products=len(target_texts), labels=len(labels.texts),
                                        categories=len(targets.categories))
        if fitted is not None:
            tgt_vec, label_vectors, lexical = fitted.target_vectors, fitted.label_vectors, fitted.lexical
        else:
            vectors = embedder.encode([*target_texts, *labels.texts], label="target texts")
            tgt_vec, label_vectors = vectors[: len(target_texts)], vectors[len(target_texts):]
            lexical = LexicalIndex().fit(target_texts) if params.lexical_weight > 0 else None
        labels.fit(label_vectors)
        product_index = build_index(tgt_vec)
        side = TargetSide(targets, target_texts, labels, product_index, lexical, None, ConfidenceCalibrator(), None,
                          params, fitted_here=fitted is None)
        if fitted is not None:
            side.classifier, side.calibrator, side.loo = fitted.classifier, fitted.calibrator, fitted.loo
            return side
        sample, groups = _calibration_sample(target_texts, settings)
        oof_votes = None
        if params.classifier_weight > 0:
            side.classifier, oof_votes = fit_with_out_of_fold_votes(
                target_texts, targets.product_categories, sample, groups, top=params.k,
                temperature=params.classifier_temperature, seed=settings.seed)
            if not side.classifier.usable:
                log.info("classifier: the target catalog has one category; no classifier vote")
                side.classifier = oof_votes = None
        side.calibrator, side.loo = self._calibrate(side, tgt_vec, settings, sample, groups, oof_votes)
        if fitted_targets is not None:
            fitted_targets.put(side_key, FittedTarget(side.classifier, side.calibrator, side.loo,
                                                      tgt_vec, label_vectors, lexical))
        return side

    def _score_source(self, source: Catalog, texts: list[str], embedder: Embedder, side: "TargetSide",
                      progress: bool) -> CategoryScores:
        """Encode and score the source against a labelled target in chunks of :data:`SOURCE_CHUNK`
        products: memory for vectors and votes grows with the chunk, not with the source."""
        from tqdm.auto import tqdm

        parts = []
        show = progress and len(texts) > SOURCE_CHUNK
        embedder.progress = embedder.progress and not show  # one bar over the chunks, not one per chunk
        with tqdm(total=len(texts), unit="products", desc="mapping", disable=not show) as bar:
            for start in range(0, len(texts), SOURCE_CHUNK):
                stop = min(start + SOURCE_CHUNK, len(texts))
                queries = embedder.encode(texts[start:stop], label="source texts")
                parts.append(side.score(queries, source.texts[start:stop]))
                bar.update(stop - start)
        return concat_scores(parts)

    @staticmethod
    def _self_trained(queries: np.ndarray, labels: CategoryLabels, texts: list[str], categories: list[str],
                      params, groups: np.ndarray | None = None, *, progress: bool = False,
                      keep: np.ndarray | None = None, feedback: Feedback | None = None,
                      ids: list[str] | None = None, seed: int = 0
                      ) -> tuple[CategoryScores, np.ndarray, FeedbackModel | None]:
        """Label scores refined by self-training over the source products (:mod:`migrate.mapping.zeroshot`;
        ``texts``: the products' own texts, for its word model; ``groups``: source category per row):
        the scores, the confidence features and (with ``feedback``: decisions on the products
        ``ids``) the mix fitted on them (:mod:`migrate.mapping.feedback`). The suggestion is the most
        specific category the evidence points into, or a broader one where its children cannot be
        told apart (:func:`migrate.mapping.zeroshot.prefer_specific`); ``progress``: bars over its long steps."""
        label_sims, label_ids = labels.search(queries, params.label_candidates, progress=progress)
        ancestors = listed_ancestors(categories)
        probs, cats, report = refine(label_sims, label_ids, queries, texts, len(categories), params, groups,
                                     ancestors, progress=progress, keep=keep)
        if keep is not None:
            label_sims, label_ids = label_sims[keep], label_ids[keep]
        learned = None
        zero_shot_features = confidence_features(probs, cats, report, label_sims, label_ids)
        if feedback is not None:
            if keep is not None:  # the products finished here: tonight's and the decided ones
                queries, texts, ids = queries[keep], [texts[i] for i in keep], [ids[i] for i in keep]
            decided, weights = feedback.arrays(ids, categories)
            learned = fit_feedback(queries, texts, ZeroShot(probs, cats), decided, weights,
                                   n_categories=len(categories), parents=ancestors[:, 0],
                                   audited=feedback.audit_mask(ids), seed=seed)
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

    @staticmethod
    def _calibrate(side: "TargetSide", tgt_vec: np.ndarray, settings: MigrationSettings, sample: np.ndarray,
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

    def summary(self, settings, thresholds, when, source: Catalog, targets: Targets, mapping: pl.DataFrame,
                calibrator: ConfidenceCalibrator, loo: LeaveOneOut | None, labels: CategoryLabels, product_index,
                encode_stats: dict[str, float], cached: bool, seconds: float) -> list[tuple[str, Any]]:
        """The Summary's (label, value) rows; ``mapping`` needs the columns flags, needs_review,
        confidence and source_category; ``encode_stats``: the embedder's counts (encoded, cached,
        seconds), ``cached``: whether an embedding cache was used."""
        self_trained = product_index is None and settings.scoring.self_training_rounds > 0
        flag_counts = Counter(f for fl in mapping["flags"].to_list() for f in fl.split(",") if f)
        decided = mapping.filter(pl.col("flags") == DECIDED).height
        mapping = mapping.filter(pl.col("flags") != DECIDED)  # what follows is the model's rows
        unflagged = mapping.filter(~pl.col("needs_review"))
        glance = _at_a_glance(mapping, unflagged, calibrator.logistic or self_trained, thresholds.target_precision)
        if decided:
            glance = {"Rows a person decided (kept as decided, flag DECIDED)": decided, **glance}
        rows: list[tuple[str, Any]] = [
            ("At a glance", glance),
            *([("Accepting the most confident rows", accept_tradeoff(mapping["confidence"].to_numpy()))]
              if calibrator.logistic or self_trained else []),
            ("Run id", uuid.uuid4().hex[:12]),
            ("Run time (UTC)", when.isoformat()),
            ("taxmig version", __version__),
            ("Source file", str(source.path)),
            ("Source rows", source.n_records),
            ("Source rows mapped", mapping.height + decided),
            ("Source rows rejected", len(source.rejects)),
            ("Source columns", source.spec.describe()),
        ]
        if targets.catalog is not None:
            rows += [("Target catalog", str(targets.catalog.path)),
                     ("Target catalog rows", targets.catalog.n_records),
                     ("Target products used", len(targets.product_rows)),
                     ("Target rows rejected", len(targets.rejects)),
                     ("Target columns", targets.catalog.spec.describe())]
        if targets.taxonomy is not None:
            rows += [("Target taxonomy", str(targets.taxonomy.path)),
                     ("Taxonomy categories", len(targets.taxonomy))]
        rows += [
            ("Target categories", len(targets.categories)),
            ("Leaves only", settings.leaves_only),
            ("Model", self.encoder.name),
            ("Model fingerprint", self.encoder.fingerprint),
            ("Product index", product_index.kind if product_index is not None else "none (taxonomy only)"),
            ("Label scoring", labels.describe()),
            ("Scoring", asdict(settings.scoring)),
            ("Thresholds", thresholds.as_dict()),
            ("min_confidence", _min_confidence_text(settings, calibrator, loo, self_trained)),
            ("Mapping method", "labelled target products: neighbour, lexical and classifier votes with the labels"
             if product_index is not None else
             f"taxonomy only: label scores refined by self-training over the source products "
             f"({settings.scoring.self_training_rounds} rounds)" if self_trained
             else "taxonomy only: label scores alone"),
            ("Confidence calibrated", _calibration_text(calibrator, product_index is not None, self_trained)),
        ]
        if loo is not None:
            rows += [("Leave-one-out products", loo.products),
                     ("Leave-one-out top-1 accuracy", round(loo.top1_accuracy, 4)),
                     ("Leave-one-out unflagged share", round(loo.unflagged_share, 4)),
                     ("Leave-one-out unflagged accuracy", round(loo.unflagged_accuracy, 4))]
        rows += [
            ("Rows needing review", int(mapping["needs_review"].sum())),
            ("Rows unflagged", unflagged.height),
            *([("Rows decided in earlier rounds", decided)] if decided else []),
            ("Flag counts", {f: int(flag_counts.get(f, 0)) for f in FLAG_ORDER}),
            ("Estimated accuracy of unflagged rows",
             round(float(unflagged["confidence"].mean()), 4)
             if unflagged.height and (calibrator.logistic or self_trained)
             else "not estimated (confidence not calibrated)" if not self_trained else "n/a (no row unflagged)"),
            ("Texts encoded (distinct)", int(encode_stats["encoded"])),
            *([("Texts read from the embedding cache", int(encode_stats["cached"]))] if cached else []),
            ("Encode seconds", round(float(encode_stats["seconds"]), 2)),
            ("Run seconds", round(seconds, 2)),
            ("Products per second (end to end)",
             round((source.n_records + (targets.catalog.n_records if targets.catalog else 0)) / max(seconds, 1e-9), 1)),
        ]
        return rows


DECIDED = "DECIDED"
"""The flags of a row a person decided in an earlier round (its category is the decision)."""
THIS_ROUND = "This round asks for"
LAST_ROUND = "Last round's answers showed"
LEARNED = "Learned from the decisions"


def _asking(questions: pl.DataFrame) -> str:
    """The Summary's line on this round's questions."""
    n, audits = questions.height, int(questions["audit"].sum())
    if not n:
        return "no answers: no open row left"
    return (f"{n} answers: the first {n} rows of the Review sheet (column 'question'): {n - audits} chosen to "
            f"teach the most (one per group of similar uncertain products, the most uncertain groups first) and "
            f"{audits} random checks of the suggestions. Decide them, then: taxmig review apply THIS.xlsx "
            f"--state DIR -o FINAL --next NEXT.xlsx maps every undecided row again with the answers")


def feedback_summary(feedback: Feedback, learned: FeedbackModel | None, questions: pl.DataFrame | None,
                     thresholds: Thresholds, chosen: Unflagging | None) -> list[tuple[str, Any]]:
    """The Summary rows of a round that learned from decisions (:mod:`migrate.mapping.feedback`)."""
    rows: list[tuple[str, Any]] = []
    if questions is not None:
        rows.append((THIS_ROUND, _asking(questions)))
    rows.append((LAST_ROUND, feedback.measured or "nothing measured: no row decision in the last round"))
    if learned is None:
        return rows
    decided = int((learned.decided >= 0).sum())
    info: dict[str, Any] = {"Round": feedback.round, "Products decided (kept as decided, flag DECIDED)": decided}
    if learned.fitted_on:
        info["Held-out top-1 of the decisions (each predicted without its own fold)"] = round(learned.held_out_top1, 4)
        info["Zero-shot top-1 of the same products"] = round(learned.zero_shot_top1, 4)
        if learned.calibration is not None:
            info["Confidence calibrated"] = learned.calibration.source
        if chosen is not None and chosen.threshold is not None:
            info["Unflagged when"] = (
                f"confidence >= {chosen.threshold:.4f}: {chosen.share:.1%} of the undecided rows, estimated precision "
                f"{chosen.estimated_precision:.3f} (target {thresholds.target_precision:g}; calibrated on "
                f"{chosen.checks} random checks answered, {chosen.measured})")
        elif chosen is not None:
            info["Unflagged when"] = f"never: every undecided row flagged ({chosen.reason})"
        else:
            info["Unflagged when"] = f"confidence >= {thresholds.min_confidence} (given)"
    else:
        info["Mix"] = "; ".join(learned.notes) or "zero-shot evidence alone"
    rows.append((LEARNED, info))
    if learned.fitted_on:
        rows.append((MIX_ITEM, {k: round(float(v), 3) for k, v in zip(FEEDBACK_FEATURES, learned.weights)}))
    return rows


TRADEOFF_ACCURACIES = (0.95, 0.90, 0.80)  # the trade-off the Summary shows (issue 14: e.g. 0.95 / 0.90 / 0.80)
TRADEOFF_SHARES = (0.10, 0.25, 0.50)      # and what the most confident tenth, quarter and half would give


def accept_tradeoff(confidence: np.ndarray, accuracies: tuple[float, ...] = TRADEOFF_ACCURACIES,
                    shares: tuple[float, ...] = TRADEOFF_SHARES) -> dict[str, str]:
    """What accepting the most confident rows would give: for each accuracy, how many rows have
    that mean confidence (the set's estimated accuracy) and the lowest confidence among them; for
    each share of rows, the set's estimated accuracy.

    >>> accept_tradeoff(np.array([0.99, 0.97, 0.9, 0.5]), (0.95, 0.8), (0.5,))
    {'estimated accuracy 0.95': '3 rows (75.0%), confidence 0.900 and up', 'estimated accuracy 0.8': '4 rows (100.0%), confidence 0.500 and up', 'the most confident 50% (2 rows)': 'estimated accuracy 0.980, confidence 0.970 and up'}
    """
    order = np.sort(np.asarray(confidence, dtype=np.float64))[::-1]
    if not len(order):
        return {}
    means = np.cumsum(order) / np.arange(1, len(order) + 1)
    out = {}
    for accuracy in accuracies:
        reach = np.flatnonzero(means >= accuracy - 1e-12)
        if not len(reach):
            out[f"estimated accuracy {accuracy:g}"] = "no set of rows reaches it"
            continue
        k = int(reach.max()) + 1
        out[f"estimated accuracy {accuracy:g}"] = (f"{k} rows ({k / len(order):.1%}), confidence "
                                                   f"{order[k - 1]:.3f} and up")
    for share in shares:
        k = max(1, int(round(share * len(order))))
        out[f"the most confident {share:.0%} ({k} rows)"] = (f"estimated accuracy {means[k - 1]:.3f}, confidence "
                                                           f"{order[k - 1]:.3f} and up")
    return out


def _at_a_glance(mapping: pl.DataFrame, unflagged: pl.DataFrame, estimated: bool,
                 target_precision: float) -> dict[str, Any]:
    """The first lines a reviewer reads: what can be accepted, what needs a look."""
    split = mapping.filter(pl.col("flags").str.contains("SOURCE_SPLIT"))["source_category"].n_unique()
    out: dict[str, Any] = {
        "Rows safe to accept (no flag)": unflagged.height,
        "Their estimated accuracy": round(float(unflagged["confidence"].mean()), 4)
        if unflagged.height and estimated else "n/a",
        "Rows to review (flagged; Review sheet)": mapping.height - unflagged.height,
    }
    if estimated and not unflagged.height and mapping.height:
        out["Why nothing is safe to accept"] = (
            f"no confidence threshold kept the target precision {target_precision:g} (see min_confidence on the "
            "Parameters sheet); 'Accepting the most confident rows' below shows what a lower bar would give")
    if estimated and mapping.height:
        out["Estimated accuracy of all rows (mean confidence)"] = round(float(mapping["confidence"].mean()), 4)
    if "source_category" in mapping.columns and mapping["source_category"].fill_null("").str.len_chars().sum():
        groups = mapping.group_by(pl.col("source_category").fill_null("")).agg(pl.col("needs_review").any())
        out["Source categories to review (Category decisions sheet)"] = (
            f"{int(groups['needs_review'].sum())} of {groups.height}: decide a whole category or a "
            "source -> target pair there, then fix the exceptions in Review")
    out["Source categories that split (rows flagged SOURCE_SPLIT)"] = split
    return out


def _calibration_text(calibrator: ConfidenceCalibrator, has_products: bool, self_trained: bool) -> str:
    """What the confidence column promises, in words for the Summary."""
    if calibrator.logistic:
        return "yes: leave-one-out on the target catalog"
    if self_trained:
        return ("estimated: a calibration fitted on public proxy tasks (zero-shot BigBasket and Instacart products "
                "onto their own taxonomies, answers known; bench/zeroshot_calibration.py). On a set left out of the "
                "fit its confidence was off by 0.05-0.09 on average (ECE): read it as a rough estimate and a sort "
                "order, not a promise per row")
    return "NO: confidence is the raw top score" + ("" if has_products else
                                                     "; pass --target-catalog with labelled products to calibrate")


def _min_confidence_text(settings: MigrationSettings, calibrator: ConfidenceCalibrator, loo: LeaveOneOut | None,
                         self_trained: bool) -> str:
    """Where the LOW_CONFIDENCE threshold came from, in words for the Summary."""
    if calibrator.logistic:
        return loo.min_confidence_source if loo is not None else "given"
    if self_trained:
        if settings.thresholds.min_confidence is not None:
            return "given"
        return ("not set: every row flagged. No threshold on the estimated confidence kept a precision on a "
                "taxonomy the calibration was not fitted on (bench/zeroshot_calibration.py); pass "
                "--min-confidence to leave rows above it unflagged, at your own measured risk")
    return "not used (not calibrated): min_raw_score applies"


def rejects_frame(source: list[Reject], target: list[Reject]) -> pl.DataFrame:
    """The Rejects table: every source and target row not mapped, with the reason."""
    return rejects_table([("source", source), ("target", target)])


def crosswalk_frame(mapping: pl.DataFrame) -> pl.DataFrame:
    """Source category -> target category: count, share of the source category, mean confidence."""
    if mapping.height == 0:
        return pl.DataFrame(schema={"source_category": pl.String, "target_category": pl.String, "count": pl.Int64,
                                    "share": pl.Float64, "mean_confidence": pl.Float64})
    return (mapping.group_by("source_category", "target_category")
            .agg(pl.len().cast(pl.Int64).alias("count"), pl.col("confidence").mean().round(4).alias("mean_confidence"))
            .with_columns((pl.col("count") / pl.col("count").sum().over("source_category")).round(4).alias("share"))
            .sort(["source_category", "count", "target_category"], descending=[False, True, False])
            .select(CROSSWALK_COLUMNS))


@dataclass
class Inputs:
    """The source catalog and the targets, read and validated."""

    source: Catalog
    targets: Targets


def read_inputs(settings: MigrationSettings) -> Inputs:
    """Read and check every input file; bad input fails here, before the model is loaded."""
    settings.validate()
    source = load_catalog(settings.source, role="source", id=settings.source_id, text=settings.source_text,
                          category=settings.source_category, encoding=settings.encoding)
    if len(source) == 0:
        examples = "; ".join(f"row {r.row}: {r.reason}" for r in source.rejects[:3])
        raise TaxmigError(f"{source.path}: none of its {source.n_records} rows can be mapped ({examples})",
                          hint="fix those rows, or name the right columns with --source-id/--source-text")
    return Inputs(source, load_targets(settings))


def run_migration(settings: MigrationSettings, migrator: Migrator | None = None,
                  output: str | Path | None = None) -> MigrationResult:
    """Read the inputs, load the model (unless a ``migrator`` is given) and run one migration;
    an ``output`` the mapping cannot fit (an .xlsx past Excel's rows) is refused before the model loads."""
    from migrate.core.files import check_fits

    inputs = read_inputs(settings)
    check_fits(output, len(inputs.source))
    migrator = migrator or Migrator.from_settings(settings)
    return migrator.run(settings, inputs)
