"""Writing tables and summaries into openpyxl sheets: what every workbook taxmig writes shares.

Styles, number formats, column widths, print fitting, the decision drop-down and the hidden
Categories sheet that feeds it. Every text cell goes through :func:`migrate.core.cells.set_text`."""

from __future__ import annotations

import math
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import polars as pl
from openpyxl import Workbook
from openpyxl.formatting.rule import ColorScaleRule, FormulaRule
from openpyxl.cell import Cell
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.styles.cell_style import StyleArray
from openpyxl.styles.numbers import BUILTIN_FORMATS_MAX_SIZE, BUILTIN_FORMATS_REVERSE
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.datavalidation import DataValidation
from openpyxl.worksheet.worksheet import Worksheet

from migrate.core.cells import set_text
from migrate.core.readers import cell_text
from migrate.errors import TaxmigError


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
    styles = CellStyles(ws)
    wrap, top = styles.alignment(WRAP), styles.alignment(TOP)
    for r, longest in enumerate(lengths, start=2):
        if longest <= width:
            continue
        for name in present:
            styles.set(ws.cell(r, index[name]), alignment=wrap)
        for c in range(1, len(header) + 1):
            if c not in wrapped and (r, c) in ws._cells:  # existing cells only: empty ones stay absent
                styles.set(ws._cells[(r, c)], alignment=top)
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
    styles = CellStyles(ws)
    format_ids = [styles.number_format(fmt) if fmt else None for fmt in formats]
    center = styles.alignment(CENTER)
    for r, values in enumerate(df.iter_rows(), start=2):
        for c, (value, fmt, fmt_id) in enumerate(zip(values, formats, format_ids), start=1):
            value = _cell_value(value)
            if value is None or value == "":
                continue  # no cell at all: smaller file, faster save
            cell = ws.cell(r, c)
            set_text(cell, value)
            if fmt_id is not None:
                styles.set(cell, number_format=fmt_id, alignment=center if fmt == BOOL_FORMAT else None)


class CellStyles:
    """Style ids of one workbook, looked up once per style instead of once per cell.

    Assigning ``cell.alignment`` or ``cell.number_format`` makes openpyxl hash the style against
    the workbook's list for every cell, the hot spot of writing a large sheet in a nightly run. The
    ids come from the same lists, so the saved file is the one the per-cell assignments write."""

    def __init__(self, ws: Worksheet) -> None:
        self.workbook = ws.parent

    def alignment(self, value: Alignment) -> int:
        return self.workbook._alignments.add(value)

    def font(self, value: Font) -> int:
        return self.workbook._fonts.add(value)

    def number_format(self, value: str) -> int:
        if value in BUILTIN_FORMATS_REVERSE:
            return BUILTIN_FORMATS_REVERSE[value]
        return self.workbook._number_formats.add(value) + BUILTIN_FORMATS_MAX_SIZE

    @staticmethod
    def set(cell: Cell, *, alignment: int | None = None, font: int | None = None,
            number_format: int | None = None) -> None:
        """Give ``cell`` the styles of these ids (from this object's methods)."""
        if not cell._style:  # as openpyxl's own descriptors do: a cell holds no style array until styled
            cell._style = StyleArray()
        if alignment is not None:
            cell._style.alignmentId = alignment
        if font is not None:
            cell._style.fontId = font
        if number_format is not None:
            cell._style.numFmtId = number_format


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


# --- reading a reviewed workbook back ------------------------------------------------------------

def open_reviewed_workbook(path: str | Path, what: str = "the reviewed .xlsx file"):
    """``path`` opened read-only with cached values (a reviewer's workbook); a missing or unreadable
    file is an :class:`~migrate.errors.InputError` naming it (``what``: what to give instead). Close it."""
    from openpyxl import load_workbook

    from migrate.errors import InputError

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found", hint=f"give {what}")
    try:
        return load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many types for a damaged or non-xlsx file
        raise InputError(path, f"cannot be opened as an Excel workbook ({exc.__class__.__name__})",
                         hint="save it from Excel as .xlsx") from None


def decision_rows(ws, sheet: str, required: tuple[str, ...], problems: list[str]
                   ) -> Iterator[tuple[int, str, Callable[[str], str]]]:
    """(row number, decision cell, the row's text in a column by header -- "" for a column the
    sheet lacks) of every row of ``ws`` whose decision is filled; missing ``required`` columns are
    added to ``problems`` instead."""
    it = ws.iter_rows(values_only=True)
    header = [cell_text(v).strip() for v in (next(it, None) or ())]
    col = {h: i for i, h in enumerate(header) if h}
    missing = [c for c in required if c not in col]
    if missing:
        problems.append(f"sheet {sheet}: column(s) {', '.join(missing)} missing from row 1 "
                        "(restore them from the exported file)")
        return
    letter = get_column_letter(col[DECISION_COLUMN] + 1)
    where = f"'{sheet}'" if " " in sheet else sheet  # how Excel writes a sheet name in a reference
    for number, values in enumerate(it, start=2):
        values = list(values) + [None] * (len(header) - len(values))
        if not cell_text(values[col[DECISION_COLUMN]]).strip():
            continue
        yield number, f"{where}!{letter}{number}", \
            lambda name, values=values: cell_text(values[col[name]]) if name in col else ""


def workbook_run_id(book) -> str:
    """The Run id a taxmig workbook's Summary sheet records ("" when it has none)."""
    if "Summary" not in book.sheetnames:
        return ""
    for values in book["Summary"].iter_rows(values_only=True):
        if values and cell_text(values[0]).strip() == "Run id" and len(values) > 1:
            return cell_text(values[1]).strip()
    return ""
