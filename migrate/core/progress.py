"""One progress display per run: the stage it is in, the stage's count, its rate and time left.

A run (a migration, a night, a crosswalk, a match) opens one :class:`Progress`; its stages --
reading, encoding products, encoding categories, scoring, self-training, writing -- report to it
one after another on the same line of stderr (a tqdm bar, reset for each stage)::

    encoding products:  41%|██████▌         | 123/300 texts [00:02<00:03, 52.1 texts/s]

Nothing is drawn with ``enabled=False`` (``--quiet``) or when stderr is not a terminal (a pipe, a
log file, a scheduler); the stages are recorded all the same (:attr:`Progress.stages`). Library
code never prints: it reports to the display it is given, or to the one opened around it
(:func:`current`, :func:`display_for`). Log lines go above the bar, not through it
(:class:`LogHandler`, the CLI's).

>>> with Progress(enabled=False) as display:
...     with display.stage("encoding products", total=3, unit="texts") as stage:
...         stage.update(2)
...         with display.stage("a step inside it", total=1) as inner:  # counts towards the open stage
...             inner.update(1)
>>> [(s.name, s.n, s.total) for s in display.stages]
[('encoding products', 3, 3)]
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from contextvars import ContextVar
from typing import IO, Iterator

from tqdm import tqdm

_CURRENT: ContextVar["Progress | None"] = ContextVar("taxmig_progress", default=None)

COUNTED = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {unit} [{elapsed}<{remaining}, {speed}]"
UNCOUNTED = "{desc}: {n_fmt} {unit} [{elapsed}, {speed}]"
"""The bar of a stage whose total is known (count, share, time left), and of one whose total is not."""


class _Bar(tqdm):
    """tqdm with the stage's speed in words: "52.1 texts/s", or "9.8 s each" for slow items (a
    model loaded, a round of self-training) where tqdm would write "9.8s/texts"."""

    @property
    def format_dict(self):
        values = super().format_dict
        rate, unit = values.get("rate"), values.get("unit")
        if not rate and values.get("n") and values.get("elapsed"):  # one update so far: the average
            rate = values["n"] / values["elapsed"]
        values["speed"] = (f"? {unit}/s" if not rate else f"{1 / rate:.1f} s each" if rate < 1
                           else f"{rate:,.1f} {unit}/s")
        return values


class Stage:
    """One stage of a run: its name, its count so far (``n``) and its total (None: unknown)."""

    def __init__(self, display: "Progress", name: str, total: int | None, unit: str) -> None:
        self.display, self.name, self.total, self.unit = display, name, total, unit
        self.n = 0
        self.started = time.perf_counter()
        self.seconds: float | None = None  # wall seconds from start to end (None while open)

    def update(self, n: int = 1) -> None:
        """``n`` more of the stage's items done."""
        if n:
            self.n += n
            self.display._advance(n)

    def complete(self) -> None:
        """The stage's count up to its total (what the steps inside it did not report)."""
        if self.total is not None and self.n < self.total:
            self.update(self.total - self.n)

    def set_total(self, total: int) -> None:
        """The total, once it is known (the rows a file held, once it is read)."""
        self.total = total
        self.display._set_total(self, total)

    def __enter__(self) -> "Stage":
        return self

    def __exit__(self, *exc) -> None:
        self.display._end(self)

    def __repr__(self) -> str:
        return f"Stage({self.name!r}, {self.n}/{self.total} {self.unit})"


class _Within:
    """A stage asked for while another is open (a search inside self-training, a chunk's
    encoding inside the mapping of a large source): its counts go to the open stage, its name
    does not replace it."""

    def __init__(self, outer: Stage) -> None:
        self.outer = outer
        self.n = 0  # this step's own count (the outer stage's n includes it)

    def update(self, n: int = 1) -> None:
        self.n += n
        self.outer.update(n)

    def complete(self) -> None:
        pass

    def set_total(self, total: int) -> None:
        pass

    def __enter__(self) -> "_Within":
        return self

    def __exit__(self, *exc) -> None:
        pass


