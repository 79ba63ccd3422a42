"""Formula-injection safety shared by every writer.

Product texts and category names come from untrusted catalogs. A text such as
``=HYPERLINK("http://x","click")`` must never become a live formula in a spreadsheet.

- CSV outputs: :func:`escape_csv_text` prefixes a ``'`` to formula-like text (OWASP advice).
- Excel outputs: :func:`set_text` stores the text as a plain *string* cell with the
  ``quotePrefix`` style flag, so Excel and LibreOffice show the original text unchanged and
  never evaluate it (the stored value stays the original text, without a leading ``'``).
  Control characters that XML cannot hold are dropped and text is cut to Excel's 32,767
  character cell limit, so an odd catalog cannot make openpyxl fail or Excel "repair" the file.

>>> is_formula_like("=1+1"), is_formula_like("Sugar 5 kg")
(True, False)
>>> escape_csv_text("-5 kg Sugar")
"'-5 kg Sugar"
>>> from openpyxl import Workbook
>>> cell = Workbook().active["A1"]
>>> set_text(cell, "=1+1")
>>> cell.value, cell.data_type, cell.quotePrefix
('=1+1', 's', True)
"""

from __future__ import annotations

from typing import Any

from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE, Cell

FORMULA_PREFIXES: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r")
EXCEL_MAX_TEXT = 32_767


def is_formula_like(text: str) -> bool:
    """True when a spreadsheet could read ``text`` as a formula (or DDE payload)."""
    return bool(text) and text.startswith(FORMULA_PREFIXES)


def escape_csv_text(text: str) -> str:
    """``text`` with a leading ``'`` when formula-like, else unchanged (for CSV outputs)."""
    return "'" + text if is_formula_like(text) else text


def clean_excel_text(text: str) -> str:
    """``text`` without XML-illegal control characters, cut to Excel's cell limit."""
    if ILLEGAL_CHARACTERS_RE.search(text):
        text = ILLEGAL_CHARACTERS_RE.sub("", text)
    return text[:EXCEL_MAX_TEXT]


def set_text(cell: Cell, value: Any) -> None:
    """Write ``value`` into ``cell``; formula-like text becomes a quote-prefixed string.

    Non-strings (numbers, bools, None) are written as is.
    """
    if isinstance(value, str):
        value = clean_excel_text(value)
    cell.value = value
    if isinstance(value, str):
        cell.data_type = "s"
        if is_formula_like(value):
            cell.quotePrefix = True
