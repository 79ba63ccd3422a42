"""The Summary of a migration: what a reviewer reads first, what was read and how it was scored,
and, in a round of review, what the last round's answers showed and what was learned."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, replace
from typing import Any

import numpy as np
import polars as pl

from migrate.core.catalog import Catalog
from migrate.core.report import GUIDE, RunFacts, summary_rows
from migrate.mapping.calibration import ConfidenceCalibrator, LeaveOneOut
from migrate.mapping.feedback import FEATURES as FEEDBACK_FEATURES
from migrate.mapping.feedback import MIX_ITEM, Feedback, FeedbackModel, Unflagging
from migrate.mapping.flags import DECIDED, FLAG_ORDER, Thresholds
from migrate.mapping.inputs import Targets
from migrate.mapping.labels import CategoryLabels
from migrate.mapping.settings import MigrationSettings

TARGET_SIDE = "Target side (classifier, calibration)"
TARGET_SIDE_FITTED = "fitted in this run, kept in the state"
TARGET_SIDE_READ = "read from the state: target catalog, model and settings unchanged"
TARGET_SIDE_CACHE_FITTED = "fitted in this run, kept in the user's cache (a later run onto this target reads it)"
TARGET_SIDE_CACHE_READ = "read from the user's cache: target catalog, model and settings unchanged"
SCORES_KEPT = "Products whose scores were kept (inputs unchanged since the last night)"
THIS_ROUND = "This round asks for"
LAST_ROUND = "Last round's answers showed"
LEARNED = "Learned from the decisions"


TAXONOMY_MERGED = "Taxonomy paths merged (they differ only in case, spacing or Unicode form)"


def merged_text(merged: list[tuple[str, str]], show: int = 20) -> str:
    """The Summary's line on merged taxonomy spellings: each one and the category it joined."""
    shown = "; ".join(f"'{spelling}' -> '{kept}'" for spelling, kept in merged[:show])
    return f"{len(merged)}: {shown}" + (f"; and {len(merged) - show} more" if len(merged) > show else "")


EVERY_ROW_FLAGGED = "none: every row flagged (no confidence threshold was chosen or reached)"


def shown_thresholds(thresholds: dict[str, Any]) -> dict[str, Any]:
    """The thresholds as the Summary shows them: a ``min_confidence`` above 1 (the rule that flags
    every row) in words, not as its internal number.

    >>> shown_thresholds({"min_confidence": 1.000000001, "min_margin": 0.1})["min_confidence"][:5]
    'none:'
    """
    out = dict(thresholds)
    if isinstance(out.get("min_confidence"), (int, float)) and out["min_confidence"] > 1:
        out["min_confidence"] = EVERY_ROW_FLAGGED
    return out


def migration_facts(facts: RunFacts, *, source: Catalog, targets: Targets, mapping: pl.DataFrame,
                    thresholds: Thresholds, calibration: str, encode_stats: dict[str, float], cached: bool,
                    seconds: float) -> RunFacts:
    """``facts`` (its run id and start) completed with a migration's counts; ``mapping`` needs the
    columns flags and needs_review; ``encode_stats``: the embedder's counts (encoded, cached,
    seconds), ``cached``: whether an embedding cache was used."""
    decided = int((mapping["flags"] == DECIDED).sum())
    model_rows = mapping.filter(pl.col("flags") != DECIDED)
    return replace(facts, rows=source.n_records, mapped=mapping.height, rejected=len(source.rejects),
                   needs_review=int(model_rows["needs_review"].sum()),
                   unflagged=int((~model_rows["needs_review"]).sum()), decided=decided,
                   target_categories=len(targets.categories), calibration=calibration,
                   thresholds=thresholds.as_dict(), encoded=int(encode_stats["encoded"]),
                   cached=int(encode_stats["cached"]) if cached else None,
                   encode_seconds=float(encode_stats["seconds"]), seconds=seconds)


def calibration_text(calibrator: ConfidenceCalibrator, has_products: bool, self_trained: bool) -> str:
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


