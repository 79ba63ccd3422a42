"""An encoder worker process, started before a nightly run knows it must encode.

A night that encodes a few new or changed products spends about a second importing torch and
loading the model's TorchScript trace (:mod:`models.runtime`) before it can encode; until then it
is busy with its own imports and reading the state and the catalog, on one core. So ``taxmig
reconcile`` first starts a worker process (:func:`start`) that imports torch on another core in
the meantime. When the night needs the model, :func:`models.registry.lazy_encoder` loads the trace
in that worker and encodes through it (:class:`SideEncoder`): the same runtime class on the same
texts, so the same vectors. The worker is killed when the run ends (:func:`stop`), used or not.

Started only with two or more cores (on one it would take the night's own), only when the
catalog changed since the last night (a night with an unchanged file encodes nothing), and never
with ``TAXMIG_SIDE_WORKER=0``. Whatever goes wrong in the worker, the night loads the model itself,
as it would without one. The nights it serves: BENCHMARKS.md, "reconcile: BigBasket nightly, 1%
changed, onto a taxonomy" (``TAXMIG_SIDE_WORKER=0`` runs the same night without it).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Sequence

import numpy as np

log = logging.getLogger(__name__)

ENV = "TAXMIG_SIDE_WORKER"
"""``0`` keeps the encoder in the night's own process (a machine shared with other work, say)."""

_worker: "SideWorker | None" = None
_encoder = None  # in the worker: the runtime encoder loaded there


PARENT_POLL = 0.5  # seconds between the worker's checks that the night that started it is alive
IDLE_TIMEOUT = 600  # seconds: an idle worker exits (loky starts another, which loads again, if the night
# asks later); far above the gaps between a night's encodes, a bound on a worker nobody stops


def _watch_parent(parent: int) -> None:
    """In the worker: exit as soon as the night that started it is gone (killed, say): an orphan
    would otherwise wait for work that never comes, holding the model's memory."""
    while True:
        time.sleep(PARENT_POLL)
        if os.getppid() != parent:
            os._exit(0)


def _prepare(parent: int) -> tuple[bool, str]:
    """In the worker: watch the parent, import torch; (whether it sees a CUDA GPU -- then the night
    encodes there, not here --, its version, which names the exports it reads)."""
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    import torch

    return bool(torch.cuda.is_available()), str(torch.__version__)


def _loaded(folder: str):
    """In the worker: the TorchScript export in ``folder``, loaded once."""
    global _encoder
    if _encoder is None or _encoder.folder != folder:
        from models.runtime import TorchScriptRuntimeEncoder

        _encoder = TorchScriptRuntimeEncoder(folder)
    return _encoder


def _load(folder: str) -> int:
    return _loaded(folder).dimension


def _encode(folder: str, texts: list[str], options: dict[str, Any]) -> np.ndarray:
    return _loaded(folder).encode(texts, **options)


class SideEncoder:
    """The encoder loaded in the worker, with the methods taxmig's Embedder calls."""

    engine = "TorchScript, in a worker process"

    def __init__(self, pool, folder: str) -> None:
        self.folder = folder
        self._pool = pool
        self._here = None  # the same runtime in this process, once the worker has failed
        self.dimension = pool.submit(_load, folder).result()

    def get_sentence_embedding_dimension(self) -> int:
        return self.dimension

    get_embedding_dimension = get_sentence_embedding_dimension

    def encode(self, texts: Sequence[str], **options: Any) -> np.ndarray:
        texts = [str(t) for t in texts]
        if self._here is None:
            try:
                return self._pool.submit(_encode, self.folder, texts, options).result()
            except Exception as exc:  # the worker died (killed, out of memory): encode here instead
                log.warning("encoder worker process failed (%s); loading the model in this process", exc)
                from models.runtime import TorchScriptRuntimeEncoder

                self._here = TorchScriptRuntimeEncoder(self.folder)
        return self._here.encode(texts, **options)


class SideWorker:
    """One worker process (loky's, as the classifier's pool) that has begun importing torch."""

    def __init__(self) -> None:
        from loky import ProcessPoolExecutor

        # loky restarts a worker whose memory grew 300 MB past its first task's (a leak, it assumes,
        # when psutil is installed); this one grows by the model it loads, by design
        self._pool = ProcessPoolExecutor(1, timeout=IDLE_TIMEOUT, env={"LOKY_MAX_MEMORY_LEAK_SIZE": "1e15"})
        self._torch = self._pool.submit(_prepare, os.getpid())

    def on_cpu(self, device: str | None) -> bool:
        """Whether torch encodes on the CPU for ``device`` (None: CUDA when the worker's torch sees a GPU)."""
        return device == "cpu" or (device is None and not self._torch.result()[0])

    @property
    def torch_version(self) -> str:
        return self._torch.result()[1]

    def encoder(self, folder: str) -> SideEncoder:
        return SideEncoder(self._pool, folder)

    def close(self) -> None:
        self._pool.shutdown(wait=False, kill_workers=True)


def start() -> SideWorker | None:
    """Start the worker for this process (see the module doc for when); the worker, or None."""
    global _worker
    if _worker is None and os.environ.get(ENV, "1") != "0" and (os.cpu_count() or 1) >= 2:
        try:
            _worker = SideWorker()
        except Exception as exc:  # an optimisation: without it the night loads the model itself
            log.info("no encoder worker process (%s)", exc)
    return _worker


def current() -> SideWorker | None:
    """The worker :func:`start` started and :func:`stop` has not stopped, if any."""
    return _worker


def stop() -> None:
    """Kill the worker, if one was started (its work, if any, is done: the night has ended)."""
    global _worker
    if _worker is not None:
        _worker.close()
        _worker = None
