"""Shared fixtures: the real data beside the checkout, the bundled model loaded once per session."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("TAXMIG_DATA_DIR", ROOT.parent / "shared" / "data"))
SAMPLES = ROOT / "sample_catalogs"


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


class RememberingModel:
    """The session's model with a memory of what it encoded: tests map the same samples and the
    same taxonomy labels (1,499 categories x 3 templates) again and again, and a text encoded once
    is not encoded again. Only the call the library's Embedder makes -- a list of texts, unit
    vectors as numpy -- is remembered; anything else, and every other attribute, goes to the model."""

    EMBEDDER_OPTIONS = {"batch_size", "normalize_embeddings", "convert_to_numpy", "show_progress_bar"}

    def __init__(self, model) -> None:
        self._model = model
        self._memory: dict[str, np.ndarray] = {}

    def encode(self, sentences, *args, **kwargs):
        if (args or set(kwargs) - self.EMBEDDER_OPTIONS or not kwargs.get("normalize_embeddings")
                or not kwargs.get("convert_to_numpy", True) or isinstance(sentences, str)):
            return self._model.encode(sentences, *args, **kwargs)
        missing = [t for t in dict.fromkeys(sentences) if t not in self._memory]
        if missing:
            vectors = self._model.encode(missing, **kwargs)
            self._memory.update(zip(missing, np.asarray(vectors, dtype=np.float32)))
        if not sentences:
            return self._model.encode(sentences, **kwargs)
        return np.stack([self._memory[t] for t in sentences])

    def __getattr__(self, name):
        return getattr(self._model, name)


@pytest.fixture(scope="session")
def migrator():
    """The bundled base encoder, loaded once for the whole session (remembering what it encoded)."""
    from migrate.core.encoder import Encoder
    from migrate.mapping.pipeline import Migrator
    from models import load_encoder, resolve_model

    ref = resolve_model(None)
    model, fp = load_encoder(ref)
    return Migrator(Encoder(RememberingModel(model), ref.name, fp))


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory):
    """taxmig's cache (exports, traces, compiled models) in a folder of the session's own, for the
    commands run in-process and the processes the tests start alike; never the user's."""
    from models.registry import EXPORTS_ENV

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(EXPORTS_ENV, str(tmp_path_factory.mktemp("taxmig-cache")))
        yield


@pytest.fixture(autouse=True, scope="session")
def session_model_for_commands(migrator):
    """Commands run in-process (click's CliRunner, run_migration, reconcile) get the session's
    bundled model instead of loading it again, when they ask for exactly it (torch, fp32, the
    default device); every other model, backend or precision loads as usual. Training loads its
    own copy (``models.load_encoder``, not patched): it changes the weights it trains."""
    import migrate.core.encoder as core_encoder
    import models.registry as registry

    original = registry.load_encoder
    bundled = registry.resolve_model(None).location

    def load_encoder(ref, *, device=None, allow_download=False, trust_remote_code=False, precision="fp32",
                     backend="torch"):
        if (ref.is_local and ref.location == bundled and device is None and precision == "fp32"
                and backend == "torch" and not trust_remote_code):
            return migrator.encoder.model, migrator.encoder.fingerprint
        return original(ref, device=device, allow_download=allow_download, trust_remote_code=trust_remote_code,
                        precision=precision, backend=backend)

    load_encoder.__wrapped__ = original  # for the tests of loading itself
    patch = pytest.MonkeyPatch()
    patch.setattr(registry, "load_encoder", load_encoder)
    patch.setattr(core_encoder, "load_encoder", load_encoder)
    yield
    patch.undo()