def migration_summary(facts: RunFacts, settings: MigrationSettings, source: Catalog, targets: Targets,
                      mapping: pl.DataFrame, calibrator: ConfidenceCalibrator, loo: LeaveOneOut | None,
                      labels: CategoryLabels, product_index) -> list[tuple[str, Any]]:
    """The Summary's (label, value) rows of a migration whose :func:`migration_facts` are ``facts``;
    ``mapping`` needs the columns flags, needs_review, confidence and source_category."""
    self_trained = product_index is None and settings.scoring.self_training_rounds > 0
    thresholds = Thresholds(**facts.thresholds)
    flag_counts = Counter(f for fl in mapping["flags"].to_list() for f in fl.split(",") if f)
    decided = facts.decided
    mapping = mapping.filter(pl.col("flags") != DECIDED)  # what follows is the model's rows
    unflagged = mapping.filter(~pl.col("needs_review"))
    glance = _at_a_glance(mapping, unflagged, calibrator.logistic or self_trained, thresholds.target_precision)
    if decided:
        glance = {"Rows a person decided (kept as decided, flag DECIDED)": decided, **glance}
    inputs: list[tuple[str, Any]] = [
        ("Source file", str(source.path)),
        ("Source rows", facts.rows),
        ("Source rows mapped", facts.mapped),
        ("Source rows rejected", facts.rejected),
        ("Source columns", source.describe()),
    ]
    if targets.catalog is not None:
        inputs += [("Target catalog", str(targets.catalog.path)),
                   ("Target catalog rows", targets.catalog.n_records),
                   ("Target products used", len(targets.product_rows)),
                   ("Target rows rejected", len(targets.rejects)),
                   ("Target columns", targets.catalog.describe())]
    if targets.taxonomy is not None:
        inputs += [("Target taxonomy", str(targets.taxonomy.path)),
                   ("Taxonomy categories", len(targets.taxonomy))]
        if targets.taxonomy.merged:
            inputs.append((TAXONOMY_MERGED, merged_text(targets.taxonomy.merged)))
    inputs += [("Target categories", facts.target_categories), ("Leaves only", settings.leaves_only)]
    method: list[tuple[str, Any]] = [
        ("Product index", product_index.kind if product_index is not None else "none (taxonomy only)"),
        ("Label scoring", labels.describe()),
        ("Scoring", asdict(settings.scoring)),
        ("Thresholds", shown_thresholds(facts.thresholds)),
        ("min_confidence", _min_confidence_text(settings, calibrator, loo, self_trained)),
        ("Mapping method", "labelled target products: neighbour, lexical and classifier votes with the labels"
         if product_index is not None else
         f"taxonomy only: label scores refined by self-training over the source products "
         f"({settings.scoring.self_training_rounds} rounds)" if self_trained
         else "taxonomy only: label scores alone"),
        ("Confidence calibrated", facts.calibration),
    ]
    if loo is not None:
        method += [("Leave-one-out products", loo.products),
                   ("Leave-one-out top-1 accuracy", round(loo.top1_accuracy, 4)),
                   ("Leave-one-out unflagged share", round(loo.unflagged_share, 4)),
                   ("Leave-one-out unflagged accuracy", round(loo.unflagged_accuracy, 4))]
    outcome: list[tuple[str, Any]] = [
        ("Rows needing review", facts.needs_review),
        ("Rows unflagged", facts.unflagged),
        *([("Rows decided in earlier rounds", decided)] if decided else []),
        ("Flag counts", {f: int(flag_counts.get(f, 0)) for f in FLAG_ORDER}),
        ("Estimated accuracy of unflagged rows",
         round(float(unflagged["confidence"].mean()), 4)
         if unflagged.height and (calibrator.logistic or self_trained)
         else "not estimated (confidence not calibrated)" if not self_trained else "n/a (no row unflagged)"),
    ]
    products = source.n_records + (targets.catalog.n_records if targets.catalog else 0)
    cost = [("Products per second (end to end)", round(products / max(facts.seconds, 1e-9), 1))]
    lead = ([("Accepting the most confident rows", accept_tradeoff(mapping["confidence"].to_numpy()))]
            if calibrator.logistic or self_trained else [])
    return summary_rows(facts, glance=glance, lead=lead, inputs=inputs, method=method, outcome=outcome, cost=cost)


def asking(questions: pl.DataFrame) -> str:
    """The Summary's line on this round's questions."""
    n, audits = questions.height, int(questions["audit"].sum())
    if not n:
        return "no answers: no open row left"
    return (f"{n} answers: the first {n} rows of the Review sheet (column 'question'): {n - audits} chosen to "
            f"teach the most (one per group of similar uncertain products, the most uncertain groups first) and "
            f"{audits} random checks of the suggestions. Decide them, then taxmig review apply --next (the "
            f"command under '{GUIDE}') maps every undecided row again with the answers")


def feedback_summary(feedback: Feedback, learned: FeedbackModel | None, questions: pl.DataFrame | None,
                     thresholds: Thresholds, chosen: Unflagging | None) -> list[tuple[str, Any]]:
    """The Summary rows of a round that learned from decisions (:mod:`migrate.mapping.feedback`)."""
    rows: list[tuple[str, Any]] = []
    if questions is not None:
        rows.append((THIS_ROUND, asking(questions)))
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
