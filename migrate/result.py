"""What a migration produces, independent of the file format it is written in."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import polars as pl

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


REJECT_COLUMNS = ["file", "row", "id", "reason", "text"]
ROW_KEY_COLUMN = "row_key"


def row_key(run_id: str, source_id: str, source_text: str) -> str:
    """A short hash tying a review row to its run, product id and text.

    The review workbook carries it in a hidden column; ``taxmig review apply`` recomputes it to
    catch a product id or text edited after export (a decision would land on the wrong product).

    >>> row_key("run1", "42", "Sugar 1 kg") == row_key("run1", "42", "Sugar 1 kg") != row_key("run1", "43", "Sugar 1 kg")
    True
    """
    return hashlib.sha1(f"{run_id}\x00{source_id}\x00{source_text}".encode("utf-8")).hexdigest()[:12]
CROSSWALK_COLUMNS = ["source_category", "target_category", "count", "share", "mean_confidence"]


@dataclass
class MigrationResult:
    """The mapping of one run.

    - ``mapping``: one row per mapped source product (:data:`MAPPING_COLUMNS`), in file order.
    - ``rejects``: every input row not mapped (source and target files), with the reason.
    - ``crosswalk``: source category -> target category counts, shares and mean confidence.
    - ``summary``: ordered (label, value) pairs for the Summary sheet and the JSON sidecar.
    - ``target_categories``: the valid decisions a reviewer may pick.
    """

    mapping: pl.DataFrame
    rejects: pl.DataFrame
    crosswalk: pl.DataFrame
    summary: list[tuple[str, Any]]
    target_categories: list[str]
    thresholds: dict[str, float] = field(default_factory=dict)
    calibrated: bool = False

    def review(self) -> pl.DataFrame:
        """Flagged rows, lowest confidence first."""
        return self.mapping.filter(pl.col("needs_review")).sort("confidence")

    def summary_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.summary}

    @property
    def run_id(self) -> str:
        return str(self.summary_dict().get("Run id", ""))
