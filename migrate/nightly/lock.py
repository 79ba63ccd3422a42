"""One run at a time per state folder: an exclusive OS lock on ``DIR/lock`` (the ``filelock``
package: ``flock`` on POSIX, ``msvcrt.locking`` on Windows).

The OS releases the lock when its process dies, however it dies, so a lock can never be left
held by a dead process. ``DIR/lock.owner`` records who took it (pid, host, start time, command)
and is emptied at a clean end: when a run finds that record without a live holder, the previous
run died before it finished and its lock is *stale*; the run says so (``RunLock.stale`` holds the
dead run's record) and goes on from the last good state.

>>> with RunLock("/tmp/taxmig-doctest-state", command="reconcile") as lock:  # doctest: +SKIP
...     lock.stale  # None, or the record of a run that died holding the lock
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from migrate.errors import TaxmigError

log = logging.getLogger(__name__)
LOCK_FILE = "lock"
OWNER_FILE = "lock.owner"


EXIT_LOCKED = 3
"""Exit code of a command refused because another run holds the state lock (README "Exit codes")."""


class LockHeldError(TaxmigError):
    """Another live run holds the state folder; nothing was done."""

    exit_code = EXIT_LOCKED


class RunLock:
    """Context manager holding the state folder's lock for the duration of a run."""

    def __init__(self, state_dir: str | Path, *, command: str) -> None:
        self.path = Path(state_dir) / LOCK_FILE
        self.owner = Path(state_dir) / OWNER_FILE
        self.command = command
        self.stale: dict[str, Any] | None = None
        self._lock: FileLock | None = None

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(self.path)
        try:
            lock.acquire(blocking=False)
        except Timeout:
            holder = _read_record(self.owner)
            who = (f"pid {holder.get('pid')} on {holder.get('host')}, '{holder.get('command')}' started "
                   f"{holder.get('started')}") if holder else "another process"
            raise LockHeldError(f"{self.path.parent}: another run holds the state lock ({who})",
                                hint="wait for it to finish; runs on one state folder never overlap") from None
        earlier = _read_record(self.owner)
        if earlier:  # a record but no holder: that run died before it released the lock
            self.stale = earlier
            log.warning("stale lock: the run '%s' (pid %s, started %s) ended without finishing; "
                        "continuing from the last good state", earlier.get("command"), earlier.get("pid"),
                        earlier.get("started"))
        record = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                  "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        _write_record(self.owner, json.dumps(record))
        self._lock = lock
        return self

    def release(self) -> None:
        """Clear the record (a clean end) and drop the lock."""
        if self._lock is None:
            return
        try:
            _write_record(self.owner, "")
        finally:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _write_record(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        data = path.read_bytes()[:4096]
    except FileNotFoundError:
        return None
    if not data.strip():
        return None
    try:
        record = json.loads(data.decode("utf-8", "replace"))
    except json.JSONDecodeError:
        return {"command": "unknown", "pid": -1, "host": "", "started": "unknown"}
    return record if isinstance(record, dict) else None
