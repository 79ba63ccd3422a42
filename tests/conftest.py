"""Shared fixtures: the real data beside the checkout, the bundled model loaded once per session."""

from __future__ import annotations

import os
from pathlib import Path

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


@pytest.fixture(scope="session")
def migrator():
    """The bundled base encoder, loaded once for the whole session."""
    from migrate.core.encoder import Encoder
    from migrate.mapping.pipeline import Migrator
    from models import load_encoder, resolve_model

    ref = resolve_model(None)
    model, fp = load_encoder(ref)
    return Migrator(Encoder(model, ref.name, fp))