class Progress:
    """The display of one run: a single tqdm bar on stderr that each :meth:`stage` resets (its
    name, count, rate and ETA), drawn only when ``enabled`` and stderr is a terminal (``force``:
    draw on any ``file``, for tests). Truthy when enabled: code that asks ``if progress:`` keeps
    meaning "not --quiet". Opened with ``with``, it is the :func:`current` display of the code
    running inside the block, and its bar is closed (erased) at the end."""

    FORCE = False
    """Draw even when the file is not a terminal, for every display (tests set it)."""

    def __init__(self, enabled: bool = True, *, file: IO[str] | None = None, force: bool = False) -> None:
        self.enabled = bool(enabled)
        self.file = file
        self.force = force
        self.stages: list[Stage] = []
        self._open: Stage | None = None
        self._bar: tqdm | None = None
        self._tokens: list = []

    def __bool__(self) -> bool:
        return self.enabled

    @property
    def drawn(self) -> bool:
        """Whether the bar is on screen (enabled, and on a terminal or forced)."""
        return self._bar is not None and not self._bar.disable

    def stage(self, name: str, total: int | None = None, unit: str = "rows") -> "Stage | _Within":
        """Start the next stage (the bar shows ``name``, counts from 0 to ``total`` in ``unit``);
        while another is open, a step inside that one (:class:`_Within`)."""
        if self._open is not None:
            return _Within(self._open)
        stage = Stage(self, name, total, unit)
        self.stages.append(stage)
        self._open = stage
        if not self.enabled:
            return stage
        bar_format = COUNTED if total is not None else UNCOUNTED
        if self._bar is None:  # disable=None: tqdm draws only on a terminal
            self._bar = _Bar(total=total, desc=name, unit=unit, bar_format=bar_format, file=self.file, leave=False,
                             dynamic_ncols=True, disable=False if (self.force or self.FORCE) else None)
        else:
            self._bar.unit, self._bar.bar_format = unit, bar_format
            self._bar.set_description_str(name, refresh=False)
            self._bar.miniters = 0  # tqdm's learnt updates-per-draw are the last stage's
            self._bar.total = total  # reset(None) would keep the last stage's
            self._bar.reset(total=total)
        return stage

    def _advance(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def _set_total(self, stage: Stage, total: int) -> None:
        if self._bar is not None and stage is self._open:
            self._bar.total, self._bar.bar_format = total, COUNTED
            self._bar.refresh()

    def _end(self, stage: Stage) -> None:
        if stage.seconds is None:
            stage.seconds = time.perf_counter() - stage.started
        if self._open is stage:
            self._open = None
            if self._bar is not None:
                self._bar.refresh()  # the stage's last count, not the one of a tenth of a second before

    def seconds_by_stage(self) -> dict[str, float]:
        """Wall seconds of each finished stage by name, in the order they ran (a name that ran
        more than once: its total); steps inside a stage count towards it."""
        out: dict[str, float] = {}
        for stage in self.stages:
            if stage.seconds is not None:
                out[stage.name] = out.get(stage.name, 0.0) + stage.seconds
        return out

    def close(self) -> None:
        """Erase the bar (the run's own lines, its Summary and errors, come after it)."""
        self._open = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "Progress":
        self._tokens.append(_CURRENT.set(self))
        return self

    def __exit__(self, *exc) -> None:
        _CURRENT.reset(self._tokens.pop())
        self.close()

    def __repr__(self) -> str:
        return f"Progress(enabled={self.enabled}, stages={[s.name for s in self.stages]})"


def current() -> Progress | None:
    """The display opened (``with``) around the running code, if any."""
    return _CURRENT.get()


@contextmanager
def display_for(progress: "bool | Progress") -> Iterator[Progress]:
    """The display a run reports to, the :func:`current` one inside the ``with`` block:
    ``progress`` itself when it is one (left open); with ``True``, the display opened around this
    call (the CLI's, or an outer run's: silent under ``--quiet``), else a new one for the block;
    with ``False``, the display opened around the call when that one is silent, else a silent one
    of its own (work that asks for no progress inside a shown run stays off its display). A silent
    display records its stages all the same."""
    opened = current()
    if isinstance(progress, Progress):
        token = _CURRENT.set(progress)
        try:
            yield progress
        finally:
            _CURRENT.reset(token)
    elif opened is not None and (progress or not opened.enabled):
        yield opened
    else:
        with Progress(bool(progress)) as display:
            yield display


@contextmanager
def stage_of(progress: "bool | Progress", name: str, *, total: int | None = None,
             unit: str = "rows") -> Iterator["Stage | _Within"]:
    """A stage for code that takes ``progress`` as a display or a switch (:func:`display_for`'s
    display; a step inside its open stage when one is open); ``.update(n)`` counts."""
    with display_for(progress) as display, display.stage(name, total, unit) as stage:
        yield stage


class LogHandler(logging.StreamHandler):
    """A log handler that writes its lines above the progress bar (``tqdm.write``), so that a log
    line never tears the bar and the bar is drawn again below it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)
