"""A reviewed match workbook's decisions as labelled pairs: reviewers' corrections teach the next model.

``taxmig match -o matches.xlsx`` writes a ``decision`` drop-down on the Matches and Review sheets.
Read back, each decided row says something about one or two (left id, right id) pairs:

| decision | pairs |
|---|---|
| ``ACCEPT`` | the row's best candidate with the model's call (``is_match``) as the label |
| ``MATCH`` | the best candidate is the match (1) |
| ``NO MATCH`` | the best candidate is not the match (0) |
| ``ALT1 IS THE MATCH`` / ``ALT2 ...`` | that alternative is the match (1), the best candidate is not (0) |

``taxmig train-match --pairs reviewed.xlsx`` reads them like a ``left_id,right_id,label`` table
(and ``--pairs`` may be given more than once: labels plus corrections), as ``taxmig train
--decisions`` does for migration. A row whose decision is none of these, or whose pair was decided
both ways on the two sheets, is a reject with the sheet, row and reason.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from migrate.core.readers import Reject
from migrate.core.sheets import ACCEPT, DECISION_COLUMN, decision_rows, open_reviewed_workbook, workbook_run_id
from migrate.errors import InputError

MATCH, NO_MATCH, ALT1, ALT2 = "MATCH", "NO MATCH", "ALT1 IS THE MATCH", "ALT2 IS THE MATCH"
DECISION_SHEETS = ("Matches", "Review")
REQUIRED = ("left_id", "right_id", "is_match", "alt1_right_id", "alt2_right_id", DECISION_COLUMN)
TRUE_CALLS = frozenset({"true", "1", "yes"})


def is_match_workbook(path: str | Path) -> bool:
    """An ``.xlsx`` file with a Matches sheet (whose decisions :func:`decision_pairs` reads); any
    other file, a labels table kept in Excel included, is read as a table."""
    path = Path(path)
    if path.suffix.lower() != ".xlsx" or not path.is_file():
        return False
    from openpyxl import load_workbook

    try:
        book = load_workbook(path, read_only=True)
    except Exception:  # not readable as a workbook: the table reader says why
        return False
    try:
        return "Matches" in book.sheetnames
    finally:
        book.close()


def decision_pairs(path: str | Path) -> tuple[pl.DataFrame, list[Reject]]:
    """(``left_id, right_id, label, row`` -- one row per decided pair, ``row`` the sheet row of its
    decision --, rejects) of a reviewed ``taxmig match`` workbook."""
    path = Path(path)
    book = open_reviewed_workbook(path, "the reviewed match workbook (.xlsx)")
    problems: list[str] = []
    pairs: dict[tuple[str, str], tuple[int, str, int]] = {}  # (label, cell, sheet row) of the first decision
    rejects: list[Reject] = []
    conflicts: set[tuple[str, str]] = set()
    try:
        sheets = [name for name in DECISION_SHEETS if name in book.sheetnames]
        if not workbook_run_id(book) or not sheets:
            raise InputError(path, "not a review workbook of taxmig match (no Summary run id or Matches sheet)",
                             hint="give the .xlsx that 'taxmig match -o' wrote, with decisions filled in")
        for sheet in sheets:
            for number, cell, value in decision_rows(book[sheet], sheet, REQUIRED, problems):
                left, best = value("left_id").strip(), value("right_id").strip()
                decision = value(DECISION_COLUMN).strip().upper()
                alternative = {ALT1: value("alt1_right_id").strip(), ALT2: value("alt2_right_id").strip()}
                if decision == ACCEPT:
                    said = [(best, int(value("is_match").strip().lower() in TRUE_CALLS))]
                elif decision in (MATCH, NO_MATCH):
                    said = [(best, int(decision == MATCH))]
                elif decision in alternative:
                    said = [(alternative[decision], 1), (best, 0)]
                else:
                    rejects.append(Reject(row=number, id=left, text=cell,
                                          reason=f"decision '{value(DECISION_COLUMN).strip()}' is not one of "
                                                 f"{ACCEPT}, {MATCH}, {NO_MATCH}, {ALT1}, {ALT2}"))
                    continue
                for right, label in said:
                    if not left or not right:
                        rejects.append(Reject(row=number, id=left, text=cell,
                                              reason=f"{decision} names no right product on this row"))
                        continue
                    key = (left, right)
                    if key in pairs and pairs[key][0] != label:
                        conflicts.add(key)
                    pairs.setdefault(key, (label, cell, number))
        if problems:
            raise InputError(path, "; ".join(problems), hint="use the workbook 'taxmig match -o' wrote")
    finally:
        book.close()
    for key in sorted(conflicts):
        rejects.append(Reject(row=pairs[key][2], id=key[0], text=pairs[key][1],
                              reason=f"pair {key[0]} / {key[1]} decided both as a match and as not one"))
    kept = [(left, right, label, row) for (left, right), (label, _, row) in pairs.items()
            if (left, right) not in conflicts]
    frame = pl.DataFrame(kept, schema={"left_id": pl.String, "right_id": pl.String, "label": pl.Int8, "row": pl.Int64},
                         orient="row")
    return frame, rejects
