"""What a migration produces, independent of the file format it is written in."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import polars as pl

from migrate.core.report import RunFacts, summary_json
from migrate.mapping.kept_scores import KeptScores

MAPPING_COLUMNS = [
    "source_row", "source_id", "source_text", "source_category",
    "target_category", "target_id", "confidence", "margin", "needs_review", "flags",
    "alt1_category", "alt1_score", "alt2_category", "alt2_score",
    "score", "nearest_target", "nearest_similarity",
]


def mapping_dtype(column: str) -> pl.DataType:
    """The polars type of a mapping column (alternatives beyond alt2 follow the same pattern)."""
    if column == "source_row":
        return pl.Int64
    if column == "needs_review":
        return pl.Boolean
    if column in ("confidence", "margin", "score", "nearest_similarity") or column.endswith("_score"):
        return pl.Float64
    return pl.String


CROSSWALK_COLUMNS = ["source_category", "target_category", "count", "share", "mean_confidence"]


@dataclass
class MigrationResult:
    """The mapping of one run.

    - ``mapping``: one row per mapped source product (:data:`MAPPING_COLUMNS`), in file order.
    - ``rejects``: every input row not mapped (source and target files), with the reason.
    - ``crosswalk``: source category -> target category counts, shares and mean confidence.
    - ``summary``: ordered (label, value) pairs for the Summary sheet and the JSON sidecar.
    - ``facts``: the run's numbers, for code to read (:class:`~migrate.core.report.RunFacts`).
    - ``target_categories``: the valid decisions a reviewer may pick.
    - ``kept_scores``: the scores to start the next night from (:mod:`migrate.mapping.kept_scores`).
    """

    mapping: pl.DataFrame
    rejects: pl.DataFrame
    crosswalk: pl.DataFrame
    summary: list[tuple[str, Any]]
    target_categories: list[str]
    facts: RunFacts
    thresholds: dict[str, float] = field(default_factory=dict)
    calibrated: bool = False
    kept_scores: KeptScores | None = None  # when the run was asked to keep them (the nightly job)
    questions: pl.DataFrame | None = None
    """Onto a taxonomy: the rows this round asks a person about (``source_id``, ``question`` 1..N,
    ``why``, ``audit``), in asking order (:func:`migrate.mapping.questions.choose_questions`)."""

    def review(self) -> pl.DataFrame:
        """Flagged rows in the order that saves a reviewer time: the questions first, in their
        order (with a ``question`` column), then :func:`review_order`."""
        ordered = review_order(self.mapping)
        if self.questions is None or not self.questions.height:
            return ordered
        asked = self.questions.select("source_id", pl.format("{} ({})", "question", "why").alias("question"),
                                      pl.col("question").alias("_rank"))
        return (ordered.join(asked, on="source_id", how="left", maintain_order="left")
                .with_row_index("_order").sort(pl.col("_rank").fill_null(2 ** 62), "_order")
                .drop("_rank", "_order"))

    def summary_dict(self) -> dict[str, Any]:
        """The Summary's rows by label (what the sheet shows; code reads :attr:`facts`)."""
        return {k: v for k, v in self.summary}

    def summary_json(self) -> dict[str, Any]:
        """The JSON summary: the Summary's rows and the facts (:func:`~migrate.core.report.summary_json`)."""
        return summary_json(self.facts, self.summary)

    @property
    def run_id(self) -> str:
        return self.facts.run_id


def review_order(mapping: pl.DataFrame) -> pl.DataFrame:
    """Flagged rows, grouped by source category: the groups with the most flagged rows first (ties:
    the least confident first); inside a group, the rows whose target differs from the group's
    most common target first (the exceptions to a category-wide decision), then lowest confidence
    first. Without source categories: lowest confidence first.

    >>> m = pl.DataFrame({"source_category": ["A", "A", "A", "B"], "target_category": ["x", "x", "y", "z"],
    ...                   "confidence": [0.2, 0.1, 0.9, 0.05], "needs_review": [True, True, True, True]})
    >>> review_order(m)["confidence"].to_list()
    [0.9, 0.1, 0.2, 0.05]
    """
    flagged = mapping.filter(pl.col("needs_review"))
    if "source_category" not in mapping.columns or not mapping["source_category"].fill_null("").str.len_chars().sum():
        return flagged.sort("confidence")
    group = pl.col("source_category").fill_null("")
    majority = (mapping.with_columns(_group=group).group_by("_group", "target_category").len()
                .sort(["_group", "len", "target_category"], descending=[False, True, False])
                .group_by("_group", maintain_order=True).first()
                .select("_group", pl.col("target_category").alias("_majority")))
    return (flagged.with_columns(_group=group)
            .join(majority, on="_group", how="left")
            .with_columns(_flagged=pl.len().over("_group"), _mean=pl.col("confidence").mean().over("_group"),
                          _agrees=(pl.col("target_category") == pl.col("_majority")).fill_null(False))
            .sort(["_flagged", "_mean", "_group", "_agrees", "confidence"],
                  descending=[True, False, False, False, False])
            .drop("_group", "_majority", "_flagged", "_mean", "_agrees"))
