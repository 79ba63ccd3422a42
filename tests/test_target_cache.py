"""The user-level cache of fitted target sides: a labelled target catalog is encoded and fitted once
per user, model and settings; a later run onto it maps only the source."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from migrate.mapping.fitted_target import FittedTarget, UserTargetSides
from migrate.mapping.pipeline import run_migration
from migrate.mapping.report import TARGET_SIDE_CACHE_FITTED, TARGET_SIDE_CACHE_READ
from migrate.mapping.settings import MigrationSettings
from models.cache import EXPORTS_ENV, target_sides_dir


@pytest.fixture(scope="module")
def files(bigbasket, tmp_path_factory) -> Path:
    """600 BigBasket products: 500 as a labelled target catalog, 100 as the source."""
    folder = tmp_path_factory.mktemp("target_cache")
    frame = bigbasket.filter(pl.col("product").is_not_null()).select(
        "index", "product", "brand", "category", "sub_category").sample(n=600, seed=3)
    frame.head(500).write_csv(folder / "target.csv")
    frame.tail(100).select("index", "product", "brand").write_csv(folder / "source.csv")
    return folder


@pytest.fixture
def own_cache(tmp_path, monkeypatch) -> Path:
    """A user cache of this test's own (the session's is shared by every test)."""
    monkeypatch.setenv(EXPORTS_ENV, str(tmp_path / "user-cache"))
    return tmp_path / "user-cache"


def _settings(files: Path, **kw) -> MigrationSettings:
    return MigrationSettings(source=files / "source.csv", target_catalog=files / "target.csv",
                             target_category="category,sub_category", progress=False, **kw)


def test_the_second_run_onto_a_labelled_target_maps_only_the_source(files, own_cache, migrator):
    """The first run encodes the target and fits its side, keeping it in the user's cache; the
    second reads it back: only the 100 source texts encoded, no classifier or calibration stage,
    and the very same mapping (categories, flags, confidences, thresholds)."""
    first = run_migration(_settings(files), migrator)
    second = run_migration(_settings(files), migrator)
    assert first.facts.target_side == TARGET_SIDE_CACHE_FITTED
    assert second.facts.target_side == TARGET_SIDE_CACHE_READ
    assert first.facts.encoded > 500 and second.facts.encoded <= 100
    assert {"fitting the classifier", "calibrating", "encoding the target catalog"} <= set(first.facts.stage_seconds)
    assert not {"fitting the classifier", "calibrating", "encoding the target catalog"} & set(second.facts.stage_seconds)
    assert first.mapping.equals(second.mapping) and first.thresholds == second.thresholds
    assert second.summary_dict()["Target side (classifier, calibration)"] == TARGET_SIDE_CACHE_READ
    kept = sorted(p.suffix for p in target_sides_dir().iterdir())
    assert kept == [".json", ".npz"]  # numbers and text only, never a pickle
    # another setting the fit reads is another side
    other = run_migration(_settings(files, seed=1), migrator)
    assert other.facts.target_side == TARGET_SIDE_CACHE_FITTED and len(list(target_sides_dir().glob("*.json"))) == 2


def test_no_target_cache_fits_every_time_and_keeps_nothing(files, own_cache, migrator):
    """--no-target-cache: the side is fitted in the run and nothing is written to the user's cache."""
    from click.testing import CliRunner

    from migrate.cli import main

    for _ in range(2):
        done = CliRunner().invoke(main, ["migrate", str(files / "source.csv"), "--target-catalog",
                                         str(files / "target.csv"), "--target-category", "category,sub_category",
                                         "-o", str(own_cache.parent / "m.csv"), "--overwrite", "-q",
                                         "--no-target-cache"])
        assert done.exit_code in (0, 2), done.output
    assert not target_sides_dir().exists() or not any(target_sides_dir().iterdir())


def test_a_damaged_side_in_the_cache_is_fitted_again(files, own_cache, migrator, caplog):
    """A torn or tampered file in the user's cache never fails a run: a warning, and the side is
    fitted again (and kept anew)."""
    run_migration(_settings(files), migrator)
    record = next(target_sides_dir().glob("*.json"))
    record.write_text('{"format": 3, "key": "x"', encoding="utf-8")  # torn
    with caplog.at_level(logging.WARNING):
        again = run_migration(_settings(files), migrator)
    assert again.facts.target_side == TARGET_SIDE_CACHE_FITTED
    assert "fitted again" in caplog.text
    assert run_migration(_settings(files), migrator).facts.target_side == TARGET_SIDE_CACHE_READ


def test_the_cache_keeps_the_most_recently_used_sides_within_its_size(tmp_path):
    """Past ``max_bytes`` the least recently used sides go first; the one just written stays."""
    import os

    from migrate.mapping.calibration import ConfidenceCalibrator

    cache = UserTargetSides(tmp_path / "sides", max_bytes=1 << 20)
    side = FittedTarget(None, ConfidenceCalibrator(), None, np.zeros((700, 384), np.float32),
                        np.zeros((3, 384), np.float32), None)  # about 1 MB of vectors each
    for i, key in enumerate(("a" * 64, "b" * 64)):
        cache.put(key, side)
        for path in (tmp_path / "sides").glob(f"{key[:32]}.*"):
            os.utime(path, (1_000_000 + i, 1_000_000 + i))
    cache.put("c" * 64, side)
    assert sorted(p.stem[:1] for p in (tmp_path / "sides").glob("*.json")) == ["c"]
    big = UserTargetSides(tmp_path / "sides", max_bytes=10 << 20)
    big.put("d" * 64, side)
    assert sorted(p.stem[:1] for p in (tmp_path / "sides").glob("*.json")) == ["c", "d"]
    assert big.get("d" * 64, products=700, labels=3) is not None
