"""The Excel workbook of a migration result (openpyxl).

Sheets, in order: Summary (the first page: At a glance, then what to do with this file -- which
sheets' ``decision`` column to fill and the exact ``taxmig review apply`` command that reads it
back, naming this run's workbook and state folder -- then the run's details; its two charts on a
printed page of their own), Category decisions (one row per source category and per source ->
target pair, with a ``decision`` drop-down: :mod:`migrate.mapping.category_decisions`; only when the
source has categories), Review (flagged rows grouped by source category, with ``decision`` and
``reviewer_note``), Mapping (every row, the same two columns: reviewers may decide in either
sheet), Crosswalk, Rejects, Parameters, and the hidden Categories sheet that feeds the drop-down
(an inline list is limited to 255 characters). Decision sheets end in a hidden ``row_key`` column
that ties each row to its run and to the product (id and text) or category it decides.

Every text cell goes through :func:`migrate.core.cells.set_text`: catalog texts never become
formulas. The workbook is built in normal (not write-only) mode: write-only mode is no faster
(openpyxl's XML serialisation dominates either way; lxml, when installed, speeds it up) and normal
mode keeps every feature simple.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import polars as pl
from openpyxl import Workbook
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.worksheet import Worksheet

from migrate.core.cells import set_text
from migrate.core.hashing import ROW_KEY_COLUMN, row_key
from migrate.core.rejects import REJECT_COLUMNS
from migrate.core.report import review_guide, with_guide
from migrate.core.sheets import (ACCEPT, DECISION_COLUMN, FONT_NAME, HEADER_FONT, LINE_HEIGHT, NEW_CATEGORY,
                                 NOTE_COLUMN, CellStyles, add_decision_validation, column_index, decision_choices,
                                 fit_print_width, highlight_flagged, save_workbook, wrap_columns,
                                 write_categories_sheet, write_summary, write_table)
from migrate.mapping.category_decisions import CATEGORY_COLUMNS, LEVEL_CATEGORY, category_key, category_table
from migrate.mapping.feedback import MIX_ITEM
from migrate.mapping.report import LAST_ROUND
from migrate.mapping.result import CROSSWALK_COLUMNS, MAPPING_COLUMNS, MigrationResult

log = logging.getLogger(__name__)

SHEET_NAMES = ("Summary", "Category decisions", "Review", "Mapping", "Crosswalk", "Rejects", "Parameters",
               "Categories")
"""In order; Category decisions only when the source has categories."""
CATEGORY_SHEET = "Category decisions"


# Summary items that describe how the run was made, not what to do: they go to the Parameters sheet.
PARAMETER_ITEMS = frozenset({
    "taxmig version", "Run time (UTC)", "Source columns", "Target columns", "Leaves only", "Model",
    "Model fingerprint", "Product index", "Label scoring", "Scoring", "Thresholds", "min_confidence",
    "Leave-one-out products", "Leave-one-out top-1 accuracy", "Leave-one-out unflagged share",
    "Leave-one-out unflagged accuracy", "Texts encoded (distinct)", "Texts read from the embedding cache",
    "Encode seconds", "Run seconds", "Products per second (end to end)", MIX_ITEM,
    "Settings", "Product columns"})  # the last two: crosswalk's
CONFIDENCE_BINS = 10
CHART_CATEGORIES = 12  # source categories in the flags chart, most flagged first


def write_workbook(result: MigrationResult, path: Path) -> None:
    """Write ``result`` as an .xlsx at exactly ``path`` (no temp file, no overwrite check); the first
    page's command names ``result.facts.output`` and ``result.facts.state`` (:func:`first_page`)."""
    started = time.perf_counter()
    wb = Workbook()
    wb.remove(wb.active)
    summary = wb.create_sheet("Summary")
    categories = decision_choices(result.target_categories)
    per_category = category_table(result.mapping)
    questions = result.questions.height if result.questions is not None else 0
    write_first_page(summary, result, where=migration_decide(bool(per_category.height), questions),
                     command="migrate", next_round=result.questions is not None)
    if per_category.height:
        write_category_sheet(wb.create_sheet(CATEGORY_SHEET), per_category, run_id=result.run_id,
                             n_choices=len(categories))
    write_review_sheet(wb.create_sheet("Review"), result.review(), MAPPING_COLUMNS, run_id=result.run_id,
                       n_choices=len(categories))
    write_review_table(wb.create_sheet("Mapping"), result.mapping, MAPPING_COLUMNS, run_id=result.run_id,
                       n_choices=len(categories))
    write_table(wb.create_sheet("Crosswalk"), result.crosswalk, CROSSWALK_COLUMNS)
    write_table(wb.create_sheet("Rejects"), result.rejects, REJECT_COLUMNS)
    write_parameters(wb.create_sheet("Parameters"), summary, result)
    write_categories_sheet(wb.create_sheet("Categories"), categories)
    save_workbook(wb, path)
    log.debug("wrote %s (%d mapping rows) in %.1f s", path, result.mapping.height,
             time.perf_counter() - started)


