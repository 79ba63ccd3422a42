"""The Excel workbook of a migration result (openpyxl).

Sheets, in order: Summary, Category decisions (one row per source category and per source ->
target pair, with a ``decision`` drop-down: :mod:`migrate.category_decisions`; only when the
source has categories), Review (flagged rows grouped by source category, with ``decision`` and
``reviewer_note``), Mapping (every row, the same two columns: reviewers may decide in either
sheet), Crosswalk, Rejects, Parameters, and the hidden Categories sheet that feeds the drop-down
(an inline list is limited to 255 characters). Decision sheets end in a hidden ``row_key`` column
that ties each row to its run and to the product (id and text) or category it decides.

Every text cell goes through :func:`migrate.cells.set_text`: catalog texts never become
formulas. The workbook is built in normal (not write-only) mode: write-only mode measured no
faster (openpyxl's XML serialisation dominates either way; 30,000 mapping rows take ~9-13 s on
two busy cores, ~25% less when lxml is installed) and normal mode keeps every feature simple.
"""

from __future__ import annotations

import logging
import math
import time
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import polars as pl
from openpyxl import Workbook
from openpyxl.formatting.rule import ColorScaleRule, FormulaRule
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.datavalidation import DataValidation
from openpyxl.worksheet.worksheet import Worksheet

from migrate.category_decisions import CATEGORY_COLUMNS, LEVEL_CATEGORY, category_key, category_table
from migrate.cells import set_text
from migrate.errors import TaxmigError
from migrate.result import (CROSSWALK_COLUMNS, MAPPING_COLUMNS, REJECT_COLUMNS, ROW_KEY_COLUMN, MigrationResult,
                            row_key)

log = logging.getLogger(__name__)

SHEET_NAMES = ("Summary", "Category decisions", "Review", "Mapping", "Crosswalk", "Rejects", "Parameters",
               "Categories")
"""In order; Category decisions only when the source has categories."""
CATEGORY_SHEET = "Category decisions"
DECISION_COLUMN = "decision"
NOTE_COLUMN = "reviewer_note"
ACCEPT = "ACCEPT"
NEW_CATEGORY = "NEW CATEGORY NEEDED"
SPECIAL_DECISIONS = (ACCEPT, NEW_CATEGORY)
SCORE_FORMAT = "0.000"
LINE_HEIGHT = 15  # points per line of 11-point Calibri, Excel's default row height
BOOL_FORMAT = '"TRUE";"TRUE";"FALSE"'  # Excel ignores it; LibreOffice would otherwise show 1/0
SCORE_COLUMNS = frozenset({"confidence", "margin", "score", "share", "mean_confidence"})
SCORE_SUFFIXES = ("_score", "_similarity", "_confidence", "_share")
MIN_WIDTH, MAX_WIDTH = 8, 60
FONT_NAME = "Calibri"  # named, else LibreOffice falls back to a serif face
HEADER_FONT = Font(name=FONT_NAME, bold=True)
HEADER_FILL = PatternFill("solid", start_color="DDEBF7", end_color="DDEBF7")
REVIEW_FILL = PatternFill("solid", start_color="FFF2CC", end_color="FFF2CC")
TITLE_FONT = Font(name=FONT_NAME, bold=True, size=14)
CENTER = Alignment(horizontal="center")
RED, YELLOW, GREEN = "F8696B", "FFEB84", "63BE7B"


# Summary items that describe how the run was made, not what to do: they go to the Parameters sheet.
PARAMETER_ITEMS = frozenset({
    "taxmig version", "Run time (UTC)", "Source columns", "Target columns", "Leaves only", "Model",
    "Model fingerprint", "Product index", "Label scoring", "Scoring", "Thresholds", "min_confidence",
    "Leave-one-out products", "Leave-one-out top-1 accuracy", "Leave-one-out unflagged share",
    "Leave-one-out unflagged accuracy", "Texts encoded (distinct)", "Texts read from the embedding cache",
    "Encode seconds", "Run seconds", "Products per second (end to end)"})
CONFIDENCE_BINS = 10
CHART_CATEGORIES = 12  # source categories in the flags chart, most flagged first


