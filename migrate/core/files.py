"""Output files of every command: one writer per format (.xlsx, .csv, .parquet), atomic writes
(a temporary file renamed into place) and the overwrite rule (an existing file is an error
unless the caller passes ``overwrite``)."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import polars as pl

from migrate.core.cells import escape_csv_text
from migrate.errors import OutputExistsError, TaxmigError

log = logging.getLogger(__name__)
EXCEL_MAX_ROWS = 1_048_576
"""Rows of one Excel worksheet (Microsoft, "Excel specifications and limits"); row 1 is the header."""
FORMATS = (".xlsx", ".csv", ".parquet")


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def output_paths(path: Path) -> list[Path]:
    """Every file a write to ``path`` creates."""
    suffix = path.suffix.lower()
    if suffix == ".xlsx":
        return [path]
    stem = path.with_suffix("")
    return [path, Path(f"{stem}.rejects{suffix}"), Path(f"{stem}.summary.json")]


def check_output(path: str | Path, *, overwrite: bool, companions: bool = True) -> Path:
    """Validate the output path before any work: known format, not existing unless ``overwrite``
    (with ``companions``, nor the rejects/summary files a CSV or Parquet mapping writes beside it)."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise TaxmigError(f"{path}: unknown output format '{path.suffix or '(none)'}'",
                          hint=f"end the -o path in {', '.join(FORMATS)}")
    if path.is_dir():
        raise TaxmigError(f"{path} is a folder", hint="give a file name such as out/mapping.xlsx")
    if not overwrite:
        for existing in (output_paths(path) if companions else [path]):
            if existing.exists():
                raise OutputExistsError(existing)
    return path


def check_fits(path: str | Path | None, mapped_rows: int) -> None:
    """Refuse an ``.xlsx`` output whose Mapping sheet would pass Excel's row limit -- before any
    encoding, and never by writing a file Excel cannot open."""
    if path is None or Path(path).suffix.lower() != ".xlsx" or mapped_rows + 1 <= EXCEL_MAX_ROWS:
        return
    raise TaxmigError(f"{path}: {mapped_rows:,} products do not fit an Excel sheet "
                      f"({EXCEL_MAX_ROWS - 1:,} rows below the header)",
                      hint="write the mapping as .parquet or .csv (-o mapping.parquet); nothing was written")


def escaped_text(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with every text cell formula-escaped for CSV (see :func:`migrate.core.cells.escape_csv_text`)."""
    text_cols = [c for c, t in frame.schema.items() if t == pl.String]
    return frame.with_columns([pl.col(c).map_elements(escape_csv_text, return_dtype=pl.String) for c in text_cols])


def write_atomic(path: Path, writer: Callable[[Path], None]) -> None:
    with atomic_path(path) as tmp:
        writer(tmp)
    log.info("wrote %s", path)


def write_frame(frame: pl.DataFrame, path: Path, sheet: str, suffix: str | None = None) -> None:
    """``frame`` as CSV (formula-safe), Parquet or a one-sheet workbook, by ``suffix`` (default:
    ``path``'s extension; give it when ``path`` is a temporary name)."""
    suffix = (suffix or path.suffix).lower()
    if suffix == ".csv":
        escaped_text(frame).write_csv(path)
    elif suffix == ".parquet":
        frame.write_parquet(path)
    else:
        from openpyxl import Workbook

        from migrate.core.sheets import save_workbook, write_table

        wb = Workbook()
        wb.remove(wb.active)
        write_table(wb.create_sheet(sheet), frame, list(frame.columns), freeze="C2")
        save_workbook(wb, path)


def write_table_file(frame: pl.DataFrame, path: Path, sheet: str = "Table") -> None:
    """:func:`write_frame` to ``path`` atomically (the existence check is the caller's, before any work)."""
    write_atomic(path, lambda tmp: write_frame(frame, tmp, sheet, suffix=path.suffix))