# --- the first page ------------------------------------------------------------------------

DECISION_HOW = (f"{ACCEPT} keeps target_category, another category from the drop-down moves the row there, "
                f"{NEW_CATEGORY} says none fits; a row left empty stays open.")


def decide_text(category_sheet: bool, review: str) -> str:
    """Where a reviewer decides: Category decisions when the workbook has it, then Review
    (``review``: what its rows are); Mapping has every row."""
    text = f"in Review ({review}); Mapping has every row, with the same column"
    if not category_sheet:
        return text[0].upper() + text[1:] + "."
    return ("In Category decisions, where one row decides a whole source category or a source -> target pair, and "
            f"{text}. A product's own decision wins over its category's.")


def migration_decide(category_sheet: bool, questions: int) -> str:
    """:func:`decide_text` of a migration workbook whose Review sheet opens with ``questions``."""
    return decide_text(category_sheet, "one flagged product per row" + (
        f"; the first {questions}, numbered in 'question', teach the rest the most" if questions else ""))


def first_page(result: MigrationResult, *, where: str, command: str, next_round: bool,
               rows: str = "product") -> list[tuple[str, object]]:
    """The Summary sheet's rows: ``result.summary`` less :data:`PARAMETER_ITEMS`, with the
    :data:`~migrate.core.report.GUIDE` block after "At a glance": ``where`` to fill the decision
    column (:func:`decide_text`), the choices, and the command that reads the workbook back, naming
    ``result.facts.output`` and ``result.facts.state``. A round of review (its Summary says what
    the last round's answers showed) keeps a state folder even when the facts do not name it."""
    in_state = result.facts.state is not None or any(label == LAST_ROUND for label, _ in result.summary)
    guide = review_guide(where, DECISION_HOW, workbook=result.facts.output, state=result.facts.state,
                         next_round=next_round, command=command, in_state=in_state, rows=rows)
    return with_guide([(k, v) for k, v in result.summary if k not in PARAMETER_ITEMS], guide)


def write_first_page(ws: Worksheet, result: MigrationResult, *, where: str, command: str, next_round: bool,
                     rows: str = "product", title: str = "taxmig mapping summary") -> None:
    """The Summary sheet (:func:`first_page`) under ``title``, printed landscape one page wide."""
    write_summary(ws, first_page(result, where=where, command=command, next_round=next_round, rows=rows), title=title)
    fit_print_width(ws)


def write_parameters(ws: Worksheet, summary: Worksheet, result: MigrationResult, *,
                     group: str = "source category") -> None:
    """The Parameters sheet (the Summary's :data:`PARAMETER_ITEMS`) and, under the Summary's rows,
    its charts over tables written here (:func:`add_summary_charts`)."""
    write_summary(ws, [(k, v) for k, v in result.summary if k in PARAMETER_ITEMS], title="taxmig run parameters")
    fit_print_width(ws)
    add_summary_charts(summary, ws, result.mapping, group=group)


# The Review sheet's first columns: what a reviewer reads to decide, then the decision itself; the
# print area ends with them (the rest of the row follows on screen).
REVIEW_FIRST = ("question", "source_text", "source_category", "target_category", "confidence", "flags", "alt1_category",
                "alt2_category")


REVIEW_WRAPPED = ("source_text", "source_category", "target_category", "alt1_category", "alt2_category")
CATEGORY_WRAPPED = ("source_category", "target_category", "top_targets", "flags")


