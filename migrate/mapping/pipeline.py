"""The migration: catalogs in, a :class:`~migrate.mapping.result.MigrationResult` out.

>>> result = run_migration(MigrationSettings(source="sample_catalogs/bigbasket_sample.csv",
...                        target_taxonomy="sample_catalogs/google_taxonomy_subset.txt"))  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl

from migrate.core.embedding import Embedder
from migrate.core.embedding_cache import EmbeddingCache, LayeredCache, open_category_cache
from migrate.core.encoder import Encoder, load_model
from migrate.core.progress import Progress, display_for
from migrate.core.report import RunFacts
from migrate.mapping.calibration import ConfidenceCalibrator
from migrate.mapping.feedback import Feedback, FeedbackModel, Unflagging, unflag_threshold
from migrate.mapping.fitted_target import FittedTargetStore, UserTargetSides
from migrate.mapping.flags import DECIDED, compute_flags
from migrate.mapping.inputs import Inputs, Targets, embedding_texts, read_inputs, rejects_frame, rows_of
from migrate.mapping.kept_scores import KeptScores, row_keys, scoring_key
from migrate.mapping.labels import CategoryLabels
from migrate.mapping.questions import choose_questions, default_ask
from migrate.mapping.report import (SCORES_KEPT, TARGET_SIDE, TARGET_SIDE_CACHE_FITTED, TARGET_SIDE_CACHE_READ,
                                    TARGET_SIDE_FITTED, TARGET_SIDE_READ, THIS_ROUND, asking, calibration_text, feedback_summary, migration_facts, migration_summary)
from migrate.mapping.result import MigrationResult
from migrate.mapping.settings import MigrationSettings
from migrate.mapping.tables import crosswalk_frame, flag_inputs, scored_frame, source_columns, with_flags
from migrate.mapping.target_side import TargetSide, fit_target_side, score_source
from migrate.mapping.taxonomy_side import SELF_TRAINING_CONTEXT, score_taxonomy
from migrate.mapping.zeroshot import self_training_context

log = logging.getLogger(__name__)

__all__ = ["DECIDED", "Inputs", "Migrator", "Targets", "read_inputs", "run_migration"]


class Migrator:
    """Holds the encoder between runs (tests and the nightly job load the model once)."""

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder

    @classmethod
    def from_settings(cls, settings: MigrationSettings, *, lazy: bool = False) -> "Migrator":
        return cls(load_model(settings.encoder, lazy=lazy))

    def fit_target_side(self, settings: MigrationSettings, targets: Targets, embedder: Embedder, *,
                        source_has_categories: bool, fitted_targets: FittedTargetStore | None = None) -> TargetSide:
        """The labelled target side under this encoder (:func:`~migrate.mapping.target_side.fit_target_side`)."""
        return fit_target_side(settings, targets, embedder, model_fingerprint=self.encoder.fingerprint,
                               source_has_categories=source_has_categories, fitted_targets=fitted_targets)

    def run(self, settings: MigrationSettings, inputs: "Inputs | None" = None, *,
            cache: EmbeddingCache | None = None, fitted_targets: FittedTargetStore | None = None,
            kept: KeptScores | None = None, keep_scores: bool = False,
            feedback: Feedback | None = None, run_id: str | None = None) -> MigrationResult:
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
        once the random checks among them vouch for a threshold (:func:`~migrate.mapping.feedback.unflag_threshold`);
        ``run_id``: the run's id (a new one when not given). Its stages report to the progress
        display opened around it (:func:`~migrate.core.progress.display_for`), else to one of its own."""
        with display_for(settings.progress) as display:
            return self._run(settings, inputs, display, cache=cache, fitted_targets=fitted_targets, kept=kept,
                             keep_scores=keep_scores, feedback=feedback, run_id=run_id)

    def _run(self, settings: MigrationSettings, inputs: "Inputs | None", display: Progress, *,
             cache: EmbeddingCache | None, fitted_targets: FittedTargetStore | None, kept: KeptScores | None,
             keep_scores: bool, feedback: Feedback | None, run_id: str | None) -> MigrationResult:
        started = time.perf_counter()
        when = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        inputs = inputs or read_inputs_shown(settings, display)
        source, targets = inputs.source, inputs.targets
        embedder = Embedder(self.encoder.model, batch_size=settings.encoder.batch_size, progress=display,
                            cache=cache, cache_key=self.encoder.fingerprint)
        category_cache = None
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
        user_sides = None  # without a state's store, the user's cache keeps the fitted target side
        if targets.catalog is not None and fitted_targets is None and settings.target_cache:
            user_sides = UserTargetSides()
        if targets.catalog is not None:  # the target side first, then the source chunk by chunk
            side = self.fit_target_side(settings, targets, embedder, source_has_categories=source.has_categories,
                                        fitted_targets=fitted_targets if fitted_targets is not None else user_sides)
            labels, calibrator, loo = side.labels, side.calibrator, side.loo
            if len(todo):
                part = rows_of(source, todo)
                scores = score_source(part, [source_texts[i] for i in todo], embedder, side, display)
                scored_now = scored_frame(part, targets, scores, side.confidence(scores), side.target_texts)
        else:  # a taxonomy alone: the source products teach each other (self-training), all at once
            labels = CategoryLabels(targets.categories, params.label_ancestor_weight,
                                    by_level=not (settings.category_context and source.has_categories),
                                    templates=params.zero_shot_label_templates)
            src_vec = embedder.encode(source_texts, label="source texts", stage="encoding products")
            # a taxonomy's category texts are the same every run: the user's category cache keeps them
            category_cache = open_category_cache(self.encoder.fingerprint) if settings.category_cache else None
            shared = (LayeredCache(cache, category_cache) if cache is not None and category_cache is not None
                      else category_cache)
            try:
                labels.fit(embedder.encode(labels.texts, label="category texts", cache=shared,
                                           stage="encoding categories"))
            finally:
                if category_cache is not None:
                    category_cache.close()
            # hub removal (migrate/mapping/labels.py): no category draws every product
            labels.center(src_vec, params.zero_shot_label_centering)
            calibrator, loo = ConfidenceCalibrator(), None
            if len(todo) == len(source):
                # zero decisions: exactly the run without feedback (its Summary still says what was measured)
                teach = feedback if feedback is not None and feedback.decisions else None
                scored_now, learned = score_taxonomy(source, targets, src_vec, labels, calibrator, params,
                                                           display, feedback=teach, seed=settings.seed)
                if learned is not None:
                    decided = learned.decided >= 0
            elif len(todo):  # the kept products keep their scores: self-train the others among a context
                context = self_training_context(src_vec, todo, size=SELF_TRAINING_CONTEXT,
                                                neighbours=2 * params.self_training_neighbours, seed=settings.seed)
                keep = todo
                if feedback is not None and feedback.decisions:  # the decided products teach tonight's too
                    taught = np.flatnonzero(feedback.arrays(source.ids, targets.categories)[0] >= 0)
                    context, keep = np.union1d(context, taught), np.union1d(todo, taught)
                scored_now, learned = score_taxonomy(
                    rows_of(source, context), targets, src_vec[context], labels, calibrator, params, display,
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
        calibration = calibration_text(calibrator, side is not None, self_trained)
        if learned is not None and learned.calibration is not None:
            calibration = f"yes: {learned.calibration.source}"
        facts = migration_facts(RunFacts("migrate", **({"run_id": run_id} if run_id else {}), started=when,
                                         model=self.encoder.name, fingerprint=self.encoder.fingerprint),
                                source=source, targets=targets, mapping=mapping, thresholds=thresholds,
                                calibration=calibration, encode_stats=embedder.stats,
                                cached=embedder.cache is not None or category_cache is not None, seconds=seconds)
        facts.stage_seconds = display.seconds_by_stage()
        if kept is not None:
            facts.scores_kept = int(len(source) - len(todo))
        if side is not None and fitted_targets is not None:
            facts.target_side = TARGET_SIDE_FITTED if side.fitted_here else TARGET_SIDE_READ
        elif side is not None and user_sides is not None:
            facts.target_side = TARGET_SIDE_CACHE_FITTED if side.fitted_here else TARGET_SIDE_CACHE_READ
        summary = migration_summary(facts, settings, source, targets, mapping, calibrator, loo, labels,
                                    side.product_index if side else None)
        if feedback is not None:
            summary[0:0] = feedback_summary(feedback, learned, questions, thresholds, learned_threshold)
        elif questions is not None:
            summary[0:0] = [(THIS_ROUND, asking(questions))]
        if kept is not None:
            summary.append((SCORES_KEPT, facts.scores_kept))
        if facts.target_side is not None:
            summary.append((TARGET_SIDE, facts.target_side))
        return MigrationResult(mapping=mapping, rejects=rejects, crosswalk=crosswalk_frame(mapping), summary=summary,
                               facts=facts,
                               target_categories=list(targets.categories),
                               thresholds=thresholds.as_dict(), calibrated=calibrator.logistic,
                               kept_scores=KeptScores.from_scored(key, scored, keys) if keep_scores else None,
                               questions=questions)



def read_inputs_shown(settings: MigrationSettings, display: Progress) -> Inputs:
    """:func:`~migrate.mapping.inputs.read_inputs` as the run's "reading" stage (counting the
    source's rows)."""
    with display.stage("reading", unit="rows") as stage:
        inputs = read_inputs(settings)
        stage.update(inputs.source.n_records)
    return inputs


def load_shown(settings: MigrationSettings, display: Progress) -> Migrator:
    """:meth:`Migrator.from_settings` as the run's "loading the model" stage (seconds of imports
    and weights that were silent)."""
    with display.stage("loading the model", total=1, unit="model") as stage:
        migrator = Migrator.from_settings(settings)
        stage.update(1)
    return migrator


def run_migration(settings: MigrationSettings, migrator: Migrator | None = None,
                  output: str | Path | None = None) -> MigrationResult:
    """Read the inputs, load the model (unless a ``migrator`` is given) and run one migration;
    an ``output`` the mapping cannot fit (an .xlsx past Excel's rows) is refused before the model loads."""
    from migrate.core.files import check_fits

    with display_for(settings.progress) as display:
        inputs = read_inputs_shown(settings, display)
        check_fits(output, len(inputs.source))
        migrator = migrator or load_shown(settings, display)
        return migrator.run(settings, inputs)
