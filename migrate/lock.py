"""One run at a time per state folder: an exclusive ``flock`` on ``DIR/lock``.

The kernel releases a ``flock`` when its process dies, however it dies, so a lock can never be
left held by a dead process. The file also records who took it (pid, host, start time, command):
when a run finds that record without a live holder, the previous run died before it finished and
its lock is *stale*; the run says so (``RunLock.stale`` holds the dead run's record) and goes on
from the last good state.

>>> with RunLock("/tmp/taxmig-doctest-state", command="reconcile") as lock:  # doctest: +SKIP
...     lock.stale  # None, or the record of a run that died holding the lock
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

from migrate.errors import TaxmigError

log = logging.getLogger(__name__)
LOCK_FILE = "lock"


EXIT_LOCKED = 3
"""Exit code of a command refused because another run holds the state lock (README "Exit codes")."""


class LockHeldError(TaxmigError):
    """Another live run holds the state folder; nothing was done."""

    exit_code = EXIT_LOCKED


class RunLock:
    """Context manager holding the state folder's lock for the duration of a run."""

    def __init__(self, state_dir: str | Path, *, command: str) -> None:
        self.path = Path(state_dir) / LOCK_FILE
        self.command = command
        self.stale: dict[str, Any] | None = None
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_record(fd)
            os.close(fd)
            who = (f"pid {holder.get('pid')} on {holder.get('host')}, '{holder.get('command')}' started "
                   f"{holder.get('started')}") if holder else "another process"
            raise LockHeldError(f"{self.path.parent}: another run holds the state lock ({who})",
                                hint="wait for it to finish; runs on one state folder never overlap") from None
        earlier = _read_record(fd)
        if earlier:  # a record but no holder: that run died before it released the lock
            self.stale = earlier
            log.warning("stale lock: the run '%s' (pid %s, started %s) ended without finishing; "
                        "continuing from the last good state", earlier.get("command"), earlier.get("pid"),
                        earlier.get("started"))
        record = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                  "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        """Clear the record (a clean end) and drop the lock."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
            os.fsync(self._fd)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_record(fd: int) -> dict[str, Any] | None:
    data = os.pread(fd, 4096, 0)
    if not data.strip():
        return None
    try:
        record = json.loads(data.decode("utf-8", "replace"))
    except json.JSONDecodeError:
        return {"command": "unknown", "pid": -1, "host": "", "started": "unknown"}
    return record if isinstance(record, dict) else None
