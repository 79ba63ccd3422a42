"""The Rejects table every command writes: one row per input row that was not used, with why."""

from __future__ import annotations

from typing import Any, Iterable

import polars as pl


REJECT_COLUMNS = ["file", "row", "id", "reason", "text"]
REJECT_SCHEMA = {"file": pl.String, "row": pl.Int64, "id": pl.String, "reason": pl.String, "text": pl.String}


def rejects_table(files: Iterable[tuple[str, Iterable[Any]]]) -> pl.DataFrame:
    """The Rejects table of every command: ``files`` are (file label, its
    :class:`~migrate.core.readers.Reject` rows), e.g. ``[("source", ...), ("target", ...)]``."""
    rows = [(label, r.row, r.id, r.reason, r.text) for label, rejects in files for r in rejects]
    return pl.DataFrame(rows, schema=REJECT_SCHEMA, orient="row").select(REJECT_COLUMNS)