def write_workbook(result: MigrationResult, path: Path) -> None:
    """Write ``result`` as an .xlsx at exactly ``path`` (no temp file, no overwrite check)."""
    started = time.perf_counter()
    wb = Workbook()
    wb.remove(wb.active)
    summary = wb.create_sheet("Summary")
    first = [(k, v) for k, v in result.summary if k not in PARAMETER_ITEMS]
    write_summary(summary, first)
    fit_print_width(summary)
    categories = decision_choices(result.target_categories)
    per_category = category_table(result.mapping)
    if per_category.height:
        write_category_sheet(wb.create_sheet(CATEGORY_SHEET), per_category, run_id=result.run_id,
                             n_choices=len(categories))
    review = wb.create_sheet("Review")
    review_rows = review_layout(result.review())
    write_review_table(review, review_rows, MAPPING_COLUMNS, run_id=result.run_id, n_choices=len(categories),
                       freeze="B2")
    wrap_columns(review, review_rows, REVIEW_WRAPPED)
    review.print_area = f"A1:{get_column_letter(column_index(review, NOTE_COLUMN))}{max(review.max_row, 1)}"
    write_review_table(wb.create_sheet("Mapping"), result.mapping, MAPPING_COLUMNS, run_id=result.run_id,
                       n_choices=len(categories))
    write_table(wb.create_sheet("Crosswalk"), result.crosswalk, CROSSWALK_COLUMNS)
    write_table(wb.create_sheet("Rejects"), result.rejects, REJECT_COLUMNS)
    parameters = wb.create_sheet("Parameters")
    write_summary(parameters, [(k, v) for k, v in result.summary if k in PARAMETER_ITEMS],
                  title="taxmig run parameters")
    fit_print_width(parameters)
    add_summary_charts(summary, parameters, result.mapping)
    write_categories_sheet(wb.create_sheet("Categories"), categories)
    save_workbook(wb, path)
    log.debug("wrote %s (%d mapping rows) in %.1f s", path, result.mapping.height,
             time.perf_counter() - started)


# The Review sheet's first columns: what a reviewer reads to decide, then the decision itself; the
# print area ends with them (the rest of the row follows on screen).
REVIEW_FIRST = ("source_text", "source_category", "target_category", "confidence", "flags", "alt1_category",
                "alt2_category")


REVIEW_WRAPPED = ("source_text", "source_category", "target_category", "alt1_category", "alt2_category")
CATEGORY_WRAPPED = ("source_category", "target_category", "top_targets", "flags")