def write_review_sheet(ws: Worksheet, review: pl.DataFrame, default_columns: Sequence[str], *, run_id: str,
                       n_choices: int) -> None:
    """The Review sheet: ``review`` (flagged rows in review order, :meth:`MigrationResult.review`) in
    :func:`review_layout`, long texts wrapped, printed up to ``reviewer_note``."""
    rows = review_layout(review)
    write_review_table(ws, rows, default_columns, run_id=run_id, n_choices=n_choices, freeze="B2")
    wrap_columns(ws, rows, REVIEW_WRAPPED)
    ws.print_area = f"A1:{get_column_letter(column_index(ws, NOTE_COLUMN))}{max(ws.max_row, 1)}"


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
    """The Category decisions sheet (:func:`migrate.mapping.category_decisions.category_table`): its rows,
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
    bold = CellStyles(ws).font(CATEGORY_ROW_FONT)
    for r, (level, source, target) in enumerate(table.select("level", "source_category", "target_category").iter_rows(),
                                                start=2):
        set_text(ws.cell(r, col), category_key(run_id, level, source or "", target or ""))
        if level == LEVEL_CATEGORY:
            for c in range(1, len(CATEGORY_COLUMNS) + 1):
                CellStyles.set(ws.cell(r, c), font=bold)
    ws.column_dimensions[get_column_letter(col)].hidden = True
    wrap_columns(ws, table, CATEGORY_WRAPPED)
    ws.print_area = f"A1:{get_column_letter(column_index(ws, NOTE_COLUMN))}{max(ws.max_row, 1)}"


# --- Summary -------------------------------------------------------------------------------


def add_summary_charts(summary: Worksheet, data: Worksheet, mapping: pl.DataFrame, *,
                       group: str = "source category") -> None:
    """Two native bar charts under the Summary rows -- rows per confidence band, and flagged
    rows per ``group`` (``mapping``'s source_category; most flagged first) -- over small tables
    written on ``data`` (they stay live in Excel and LibreOffice). They start a printed page of
    their own, each whole on one page (:func:`place_charts`)."""
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
    bands.width, bands.height = CHART_WIDTH_CM, BANDS_HEIGHT_CM
    charts = [bands]

    flagged = (mapping.filter(pl.col("needs_review"))
               .with_columns(pl.col("source_category").fill_null("").replace("", f"(no {group})"))
               .group_by("source_category").len().sort(["len", "source_category"], descending=[True, False])
               .head(CHART_CATEGORIES))
    if flagged.height:
        top = start + CONFIDENCE_BINS + 3
        set_text(data.cell(top, 1), f"Flagged rows per {group}")
        data.cell(top, 1).font = HEADER_FONT
        set_text(data.cell(top + 1, 1), group)
        set_text(data.cell(top + 1, 2), "flagged rows")
        for i, (category, n) in enumerate(flagged.iter_rows()):
            set_text(data.cell(top + 2 + i, 1), category)
            data.cell(top + 2 + i, 2).value = int(n)
        per_category = BarChart()
        per_category.type = "bar"  # horizontal: long category names stay readable
        per_category.title = f"Flagged rows per {group}"
        per_category.legend = None
        per_category.add_data(Reference(data, min_col=2, min_row=top + 1, max_row=top + 1 + flagged.height),
                              titles_from_data=True)
        per_category.set_categories(Reference(data, min_col=1, min_row=top + 2, max_row=top + 1 + flagged.height))
        per_category.y_axis.title = (f"flagged rows (the {flagged.height} most flagged)"
                                     if flagged.height == CHART_CATEGORIES else "flagged rows")
        per_category.x_axis.scaling.orientation = "maxMin"  # most flagged on top
        per_category.width = CHART_WIDTH_CM
        per_category.height = BAR_CHART_BASE_CM + BAR_CM * flagged.height  # room for every category's name
        charts.append(per_category)
    place_charts(summary, charts)


CHART_WIDTH_CM = 16
BANDS_HEIGHT_CM = 5.5
BAR_CHART_BASE_CM, BAR_CM = 3.0, 0.55  # the flags chart: titles and axis, then one bar per category
CHART_GAP_ROWS = 2
ROW_CM = LINE_HEIGHT * 2.54 / 72  # a chart row's height, set explicitly: the charts' place does not depend on fonts
SUMMARY_MARGIN_IN = 0.5
CHART_PAGE_CM = 17.0
"""Chart height that fits one printed page of the Summary: a landscape A4 page (the shorter of A4
and Letter) is 21.0 cm high, less two margins of :data:`SUMMARY_MARGIN_IN` and the title row that
repeats on every page leaves about 17.8 cm at 100 %; fitting the width only ever shrinks the page."""


def place_charts(summary: Worksheet, charts: list) -> None:
    """Anchor ``charts`` one under the other below the Summary's rows, starting a new printed page
    (a row break), and another page before a chart that would not fit under the one before; the
    rows they cover get an explicit height, so each chart lies whole on one page."""
    from openpyxl.worksheet.pagebreak import Break

    summary.page_margins.left = summary.page_margins.right = SUMMARY_MARGIN_IN
    summary.page_margins.top = summary.page_margins.bottom = SUMMARY_MARGIN_IN
    summary.page_margins.header = summary.page_margins.footer = SUMMARY_MARGIN_IN / 2
    row, used = summary.max_row + 1, None
    for chart in charts:
        if used is None or used + CHART_GAP_ROWS * ROW_CM + chart.height > CHART_PAGE_CM:
            summary.row_breaks.append(Break(id=row - 1))  # the chart's row starts a page
            used = 0.0
        else:
            row += CHART_GAP_ROWS
            used += CHART_GAP_ROWS * ROW_CM
        chart.anchor = f"A{row}"
        summary.add_chart(chart)
        rows = int(np.ceil(chart.height / ROW_CM))
        for r in range(row, row + rows + CHART_GAP_ROWS):
            summary.row_dimensions[r].height = LINE_HEIGHT
        row += rows
        used += rows * ROW_CM


# --- tables --------------------------------------------------------------------------------


# --- review aids ---------------------------------------------------------------------------


