"""What a match run produces, independent of the file format it is written in: its tables and
their columns, the threshold and score it used, and its facts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from migrate.core.report import RunFacts, summary_json
from migrate.matching.features import PairContext
from migrate.matching.scoring import MatchThreshold, PairScorer
from migrate.matching.unsupervised import OverlapEstimate

MATCH_COLUMNS = [
    "left_row", "left_id", "left_text", "right_id", "right_text", "score", "is_match", "needs_review", "flags",
    "cosine_similarity", "title_similarity", "code_agreement", "brand_agreement",
    "alt1_right_id", "alt1_right_text", "alt1_score", "alt2_right_id", "alt2_right_text", "alt2_score",
]
CLUSTER_COLUMNS = ["cluster_id", "cluster_size"]
UNMATCHED_COLUMNS = ["right_row", "right_id", "right_text", "best_left_id", "best_score"]
CLUSTER_SHEET_COLUMNS = ["cluster_id", "size", "ids", "texts"]
N_ALTERNATIVES = 2
"""Alternative candidates per left product in the matches table (``alt1_*``, ``alt2_*``)."""


def match_dtype(column: str) -> pl.DataType:
    """The polars type of a column of :data:`MATCH_COLUMNS`.

    >>> match_dtype("left_row"), match_dtype("alt2_score"), match_dtype("flags")
    (Int64, Float64, String)
    """
    if column == "left_row":
        return pl.Int64
    if column in ("is_match", "needs_review"):
        return pl.Boolean
    if column in ("score", "cosine_similarity", "title_similarity", "code_agreement", "brand_agreement") \
            or column.endswith("_score"):
        return pl.Float64
    return pl.String


@dataclass
class ScoredCandidates:
    """All scored candidate pairs of a run (flat arrays), and the pair context they came from."""

    left: np.ndarray
    right: np.ndarray
    scores: np.ndarray
    features: np.ndarray
    context: PairContext = field(repr=False)


@dataclass
class MatchResult:
    """What a match run produces, independent of the file format.

    - ``matches``: one row per usable left product (:data:`MATCH_COLUMNS`, plus
      :data:`CLUSTER_COLUMNS` with ``within``), in file order;
    - ``rejects``: every input row not matched (left, right and labels files) with the reason;
    - ``unmatched_right``: right products no left product matched (two catalogs);
    - ``clusters``: duplicate clusters of 2+ products (``within``);
    - ``summary``: ordered (label, value) pairs for the Summary sheet and the JSON sidecar
      (:mod:`migrate.matching.report`);
    - ``facts``: the run's numbers, for code to read by attribute (never from ``summary``'s labels).
    """

    matches: pl.DataFrame
    rejects: pl.DataFrame
    unmatched_right: pl.DataFrame | None
    clusters: pl.DataFrame | None
    summary: list[tuple[str, Any]]
    facts: RunFacts
    threshold: MatchThreshold
    scorer: PairScorer
    within: bool = False
    estimate: OverlapEstimate | None = None
    """Without labels (two catalogs, one to one): the estimated overlap and match probabilities."""

    def review(self) -> pl.DataFrame:
        """Flagged rows, the closest to the threshold first."""
        return (self.matches.filter(pl.col("needs_review"))
                .with_columns((pl.col("score") - self.threshold.value).abs().alias("_d")).sort("_d").drop("_d"))

    def summary_dict(self) -> dict[str, Any]:
        """The Summary's rows by label (what the sheet shows; code reads :attr:`facts`)."""
        return dict(self.summary)

    def summary_json(self) -> dict[str, Any]:
        """The JSON summary: the Summary's rows and the facts (:func:`~migrate.core.report.summary_json`)."""
        return summary_json(self.facts, self.summary)

    @property
    def run_id(self) -> str:
        return self.facts.run_id