def review_layout(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with :data:`REVIEW_FIRST`, then empty ``decision`` and ``reviewer_note`` columns,
    then every other column (``review apply`` finds columns by their header)."""
    first = [c for c in REVIEW_FIRST if c in frame.columns]
    rest = frame.select([c for c in frame.columns if c not in first])
    decided = frame.select(first).with_columns(pl.lit(None, pl.String).alias(DECISION_COLUMN),
                                                pl.lit(None, pl.String).alias(NOTE_COLUMN))
    return pl.concat([decided, rest], how="horizontal")


def write_review_table(ws: Worksheet, frame: pl.DataFrame, default_columns: Sequence[str], *, run_id: str,
                       n_choices: int, freeze: str = "D2") -> None:
    """A table reviewers work in: the rows, then ``decision`` (drop-down) and ``reviewer_note``
    columns (unless ``frame`` already places them, :func:`review_layout`), then the hidden
    ``row_key`` column that ``taxmig review apply`` checks."""
    extra = () if DECISION_COLUMN in frame.columns else (DECISION_COLUMN, NOTE_COLUMN)
    write_table(ws, frame, default_columns, freeze=freeze, extra=extra)
    add_decision_validation(ws, column_index(ws, DECISION_COLUMN), frame.height, n_choices)
    highlight_flagged(ws, frame)
    col = ws.max_column + 1
    cell = ws.cell(1, col)
    set_text(cell, ROW_KEY_COLUMN)
    cell.font = HEADER_FONT
    if frame.height:
        for r, (pid, text) in enumerate(zip(frame["source_id"], frame["source_text"]), start=2):
            set_text(ws.cell(r, col), row_key(run_id, pid or "", text or ""))
    ws.column_dimensions[get_column_letter(col)].hidden = True


CATEGORY_ROW_FONT = Font(name=FONT_NAME, bold=True)


def write_category_sheet(ws: Worksheet, table: pl.DataFrame, *, run_id: str, n_choices: int) -> None:
    """The Category decisions sheet (:func:`migrate.category_decisions.category_table`): its rows,
    ``decision`` (drop-down) and ``reviewer_note``, and a hidden ``row_key`` per row that ``review
    apply`` checks (an edited source or target cell no longer matches). Category rows are bold."""
    write_table(ws, table, CATEGORY_COLUMNS, freeze="D2", extra=(DECISION_COLUMN, NOTE_COLUMN))
    add_decision_validation(ws, column_index(ws, DECISION_COLUMN), table.height, n_choices,
                            prompt=(f"{ACCEPT}: every product of this row (a category row: the whole source "
                                    f"category) goes to target_category; another category: they all go there; "
                                    f"{NEW_CATEGORY} when none fits. A product's own decision in Review or "
                                    f"Mapping wins."))
    col = ws.max_column + 1
    set_text(ws.cell(1, col), ROW_KEY_COLUMN)
    ws.cell(1, col).font = HEADER_FONT
    for r, (level, source, target) in enumerate(table.select("level", "source_category", "target_category").iter_rows(),
                                                start=2):
        set_text(ws.cell(r, col), category_key(run_id, level, source or "", target or ""))
        if level == LEVEL_CATEGORY:
            for c in range(1, len(CATEGORY_COLUMNS) + 1):
                ws.cell(r, c).font = CATEGORY_ROW_FONT
    ws.column_dimensions[get_column_letter(col)].hidden = True
    wrap_columns(ws, table, CATEGORY_WRAPPED)
    ws.print_area = f"A1:{get_column_letter(column_index(ws, NOTE_COLUMN))}{max(ws.max_row, 1)}"


def decision_choices(target_categories: Iterable[str]) -> list[str]:
    """The drop-down values: ACCEPT, NEW CATEGORY NEEDED, then each category once, in order."""
    seen = dict.fromkeys(SPECIAL_DECISIONS)
    for category in target_categories:
        if category is not None and str(category).strip():
            seen.setdefault(str(category), None)
    return list(seen)


def number_format(column: str) -> str | None:
    """``"0.000"`` for score-like columns (confidence, margin, shares, similarities), else None."""
    return SCORE_FORMAT if column in SCORE_COLUMNS or column.endswith(SCORE_SUFFIXES) else None


def column_format(column: str, dtype: pl.DataType) -> str | None:
    """The number format of a table column: scores ``0.000``, booleans TRUE/FALSE, else None."""
    return BOOL_FORMAT if dtype == pl.Boolean else number_format(column)


def save_workbook(wb: Workbook, path: Path) -> None:
    """Save ``wb``; a path that cannot be written becomes a :class:`TaxmigError`."""
    try:
        wb.save(path)
    except OSError as exc:
        raise TaxmigError(f"{path}: cannot write the workbook ({exc.strerror or exc})",
                          hint="check that the folder exists and is writable") from exc


# --- Summary -------------------------------------------------------------------------------

def write_summary(ws: Worksheet, summary: Sequence[tuple[str, Any]], title: str = "taxmig mapping summary") -> None:
    """Title row, an Item/Value header, then one row per pair (dicts as indented sub-rows)."""
    set_text(ws.cell(1, 1), title)
    ws.cell(1, 1).font = TITLE_FONT
    _write_header(ws, ["Item", "Value"], row=2)
    row = 3
    for label, value in summary:
        row = _write_summary_item(ws, row, str(label), value, depth=0)
    labels = [str(ws.cell(r, 1).value or "") for r in range(3, row)]
    ws.column_dimensions["A"].width = _clamp(max(map(len, labels), default=0) + 4, 30)
    width = _clamp(max((len(_display(ws.cell(r, 2).value)) for r in range(3, row)), default=0) + 2, 12)
    ws.column_dimensions["B"].width = width
    for r in range(3, row):  # a sentence longer than the column wraps inside it instead of running across the page
        cell = ws.cell(r, 2)
        if isinstance(cell.value, str) and len(cell.value) > width:
            cell.alignment = Alignment(wrap_text=True, vertical="top")
            ws.cell(r, 1).alignment = Alignment(vertical="top")
            # explicit height: LibreOffice kept a third line of a wrapped sentence hidden when printing
            ws.row_dimensions[r].height = LINE_HEIGHT * math.ceil(len(cell.value) / max(0.9 * width, 1))


def _write_summary_item(ws: Worksheet, row: int, label: str, value: Any, depth: int) -> int:
    """Write one label/value (recursing into dicts); return the next free row."""
    set_text(ws.cell(row, 1), "  " * depth + label)
    if isinstance(value, dict):
        ws.cell(row, 1).font = HEADER_FONT
        row += 1
        for key, sub in value.items():
            row = _write_summary_item(ws, row, str(key), sub, depth + 1)
        return row
    cell = ws.cell(row, 2)
    set_text(cell, _cell_value(value))
    if isinstance(cell.value, bool):
        cell.number_format = BOOL_FORMAT
    elif isinstance(cell.value, float):
        cell.number_format = SCORE_FORMAT
    return row + 1


def add_summary_charts(summary: Worksheet, data: Worksheet, mapping: pl.DataFrame) -> None:
    """Two native bar charts under the Summary rows -- rows per confidence band, and flagged
    rows per source category (most flagged first) -- over small tables written on ``data``
    (they stay live in Excel and LibreOffice)."""
    if not mapping.height:
        return
    from openpyxl.chart import BarChart, Reference

    start = data.max_row + 2
    set_text(data.cell(start, 1), "Rows per confidence band")
    data.cell(start, 1).font = HEADER_FONT
    set_text(data.cell(start + 1, 1), "confidence")
    set_text(data.cell(start + 1, 2), "rows")
    confidence = np.clip(np.nan_to_num(mapping["confidence"].to_numpy(), nan=0.0), 0.0, 1.0)
    counts = np.bincount(np.minimum((confidence * CONFIDENCE_BINS).astype(int), CONFIDENCE_BINS - 1),
                         minlength=CONFIDENCE_BINS)
    for i, n in enumerate(counts):
        set_text(data.cell(start + 2 + i, 1), f"{i / CONFIDENCE_BINS:.1f}-{(i + 1) / CONFIDENCE_BINS:.1f}")
        data.cell(start + 2 + i, 2).value = int(n)
    bands = BarChart()
    bands.title, bands.y_axis.title, bands.x_axis.title = "Rows per confidence band", "rows", "confidence"
    bands.legend = None
    bands.add_data(Reference(data, min_col=2, min_row=start + 1, max_row=start + 1 + CONFIDENCE_BINS),
                   titles_from_data=True)
    bands.set_categories(Reference(data, min_col=1, min_row=start + 2, max_row=start + 1 + CONFIDENCE_BINS))
    anchor = summary.max_row + 2
    bands.anchor, bands.width, bands.height = f"A{anchor}", 16, 7
    summary.add_chart(bands)

    flagged = (mapping.filter(pl.col("needs_review"))
               .with_columns(pl.col("source_category").fill_null("").replace("", "(no source category)"))
               .group_by("source_category").len().sort(["len", "source_category"], descending=[True, False])
               .head(CHART_CATEGORIES))
    if not flagged.height:
        return
    top = start + CONFIDENCE_BINS + 3
    set_text(data.cell(top, 1), "Flagged rows per source category")
    data.cell(top, 1).font = HEADER_FONT
    set_text(data.cell(top + 1, 1), "source category")
    set_text(data.cell(top + 1, 2), "flagged rows")
    for i, (category, n) in enumerate(flagged.iter_rows()):
        set_text(data.cell(top + 2 + i, 1), category)
        data.cell(top + 2 + i, 2).value = int(n)
    per_category = BarChart()
    per_category.type = "bar"  # horizontal: long category names stay readable
    per_category.title = f"Flagged rows per source category (top {flagged.height})"
    per_category.legend = None
    per_category.add_data(Reference(data, min_col=2, min_row=top + 1, max_row=top + 1 + flagged.height),
                          titles_from_data=True)
    per_category.set_categories(Reference(data, min_col=1, min_row=top + 2, max_row=top + 1 + flagged.height))
    per_category.y_axis.title = "flagged rows"
    per_category.x_axis.scaling.orientation = "maxMin"  # most flagged on top
    per_category.anchor, per_category.width = f"A{anchor + 15}", 16
    per_category.height = 4 + 0.6 * flagged.height  # room for every category's name
    summary.add_chart(per_category)


# --- tables --------------------------------------------------------------------------------

def write_table(ws: Worksheet, df: pl.DataFrame, default_columns: Sequence[str],
                 freeze: str = "A2", extra: Sequence[str] = ()) -> None:
    """Header + rows of ``df`` (or just ``default_columns`` when it has none), styled as a table."""
    columns = list(df.columns) or list(default_columns)
    header = columns + list(extra)
    _write_header(ws, header, row=1)
    if df.width:
        _write_rows(ws, df.select(columns), [column_format(c, df[c].dtype) for c in columns])
    last_row = max(df.height + 1, 2 if extra else 1)
    ws.auto_filter.ref = f"A1:{get_column_letter(len(header))}{last_row}"
    ws.freeze_panes = freeze
    _set_widths(ws, df, header)
    if "confidence" in columns and df.height:
        _add_confidence_scale(ws, columns.index("confidence") + 1, df.height)
    fit_print_width(ws)


WRAP_WIDTH = 34  # characters: a wrapped category path column; three of them fit a printed landscape page
WRAP = Alignment(wrap_text=True, vertical="top")
TOP = Alignment(vertical="top")


def wrap_columns(ws: Worksheet, frame: pl.DataFrame, columns: Sequence[str], width: int = WRAP_WIDTH) -> None:
    """Wrap the long text of ``columns`` (category paths) at ``width`` instead of clipping it, and
    give each row the height of its longest wrapped cell (LibreOffice does not grow rows itself
    when printing); the row's other cells align to the top."""
    present = [c for c in columns if c in frame.columns]
    if not present or not frame.height:
        return
    header = [c.value for c in ws[1]]
    index = {name: header.index(name) + 1 for name in present}
    wrapped = set(index.values())
    for name in present:
        ws.column_dimensions[get_column_letter(index[name])].width = width
    lengths = frame.select(pl.max_horizontal([pl.col(c).cast(pl.String).fill_null("").str.len_chars()
                                              for c in present]).alias("n"))["n"].to_list()
    per_line = 0.9 * width  # wrapping breaks at spaces: a line holds a little less than the width
    for r, longest in enumerate(lengths, start=2):
        if longest <= width:
            continue
        for name in present:
            ws.cell(r, index[name]).alignment = WRAP
        for c in range(1, len(header) + 1):
            if c not in wrapped and (r, c) in ws._cells:  # existing cells only: empty ones stay absent
                ws._cells[(r, c)].alignment = TOP
        ws.row_dimensions[r].height = LINE_HEIGHT * math.ceil(longest / per_line)


def fit_print_width(ws: Worksheet) -> None:
    """Print (and PDF-export) landscape, all columns on one page width, header repeated."""
    ws.page_setup.orientation = "landscape"
    ws.sheet_properties.pageSetUpPr.fitToPage = True
    ws.page_setup.fitToWidth = 1
    ws.page_setup.fitToHeight = 0
    ws.print_title_rows = "1:1"


def _write_header(ws: Worksheet, names: Sequence[str], row: int) -> None:
    """Bold, filled header cells."""
    for col, name in enumerate(names, start=1):
        cell = ws.cell(row, col)
        set_text(cell, name)
        cell.font = HEADER_FONT
        cell.fill = HEADER_FILL


def _write_rows(ws: Worksheet, df: pl.DataFrame, formats: Sequence[str | None]) -> None:
    """Every row of ``df`` from row 2, text through :func:`set_text`, scores as 0.000; empties skipped."""
    for r, values in enumerate(df.iter_rows(), start=2):
        for c, (value, fmt) in enumerate(zip(values, formats), start=1):
            value = _cell_value(value)
            if value is None or value == "":
                continue  # no cell at all: smaller file, faster save
            cell = ws.cell(r, c)
            set_text(cell, value)
            if fmt:
                cell.number_format = fmt
                if fmt == BOOL_FORMAT:
                    cell.alignment = CENTER


def _cell_value(value: Any) -> Any:
    """A value openpyxl can store: NaN/inf -> empty, lists joined with '; ', other objects as text."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, (float, Decimal)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, (list, tuple)):
        return "; ".join(str(v) for v in value if v is not None)
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def _set_widths(ws: Worksheet, df: pl.DataFrame, header: Sequence[str]) -> None:
    """Column widths from the longest header/value, within [MIN_WIDTH, MAX_WIDTH]."""
    for col, name in enumerate(header, start=1):
        longest = len(name) + 3  # room for the auto-filter button
        if name in df.columns and df.height:
            longest = max(longest, _longest_value(df[name], number_format(name)) + 2)
        ws.column_dimensions[get_column_letter(col)].width = _clamp(longest)


def _longest_value(series: pl.Series, fmt: str | None) -> int:
    """Characters of the longest displayed value of ``series``."""
    if fmt == SCORE_FORMAT and series.dtype.is_numeric():
        biggest = series.abs().max()
        return len(f"{biggest:.3f}") + 1 if biggest is not None else 0
    if isinstance(series.dtype, pl.List):
        series = series.list.eval(pl.element().cast(pl.Utf8)).list.join("; ")
    longest = series.cast(pl.Utf8, strict=False).str.len_chars().max()
    return int(longest) if longest is not None else 0


def _clamp(width: float, minimum: int = MIN_WIDTH) -> float:
    return float(min(MAX_WIDTH, max(minimum, width)))


def _display(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else ("" if value is None else str(value))


def column_index(ws: Worksheet, name: str) -> int:
    """1-based column of header ``name`` in row 1."""
    return next(c.column for c in ws[1] if c.value == name)


# --- review aids ---------------------------------------------------------------------------

def _add_confidence_scale(ws: Worksheet, col: int, n_rows: int) -> None:
    """Red (0) - yellow (0.5) - green (1) colour scale on the confidence column."""
    letter = get_column_letter(col)
    ws.conditional_formatting.add(
        f"{letter}2:{letter}{n_rows + 1}",
        ColorScaleRule(start_type="num", start_value=0, start_color=RED,
                       mid_type="num", mid_value=0.5, mid_color=YELLOW,
                       end_type="num", end_value=1, end_color=GREEN))


def highlight_flagged(ws: Worksheet, df: pl.DataFrame) -> None:
    """Light fill on the first columns of rows whose needs_review is TRUE (one conditional rule)."""
    if "needs_review" not in df.columns or not df.height:
        return
    flag = get_column_letter(df.columns.index("needs_review") + 1)
    last = get_column_letter(min(3, df.width))
    ws.conditional_formatting.add(f"A2:{last}{df.height + 1}",
                                  FormulaRule(formula=[f"${flag}2=TRUE"], fill=REVIEW_FILL))


def add_decision_validation(ws: Worksheet, col: int, n_rows: int, n_choices: int, prompt: str | None = None) -> None:
    """Drop-down on the decision column, fed by the hidden Categories sheet."""
    letter = get_column_letter(col)
    dv = DataValidation(
        type="list", formula1=f"Categories!$A$1:$A${n_choices}", allow_blank=True,
        showDropDown=False, showInputMessage=True, showErrorMessage=True, errorStyle="stop",
        promptTitle="Reviewer decision",
        prompt=prompt or (f"Leave blank or pick {ACCEPT} to keep target_category; pick another category "
                          f"to change it; or pick {NEW_CATEGORY} when none fits."),
        errorTitle="Not a known category",
        error=(f"Pick a value from the list: {ACCEPT}, {NEW_CATEGORY}, or a target category."))
    dv.add(f"{letter}2:{letter}{max(n_rows + 1, 2)}")
    ws.add_data_validation(dv)


def write_categories_sheet(ws: Worksheet, choices: Sequence[str]) -> None:
    """Column A: the drop-down values (no header); the sheet is hidden."""
    for row, value in enumerate(choices, start=1):
        set_text(ws.cell(row, 1), value)
    ws.column_dimensions["A"].width = _clamp(max(map(len, choices), default=0) + 2)
    ws.sheet_state = "hidden"
