"""The one exception family of taxmig.

Every failure a user can fix (a bad file, a missing column, an output that already exists)
raises :class:`TaxmigError`. The CLI turns it into a one-line message and exit code 1; library
callers catch this one class.
"""

from __future__ import annotations

from pathlib import Path


class TaxmigError(Exception):
    """Base class of every error taxmig raises on purpose.

    >>> raise TaxmigError("source.csv: no rows", hint="export the catalog again")
    Traceback (most recent call last):
    ...
    migrate.errors.TaxmigError: source.csv: no rows (fix: export the catalog again)
    """

    exit_code = 1
    """The CLI's exit code for this error (README "Exit codes")."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message} (fix: {hint})" if hint else message)


class InputError(TaxmigError):
    """An input file cannot be used as it is: names the file (and row) and how to fix it."""

    def __init__(self, path: str | Path, problem: str, *, row: int | None = None,
                 hint: str | None = None) -> None:
        where = f"{path}, row {row}" if row is not None else f"{path}"
        self.path = str(path)
        self.row = row
        super().__init__(f"{where}: {problem}", hint=hint)


class OutputExistsError(TaxmigError):
    """Refuses to replace an existing output unless the caller says so."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(f"{path} already exists", hint="pass --overwrite to replace it, or choose another -o path")


class ModelError(TaxmigError):
    """The encoder cannot be found or loaded."""
