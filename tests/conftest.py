"""Shared fixtures: the real data beside the checkout, the bundled model loaded once per session."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from migrate.core.embedding import RememberingModel
from migrate.core.embedding_cache import EmbeddingCache

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs a test process per core (pytest -n auto): torch's default of a thread per core
    # in each of them oversubscribes the machine. On 2 cores, at 1fd0284: 380 s with the default
    # threads, 189-191 s with one (`pytest -n 2 --dist loadfile`, without and with
    # OMP_NUM_THREADS=1), 221 s in one process (`pytest`). The processes the tests start inherit it.
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("TAXMIG_DATA_DIR", ROOT.parent / "shared" / "data"))
SAMPLES = ROOT / "sample_catalogs"


HEAVY_FIRST = ("test_migrate_e2e.py", "test_match.py", "test_backends.py", "test_train.py", "test_distill.py",
               "test_ray_engine.py", "test_nightly.py", "test_review_rounds.py", "test_classifier.py",
               "test_match_unsupervised.py")
"""The test files that take longest. They start first, so that under ``make test``'s one process per
core no process is left with a long file while the others wait: test_migrate_e2e first and test_match
beside it (test_backends and test_distill read the vectors test_migrate_e2e's runs encode -- the
sample taxonomy's category texts, BigBasket's seeded sample -- from the session's memory, and started
beside it would encode them again), then longest first. Durations summed per file at 3c4aa67
(``pytest -n auto --dist loadfile --no-loadscope-reorder --durations=0`` on 2 cores): test_backends
51 s, test_migrate_e2e 43, test_train 34, test_match 33, test_distill 32, test_ray_engine 26,
test_nightly 24, test_review_rounds 11, test_classifier 10, test_match_unsupervised 8, every other
file under 7 s: 321 s of test time in all (373 s with the tests of bd4a284 on the same library code)."""


MAX_TEST_PROCESSES = 4
"""At most this many test processes for ``-n auto``. Each repeats the session's set-up (torch, the
model, the data) and reaches about 1.9 GB (peak RSS of ``/usr/bin/time -v pytest tests/test_train.py
tests/test_migrate_e2e.py``), and the longest file is 51 s of about 320 s of test time
(``HEAVY_FIRST``'s run): past 4 processes the wall time gains little and the memory grows."""


def pytest_xdist_auto_num_workers(config) -> int:
    """``make test``'s ``-n auto``: the cores this process may run on -- its CPU affinity and, in a
    container, the cgroup's CPU quota (xdist's own count, psutil's, is the host's cores and sees
    neither) -- at most :data:`MAX_TEST_PROCESSES`."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cores = min(cores, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return max(1, min(cores, MAX_TEST_PROCESSES))


def pytest_collection_modifyitems(config, items) -> None:
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file keeps its order


def data_file(*parts: str) -> Path:
    """A file of the real data set; a missing file fails the test (it must not pass by skipping)."""
    path = DATA_DIR.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"{path} not found: tests read the real data from ../shared/data (or set TAXMIG_DATA_DIR)")
    return path


@pytest.fixture(scope="session")
def bigbasket() -> pl.DataFrame:
    """The full BigBasket product list as text columns."""
    return pl.read_csv(data_file("bigbasket", "products.csv"), infer_schema=False)


@pytest.fixture(autouse=True, scope="session")
def fp32_on_every_cpu():
    """``--precision auto`` means fp32 in this process and the ones the tests start, whatever the
    CPU (``TAXMIG_PRECISION``): the suite's figures are fp32's on every machine (test_backends
    checks the resolution itself)."""
    from models.registry import PRECISION_ENV

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(PRECISION_ENV, "fp32")
        yield


@pytest.fixture(scope="session")
def migrator(private_cache, fp32_on_every_cpu):
    """The bundled base encoder, loaded once for the whole session (remembering what it encoded,
    and what ``make test``'s other processes encoded with it: :class:`SessionVectors`)."""
    from migrate.core.encoder import Encoder
    from migrate.mapping.pipeline import Migrator
    from models import load_encoder, resolve_model

    ref = resolve_model(None)
    model, fp = load_encoder(ref)
    remembering = SessionVectors(model, private_cache / "session-vectors.sqlite", fp)
    return Migrator(Encoder(remembering, ref.name, fp))  # tests map the same samples again and again


class SessionVectors(RememberingModel):
    """The session model's memory of the unit vectors it encoded (:class:`RememberingModel`), shared
    by ``make test``'s processes through a file in the session's cache folder: a text one process
    encoded, another reads back instead of encoding it again (test files that map the same real rows
    -- the demo sample, BigBasket's seeded samples, the Instacart set -- run in whichever process is
    free). The calls remembered are :class:`RememberingModel`'s; every other call goes to the model.
    What a run counts as encoded is its :class:`~migrate.core.embedding.Embedder`'s, as before."""

    def __init__(self, model, path: Path, key: str) -> None:
        super().__init__(model)
        self._path, self._key = path, f"tests-session:{key}"

    def encode(self, sentences, *args, **kwargs):
        remembered = not (args or set(kwargs) - self.EMBEDDER_OPTIONS or not kwargs.get("normalize_embeddings")
                          or not kwargs.get("convert_to_numpy", True) or isinstance(sentences, str))
        missing = [t for t in dict.fromkeys(sentences) if t not in self._memory] if remembered else []
        if not missing:
            return super().encode(sentences, *args, **kwargs)
        with EmbeddingCache(self._path) as shared:
            found, absent = shared.get(self._key, missing)
            gone = set(absent)
            self._memory.update(zip((t for i, t in enumerate(missing) if i not in gone), found))
            vectors = super().encode(sentences, **kwargs)  # encodes the texts no process had
            if absent:
                new = [missing[i] for i in absent]
                shared.put(self._key, new, np.stack([self._memory[t] for t in new]))
        return vectors


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory):
    """taxmig's cache (category vectors, exports, traces, compiled models) in a folder of this test
    run's own, never the user's: one folder for all of ``make test``'s processes (the sample
    taxonomy's category texts are encoded by the first process that maps onto it, and read back
    from the category cache by the others, as a user's second run does) and for the processes the
    tests start. Tests of the cache itself give themselves a folder of their own."""
    from models.cache import EXPORTS_ENV

    base = tmp_path_factory.getbasetemp()
    shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "taxmig-cache"
    shared.mkdir(exist_ok=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(EXPORTS_ENV, str(shared))
        yield shared


@pytest.fixture(scope="module")
def export_cache(tmp_path_factory):
    """An export cache of the requesting test module's own (the backend tests: their exports and
    compiled models start from nothing and are seen by that module alone)."""
    from models.cache import EXPORTS_ENV

    cache = tmp_path_factory.mktemp("taxmig-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(EXPORTS_ENV, str(cache))
        yield cache


@pytest.fixture(scope="session")
def traced_bundled_model(migrator, private_cache) -> Path:
    """The bundled model's TorchScript trace in the session's export cache, where the first night
    on a machine leaves it: the nights and Ray actors the tests start as processes load it, as
    later nights do (commands run in-process get the session's model and never trace it)."""
    from models import resolve_model
    from models.registry import torchscript_dir
    from models.runtime import TORCHSCRIPT_FILE, export_torchscript

    from filelock import FileLock

    folder = torchscript_dir(migrator.encoder.fingerprint)
    with FileLock(private_cache / "trace.lock"):  # the test processes share the cache: one traces
        if not (folder / TORCHSCRIPT_FILE).is_file():
            folder.mkdir(parents=True, exist_ok=True)
            export_torchscript(migrator.encoder.model._model, resolve_model(None).location, folder)
    return folder


@pytest.fixture(autouse=True, scope="session")
def session_model_for_commands(migrator):
    """Commands run in-process (click's CliRunner, run_migration, reconcile) get the session's
    bundled model instead of loading it again, when they ask for exactly it (torch, fp32, the
    default device); every other model, backend or precision loads as usual. Training loads its
    own copy (``models.load_encoder``, not patched): it changes the weights it trains."""
    import migrate.core.encoder as core_encoder
    import models.registry as registry
    from models import side_worker

    original = registry.load_encoder
    bundled = registry.resolve_model(None).location
    patch = pytest.MonkeyPatch()

    def load_encoder(ref, *, device=None, allow_download=False, trust_remote_code=False, precision="auto",
                     backend="torch"):
        if (ref.is_local and ref.location == bundled and device is None
                and registry.resolve_precision(precision, backend, device) == "fp32"
                and backend == "torch" and not trust_remote_code):
            return migrator.encoder.model, migrator.encoder.fingerprint
        return original(ref, device=device, allow_download=allow_download, trust_remote_code=trust_remote_code,
                        precision=precision, backend=backend)

    load_encoder.__wrapped__ = original  # for the tests of loading itself
    patch.setattr(registry, "load_encoder", load_encoder)
    patch.setattr(core_encoder, "load_encoder", load_encoder)
    # no encoder worker process for a `reconcile` run in-process: it would load the model a second
    # time; test_backends tests the worker itself, and nights in real processes start theirs
    patch.setattr(side_worker, "start", lambda: None)
    yield
    patch.undo()


@contextlib.contextmanager
def counting_model_loads():
    """Count the encoder loads a block asks for (``migrate.core.encoder.load_model``'s, eager or
    lazy): an input error must stop a command before any, however busy the machine."""
    import migrate.core.encoder as core_encoder

    loads: list[str] = []
    eager, lazy = core_encoder.load_encoder, core_encoder.lazy_encoder

    def count(load):
        def counted(ref, *args, **kwargs):
            loads.append(str(ref))
            return load(ref, *args, **kwargs)
        return counted

    core_encoder.load_encoder, core_encoder.lazy_encoder = count(eager), count(lazy)
    try:
        yield loads
    finally:
        core_encoder.load_encoder, core_encoder.lazy_encoder = eager, lazy

