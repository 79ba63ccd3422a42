"""What a run reports: its facts, read by attribute, and the Summary rows they render into.

Every command (``migrate``, ``match``, ``crosswalk``, the nightly ``reconcile``) fills one
:class:`RunFacts`. The CLI, the nightly job and the JSON summary read numbers from it by attribute,
never back from the Summary sheet's English labels (renaming a label changes nothing they read).
:func:`summary_rows` renders the Summary sheet's rows for every command in one shape -- at a
glance, the run's identity, what was read, the model, how it was done, what came out, what it
cost -- and :func:`summary_json` the JSON sidecar: the same rows plus the facts under ``"facts"``.

>>> facts = RunFacts("migrate", model="m", fingerprint="f", rows=3, mapped=3, needs_review=1, unflagged=2)
>>> rows = summary_rows(facts, glance={"Rows to review": 1}, inputs=[("Source rows", 3)])
>>> [label for label, _ in rows][:6]
['At a glance', 'Run id', 'Run time (UTC)', 'taxmig version', 'Command', 'Source rows']
>>> summary_json(facts, rows)["facts"]["needs_review"]
1
"""

from __future__ import annotations

import datetime as dt
import re
import shlex
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from migrate import __version__

Row = tuple[str, Any]

GLANCE = "At a glance"
GUIDE = "What to do with this file"
"""The Summary's block, right after :data:`GLANCE`, that tells a reviewer which column to fill and
the exact command that reads the workbook back (:func:`review_guide`)."""


def new_run_id() -> str:
    """A short random run id (12 hex characters)."""
    return uuid.uuid4().hex[:12]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass
class RunFacts:
    """The numbers and names of one run, for code to read. Counts a command does not have stay at
    their defaults (0 or None)."""

    command: str                     # migrate | match | crosswalk | reconcile
    run_id: str = field(default_factory=new_run_id)
    started: dt.datetime = field(default_factory=utc_now)
    version: str = __version__
    model: str = ""
    fingerprint: str = ""
    rows: int = 0                    # input rows read (source products, left products, old categories)
    mapped: int = 0                  # rows in the output (mapped, matched against)
    rejected: int = 0                # input rows in the rejects list
    needs_review: int = 0            # output rows flagged for a person
    unflagged: int = 0               # output rows safe to accept as they are
    decided: int = 0                 # rows a person decided in an earlier round (kept as decided)
    target_categories: int = 0       # categories a row may go to (migrate, crosswalk: the new taxonomy's)
    matches: int = 0                 # match: pairs called matches
    clusters: int = 0                # match --within: duplicate clusters of 2+ products
    calibration: str = ""            # how the confidence was calibrated, in words
    thresholds: dict[str, Any] = field(default_factory=dict)
    encoded: int = 0                 # distinct texts encoded by the model
    cached: int | None = None        # texts read from the embedding cache (None: no cache used)
    scores_kept: int = 0             # a night: products whose scores were kept (inputs unchanged)
    target_side: str | None = None   # a night: where the fitted target side came from
    encode_seconds: float = 0.0
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)  # wall seconds by stage of the progress display
    output: str | None = None        # the file the run writes its result to, as given (None: not told)
    state: str | None = None         # the state folder the run keeps, as given (None: none, or not told)

    def as_json(self) -> dict[str, Any]:
        """The facts as JSON-ready values (the time as ISO 8601)."""
        out = asdict(self)
        out["started"] = self.started.isoformat()
        return out


def summary_rows(facts: RunFacts, *, glance: dict[str, Any] | None = None, guide: dict[str, str] | None = None,
                 lead: Iterable[Row] = (), inputs: Iterable[Row] = (), method: Iterable[Row] = (),
                 outcome: Iterable[Row] = (), cost: Iterable[Row] = ()) -> list[Row]:
    """The Summary sheet's (label, value) rows of any command: ``glance`` ("At a glance"),
    ``guide`` (:data:`GUIDE`, :func:`review_guide`) and ``lead`` first, then the run's id, time,
    version and command, ``inputs`` (what was read), the model, ``method`` (how it was scored,
    thresholds, calibration), ``outcome`` (what came out), and the encoding and run times from
    ``facts`` followed by ``cost``."""
    rows: list[Row] = [(GLANCE, glance)] if glance else []
    if guide:
        rows.append((GUIDE, guide))
    rows += list(lead)
    rows += [("Run id", facts.run_id), ("Run time (UTC)", facts.started.isoformat()),
             ("taxmig version", facts.version), ("Command", facts.command)]
    rows += list(inputs)
    rows += [("Model", facts.model), ("Model fingerprint", facts.fingerprint)]
    rows += list(method)
    rows += list(outcome)
    rows.append(("Texts encoded (distinct)", facts.encoded))
    if facts.cached is not None:
        rows.append(("Texts read from the embedding cache", facts.cached))
    rows += [("Encode seconds", round(facts.encode_seconds, 2)), ("Run seconds", round(facts.seconds, 2))]
    if facts.stage_seconds:
        rows.append(("Seconds by stage", {name: round(sec, 2) for name, sec in facts.stage_seconds.items()}))
    rows += list(cost)
    return rows


