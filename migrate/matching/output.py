"""Write a :class:`~migrate.matching.result.MatchResult` as .xlsx, .csv or .parquet, atomically, never over an
existing file unless asked (the same rules as ``migrate``'s outputs).

- ``.xlsx``, the review workbook: Summary, Matches (every left product, a ``decision`` drop-down
  and a ``reviewer_note``, a hidden ``row_key``), Review (flagged rows, closest to the threshold
  first), then Clusters (``within``) or Unmatched right (two catalogs), and Rejects.
- ``.csv`` / ``.parquet``: the matches table, with ``NAME.rejects.EXT``, ``NAME.summary.json`` (the
  Summary's rows and, under ``"facts"``, the run's numbers by name) and
  (two catalogs) ``NAME.unmatched_right.EXT`` beside it.
Text cells that could run as spreadsheet formulas are quote-prefixed (xlsx) or get a leading
``'`` (csv).

>>> write_match_output(result, Path("out/matches.xlsx"), overwrite=True)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import polars as pl
from openpyxl import Workbook
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.datavalidation import DataValidation
from openpyxl.worksheet.worksheet import Worksheet

from migrate.core.cells import set_text
from migrate.core.files import atomic_path, check_output, write_table_file
from migrate.core.hashing import ROW_KEY_COLUMN, row_key
from migrate.core.rejects import REJECT_COLUMNS
from migrate.core.sheets import (ACCEPT, DECISION_COLUMN, HEADER_FONT, NOTE_COLUMN, column_index, fit_print_width,
                            highlight_flagged, save_workbook, write_summary, write_table)
from migrate.errors import OutputExistsError
from migrate.matching.result import CLUSTER_SHEET_COLUMNS, MATCH_COLUMNS, UNMATCHED_COLUMNS, MatchResult

log = logging.getLogger(__name__)

DECISIONS = (ACCEPT, "MATCH", "NO MATCH", "ALT1 IS THE MATCH", "ALT2 IS THE MATCH")
"""The drop-down: keep the model's call, overrule it, or pick an alternative candidate."""


def match_output_paths(path: Path, *, within: bool) -> list[Path]:
    """Every file a write to ``path`` creates."""
    suffix = path.suffix.lower()
    if suffix == ".xlsx":
        return [path]
    stem = path.with_suffix("")
    paths = [path, Path(f"{stem}.rejects{suffix}"), Path(f"{stem}.summary.json")]
    return paths if within else [*paths, Path(f"{stem}.unmatched_right{suffix}")]


def check_match_output(path: str | Path, *, overwrite: bool, within: bool) -> Path:
    """Validate ``path`` before any work: a known format, and no existing file unless ``overwrite``."""
    path = check_output(path, overwrite=overwrite)
    if not overwrite:
        for existing in match_output_paths(path, within=within):
            if existing.exists():
                raise OutputExistsError(existing)
    return path


def write_match_output(result: MatchResult, path: str | Path, *, overwrite: bool = False) -> list[Path]:
    """Write ``result`` in the format ``path``'s extension names; returns the files written."""
    path = check_match_output(path, overwrite=overwrite, within=result.within)
    if path.suffix.lower() == ".xlsx":
        with atomic_path(path) as tmp:
            write_match_workbook(result, tmp)
        log.info("wrote %s", path)
        return [path]
    paths = match_output_paths(path, within=result.within)
    write_table_file(result.matches, paths[0], "Matches")
    write_table_file(result.rejects, paths[1], "Rejects")
    with atomic_path(paths[2]) as tmp:
        tmp.write_text(json.dumps(result.summary_json(), indent=2, default=str))
    if not result.within:
        write_table_file(result.unmatched_right, paths[3], "Unmatched right")
    return paths


def write_match_workbook(result: MatchResult, path: Path) -> None:
    """The review workbook at exactly ``path`` (no temp file, no overwrite check)."""
    wb = Workbook()
    wb.remove(wb.active)
    summary = wb.create_sheet("Summary")
    write_summary(summary, result.summary)
    set_text(summary.cell(1, 1), "taxmig match summary")
    fit_print_width(summary)  # printed, Item and Value on one page (as migrate's Summary)
    for name, frame in (("Matches", result.matches), ("Review", result.review())):
        _review_table(wb.create_sheet(name), frame, result.run_id)
    if result.within:
        write_table(wb.create_sheet("Clusters"), result.clusters, CLUSTER_SHEET_COLUMNS)
    else:
        write_table(wb.create_sheet("Unmatched right"), result.unmatched_right, UNMATCHED_COLUMNS)
    write_table(wb.create_sheet("Rejects"), result.rejects, REJECT_COLUMNS)
    save_workbook(wb, path)


def _review_table(ws: Worksheet, frame: pl.DataFrame, run_id: str) -> None:
    """Rows, then ``decision`` (drop-down) and ``reviewer_note``, then a hidden ``row_key`` tying
    each row to its run and (left id, right id) pair."""
    write_table(ws, frame, MATCH_COLUMNS, freeze="D2", extra=(DECISION_COLUMN, NOTE_COLUMN))
    _decision_validation(ws, column_index(ws, DECISION_COLUMN), frame.height)
    highlight_flagged(ws, frame)
    col = ws.max_column + 1
    set_text(ws.cell(1, col), ROW_KEY_COLUMN)
    ws.cell(1, col).font = HEADER_FONT
    for r, (lid, rid) in enumerate(zip(frame["left_id"], frame["right_id"]), start=2):
        set_text(ws.cell(r, col), row_key(run_id, lid or "", rid or ""))
    ws.column_dimensions[get_column_letter(col)].hidden = True


def _decision_validation(ws: Worksheet, col: int, n_rows: int) -> None:
    letter = get_column_letter(col)
    dv = DataValidation(
        type="list", formula1='"' + ",".join(DECISIONS) + '"', allow_blank=True, showDropDown=False,
        showInputMessage=True, showErrorMessage=True, errorStyle="stop", promptTitle="Reviewer decision",
        prompt=(f"Leave blank or pick {ACCEPT} to keep is_match; MATCH or NO MATCH to overrule it; "
                "ALT1/ALT2 when an alternative candidate is the same product."),
        errorTitle="Not a decision", error=f"Pick a value from the list: {', '.join(DECISIONS)}.")
    dv.add(f"{letter}2:{letter}{max(n_rows + 1, 2)}")
    ws.add_data_validation(dv)
