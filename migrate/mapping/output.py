"""Write a :class:`MigrationResult` as .xlsx, .csv or .parquet, atomically and never over an
existing file unless asked.

- ``.xlsx``: the review workbook (Summary, Mapping, Review, Crosswalk, Rejects).
- ``.csv`` / ``.parquet``: the mapping table, plus ``<name>.rejects.<ext>`` and
  ``<name>.summary.json`` beside it, so no input row is lost in machine formats either.
  CSV text cells that could run as spreadsheet formulas get a leading apostrophe.

>>> write_output(result, Path("out/mapping.xlsx"), overwrite=True)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from migrate.core.files import check_fits, check_output, output_paths, write_atomic, write_table_file
from migrate.mapping.result import MigrationResult

log = logging.getLogger(__name__)


def write_output(result: MigrationResult, path: str | Path, *, overwrite: bool = False) -> list[Path]:
    """Write ``result`` in the format ``path``'s extension names; returns the files written."""
    path = check_output(path, overwrite=overwrite)
    suffix = path.suffix.lower()
    check_fits(path, result.mapping.height)
    if suffix == ".xlsx":
        from migrate.mapping.workbook import write_workbook

        write_atomic(path, lambda tmp: write_workbook(result, tmp))
        return [path]
    _, rejects_path, summary_path = output_paths(path)
    write_table_file(result.mapping, path, "Mapping")
    write_table_file(result.rejects, rejects_path, "Rejects")
    write_atomic(summary_path, lambda tmp: tmp.write_text(json.dumps(result.summary_json(), indent=2, default=str)))
    return [path, rejects_path, summary_path]
