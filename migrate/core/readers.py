"""Read a catalog file (CSV/TSV, XLSX, Parquet, JSONL) into a polars frame of text columns.

Every record keeps its position in the file in the ``_row`` column, numbered as an editor shows
it: for CSV/TSV/XLSX the header is row 1 and the first product row 2; for JSONL the line number;
for Parquet the record number from 1. Records that cannot be read (a CSV row with the wrong number
of fields, a JSONL line that is not a JSON object) are not dropped: they come back as
:class:`Reject` rows so that every input row is accounted for.

>>> table = read_table("sample_catalogs/bigbasket_sample.csv")  # doctest: +SKIP
>>> table.frame.columns[:3], len(table.rejects)                   # doctest: +SKIP
(['index', 'product', 'category'], 0)
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from migrate.errors import InputError

log = logging.getLogger(__name__)

ROW = "_row"
CSV_SUFFIXES = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".txt": ","}
SUPPORTED = sorted([*CSV_SUFFIXES, ".xlsx", ".xlsm", ".parquet", ".jsonl", ".ndjson"])


@dataclass(frozen=True)
class Reject:
    """An input row that is not mapped, and why. ``row`` follows the ``_row`` convention."""

    row: int
    reason: str
    id: str = ""
    text: str = ""


@dataclass
class Table:
    """A file read as text columns plus ``_row``, and the records that could not be read."""

    path: Path
    frame: pl.DataFrame
    rejects: list[Reject] = field(default_factory=list)
    delimiter: str | None = None  # a delimited text file's field separator, as used

    @property
    def columns(self) -> list[str]:
        return [c for c in self.frame.columns if c != ROW]

    @property
    def n_records(self) -> int:
        """Every record of the file: readable ones plus unreadable ones."""
        return self.frame.height + len(self.rejects)


DELIMITERS = (",", ";", "\t", "|")
"""The field separators a delimited file is sniffed for: Excel writes ';' where the decimal mark is a comma."""
SNIFF_LINES = 50
SNIFF_CHARS = 1 << 20  # the characters looked at for those lines


def sniff_delimiter(text: str, default: str) -> str:
    """The separator of a delimited text: among :data:`DELIMITERS`, the one that splits the header
    into the most fields while the first :data:`SNIFF_LINES` records have as many (quotes
    respected); ``default`` (the extension's) when none splits the header or on a tie.

    >>> sniff_delimiter("index;product;category\\n1;Tea, green;Drinks\\n", ",")
    ';'
    >>> sniff_delimiter("id,name\\n1,a;b\\n", ",")
    ','
    """
    lines = text[:SNIFF_CHARS].splitlines()[:SNIFF_LINES + 1]  # the head only: a catalog may be a gigabyte
    best, best_fields = default, 1
    for delimiter in (default, *(d for d in DELIMITERS if d != default)):
        try:
            records = [r for r in csv.reader(lines, delimiter=delimiter) if r]
        except csv.Error:
            continue
        if not records or len(records[0]) <= 1:
            continue
        width = len(records[0])
        consistent = sum(len(r) == width for r in records[1:]) >= 0.8 * (len(records) - 1)
        if consistent and width > best_fields:
            best, best_fields = delimiter, width
    return best


def read_table(path: str | Path, *, encoding: str = "utf-8", delimiter: str | None = None) -> Table:
    """Read ``path`` by its extension; raise :class:`InputError` when the file cannot be used.
    ``delimiter``: a delimited text file's separator (default: sniffed, :func:`sniff_delimiter`)."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found", hint="check the path")
    if path.is_dir():
        raise InputError(path, "is a folder, not a file", hint="name the catalog file itself")
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        table = _read_delimited(path, delimiter, CSV_SUFFIXES[suffix], encoding)
    elif suffix in (".xlsx", ".xlsm"):
        table = _read_xlsx(path)
    elif suffix == ".parquet":
        table = _read_parquet(path)
    elif suffix in (".jsonl", ".ndjson"):
        table = _read_jsonl(path, encoding)
    else:
        raise InputError(path, f"unsupported file type '{suffix or '(none)'}'",
                         hint=f"use one of {', '.join(SUPPORTED)}")
    if table.n_records == 0:
        raise InputError(path, "has a header but no rows", hint="export the catalog again with its rows")
    log.info("read %s: %d rows, %d unreadable%s", path, table.frame.height, len(table.rejects),
             f", fields separated by {table.delimiter!r}" if table.delimiter is not None else "")
    return table


def decode_file(path: Path, encoding: str) -> str:
    """A text file's contents (a UTF-8 BOM dropped); empty or undecodable: an InputError naming it."""
    data = path.read_bytes()
    if not data.strip():
        raise InputError(path, "is empty", hint="export the catalog again")
    enc = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        return data.decode(enc)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(path, f"bytes {data[exc.start:exc.start + 4]!r} on line {line} are not valid {encoding}",
                         row=line, hint="save the file as UTF-8, or pass --encoding with the file's encoding "
                                        "(e.g. --encoding cp1252)") from None
    except LookupError:
        raise InputError(path, f"unknown encoding '{encoding}'", hint="pass a Python codec name such as utf-8 or cp1252") from None


def _header_names(raw: list[str]) -> list[str]:
    names: list[str] = []
    for i, name in enumerate(raw):
        name = name.strip() or f"unnamed_{i + 1}"
        base, n = name, 2
        while name in names:
            name, n = f"{base}_{n}", n + 1
        names.append(name)
    return names


def _frame(names: list[str], rows: list[list[str]], row_numbers: list[int]) -> pl.DataFrame:
    data = {name: [r[i] for r in rows] for i, name in enumerate(names)}
    data[ROW] = row_numbers
    return pl.DataFrame(data, schema={**{n: pl.String for n in names}, ROW: pl.Int64})


MAX_FIELD_CHARS = 2**31 - 1
"""The csv module's field limit while a catalog is read (its default, 131,072 characters, refuses
long HTML descriptions in well-quoted files); the largest value a C long takes on every platform."""


def _read_delimited(path: Path, delimiter: str | None, default: str, encoding: str) -> Table:
    previous = csv.field_size_limit(MAX_FIELD_CHARS)  # process-wide: put back when done
    try:
        return _parse_delimited(path, delimiter, default, encoding)
    finally:
        csv.field_size_limit(previous)


def _parse_delimited(path: Path, delimiter: str | None, default: str, encoding: str) -> Table:
    text = decode_file(path, encoding)
    delimiter = delimiter if delimiter is not None else sniff_delimiter(text, default)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise InputError(path, "is empty", hint="export the catalog again") from None
    names = _header_names(header)
    rows: list[list[str]] = []
    numbers: list[int] = []
    rejects: list[Reject] = []
    start = reader.line_num + 1
    try:
        for record in reader:
            if record and any(v.strip() for v in record):
                if len(record) == len(names):
                    rows.append(record)
                    numbers.append(start)
                else:
                    rejects.append(Reject(
                        row=start, id=record[0].strip() if record else "",
                        reason=f"malformed row: {len(record)} fields where the header has {len(names)} "
                               "(a quote left open or an unquoted delimiter?); fix the row and run again",
                        text=delimiter.join(record)[:300]))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise InputError(path, f"cannot be parsed as {'TSV' if delimiter == chr(9) else 'CSV'}: {exc}",
                         row=start, hint="check the quoting around that row") from None
    return Table(path, _frame(names, rows, numbers), rejects, delimiter)


def cell_text(value: object) -> str:
    """A spreadsheet or JSON cell as text: None is "", a whole float has no ".0"."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _read_xlsx(path: Path) -> Table:
    from openpyxl import load_workbook

    try:
        book = load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many types for a damaged file
        raise InputError(path, f"cannot be opened as an Excel workbook ({exc.__class__.__name__}: {exc})",
                         hint="open it in Excel and save it again as .xlsx") from None
    try:
        sheet = book.worksheets[0]
        it = sheet.iter_rows(values_only=True)
        header = next(it, None)
        if header is None or not any(v is not None for v in header):
            raise InputError(path, "first sheet is empty", hint="put the catalog on the first sheet, header in row 1")
        names = _header_names([cell_text(v) for v in header])
        rows, numbers = [], []
        for number, values in enumerate(it, start=2):
            cells = [cell_text(v) for v in values][: len(names)]
            cells += [""] * (len(names) - len(cells))
            if any(c.strip() for c in cells):
                rows.append(cells)
                numbers.append(number)
    finally:
        book.close()
    return Table(path, _frame(names, rows, numbers))


def _read_parquet(path: Path) -> Table:
    try:
        frame = pl.read_parquet(path)
    except Exception as exc:  # polars raises ComputeError/OSError for a damaged file
        raise InputError(path, f"cannot be read as Parquet ({exc.__class__.__name__})",
                         hint="write the file again") from None
    nested = [c for c, t in frame.schema.items() if t.is_nested()]
    if nested:
        raise InputError(path, f"nested columns {nested} are not supported",
                         hint="flatten them to text columns")
    frame = frame.select([pl.col(c).cast(pl.String).fill_null("").alias(c) for c in frame.columns])
    frame = frame.with_columns(pl.int_range(1, frame.height + 1, dtype=pl.Int64).alias(ROW))
    return Table(path, frame)


def _read_jsonl(path: Path, encoding: str) -> Table:
    text = decode_file(path, encoding)
    records: list[dict] = []
    numbers: list[int] = []
    rejects: list[Reject] = []
    names: dict[str, None] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            rejects.append(Reject(row=number, reason=f"malformed JSON line ({exc.msg}); fix the line and run again",
                                  text=line[:300]))
            continue
        if not isinstance(obj, dict):
            rejects.append(Reject(row=number, reason="line is not a JSON object; each line must be {...}",
                                  text=line[:300]))
            continue
        for key in obj:
            names.setdefault(str(key), None)
        records.append(obj)
        numbers.append(number)
    cols = list(names)
    rows = [[cell_text(r.get(c)) if not isinstance(r.get(c), (dict, list)) else json.dumps(r.get(c))
             for c in cols] for r in records]
    return Table(path, _frame(cols, rows, numbers), rejects)
