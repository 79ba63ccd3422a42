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
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from migrate import __version__

Row = tuple[str, Any]


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

    def as_json(self) -> dict[str, Any]:
        """The facts as JSON-ready values (the time as ISO 8601)."""
        out = asdict(self)
        out["started"] = self.started.isoformat()
        return out


def summary_rows(facts: RunFacts, *, glance: dict[str, Any] | None = None, lead: Iterable[Row] = (),
                 inputs: Iterable[Row] = (), method: Iterable[Row] = (), outcome: Iterable[Row] = (),
                 cost: Iterable[Row] = ()) -> list[Row]:
    """The Summary sheet's (label, value) rows of any command: ``glance`` ("At a glance") and
    ``lead`` first, then the run's id, time, version and command, ``inputs`` (what was read), the
    model, ``method`` (how it was scored, thresholds, calibration), ``outcome`` (what came out),
    and the encoding and run times from ``facts`` followed by ``cost``."""
    rows: list[Row] = [("At a glance", glance)] if glance else []
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
    rows += list(cost)
    return rows


def summary_json(facts: RunFacts, rows: list[Row]) -> dict[str, Any]:
    """The JSON summary: the Summary sheet's rows by label, and the facts under ``"facts"``."""
    return {**dict(rows), "facts": facts.as_json()}