def summary_json(facts: RunFacts, rows: list[Row]) -> dict[str, Any]:
    """The JSON summary: the Summary sheet's rows by label, and the facts under ``"facts"``."""
    return {**dict(rows), "facts": facts.as_json()}


# --- what a reviewer does with the workbook -----------------------------------------------------

_ROUND = re.compile(r"^(?P<base>.+)_round(?P<n>[0-9]+)$")


def review_paths(workbook: str) -> tuple[str, str]:
    """The final mapping and the next round's workbook the first page proposes beside ``workbook``:
    ``NAME_final.csv`` (its own each round: an existing output is never replaced) and, for a
    round's workbook ``BASE_roundN.xlsx``, round N + 1 of the same BASE.

    >>> review_paths("out/demo_mapping.xlsx")
    ('out/demo_mapping_final.csv', 'out/demo_mapping_round1.xlsx')
    >>> review_paths("out/demo_mapping_round1.xlsx")
    ('out/demo_mapping_round1_final.csv', 'out/demo_mapping_round2.xlsx')
    """
    path = Path(workbook)
    match = _ROUND.match(path.stem)
    base, n = (match["base"], int(match["n"])) if match else (path.stem, 0)
    return str(path.with_name(f"{path.stem}_final.csv")), str(path.with_name(f"{base}_round{n + 1}.xlsx"))


def review_command(workbook: str, state: str, *, next_round: bool) -> str:
    """The shell command (quoted where a path needs it) that reads the reviewed ``workbook`` back
    into ``state`` and writes :func:`review_paths`' final mapping; with ``next_round`` (a state
    onto a taxonomy) also the next round's workbook.

    >>> review_command("out/demo_mapping.xlsx", "out/demo_state", next_round=True)
    'taxmig review apply out/demo_mapping.xlsx --state out/demo_state -o out/demo_mapping_final.csv --next out/demo_mapping_round1.xlsx'
    >>> review_command("my files/cw.xlsx", "cw_state", next_round=False)
    "taxmig review apply 'my files/cw.xlsx' --state cw_state -o 'my files/cw_final.csv'"
    """
    final, following = review_paths(workbook)
    args = ["taxmig", "review", "apply", workbook, "--state", state, "-o", final]
    return shlex.join(args + (["--next", following] if next_round else []))


def review_guide(where: str, how: str, *, workbook: str | None, state: str | None, next_round: bool, command: str,
                 in_state: bool | None = None, rows: str = "product") -> dict[str, str]:
    """The :data:`GUIDE` block: ``where`` (the sheets whose ``decision`` column to fill), ``how``
    (the choices), how to save, and the exact command that reads the workbook back, naming this
    run's ``workbook`` and ``state``.

    ``in_state``: the run keeps a state folder (default: ``state`` is given); one kept but not named
    (a round whose paths the writer was not told) shows STATE, THIS.xlsx, FINAL.csv and NEXT.xlsx
    to fill in. A run without one cannot be read back: the block says to run ``taxmig {command}``
    again with ``--state``. ``rows``: what one row of the final mapping is."""
    in_state = state is not None if in_state is None else in_state
    steps = {"1. Fill the 'decision' column": where, "2. Choose": how}
    if not in_state:
        steps["3. Read it back"] = (
            f"taxmig review apply reads the decisions into the state folder a run starts with --state, and this run "
            f"started none: run the same taxmig {command} again with --state DIR added, decide in that workbook, "
            f"save it, then: taxmig review apply WORKBOOK --state DIR -o FINAL.csv")
        return steps
    if workbook is not None and state is not None:
        final, following = review_paths(workbook)
        command_line = review_command(workbook, state, next_round=next_round)
    else:
        workbook, final, following = workbook or "THIS.xlsx", "FINAL.csv", "NEXT.xlsx"
        command_line = shlex.join(["taxmig", "review", "apply", workbook, "--state", state or "STATE", "-o", final,
                                   *(["--next", following] if next_round else [])])
        if state is None:
            command_line += " (STATE: the state folder this round's taxmig review apply used)"
    steps["3. Save"] = f"save the workbook ({workbook}); saved under another name, put that name in the command"
    steps["4. Read it back"] = command_line
    steps["5. What that writes"] = (
        f"{final}: every {rows}'s final category (its decision, else the suggestion)"
        + (f"; {following}: the next round, the undecided rows mapped again with your decisions, and new questions"
           if next_round else ""))
    return steps


def with_guide(rows: list[Row], guide: dict[str, str]) -> list[Row]:
    """``rows`` with ``guide`` as the :data:`GUIDE` block right after :data:`GLANCE` (first when
    there is none), replacing an earlier one."""
    rows = [row for row in rows if row[0] != GUIDE]
    labels = [label for label, _ in rows]
    at = labels.index(GLANCE) + 1 if GLANCE in labels else 0
    return [*rows[:at], (GUIDE, guide), *rows[at:]]
