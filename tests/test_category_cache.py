"""The user-level category cache: a taxonomy's category texts are encoded once per user and model."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from migrate.cli import main
from migrate.core.embedding_cache import EmbeddingCache, LayeredCache, open_category_cache
from migrate.core.taxonomy import load_taxonomy
from migrate.mapping.settings import MigrationSettings
from models.cache import EXPORTS_ENV, category_cache_path
from tests.conftest import SAMPLES

SOURCE = SAMPLES / "bigbasket_sample.csv"
BRANCHES = ("Food, Beverages & Tobacco > Beverages", "Food, Beverages & Tobacco > Tobacco Products")


@pytest.fixture(scope="module")
def taxonomy(tmp_path_factory) -> Path:
    """Google's beverage and tobacco branches, lines of the sample taxonomy (52 categories): these
    tests encode a taxonomy's texts with no cache of the session's to read them from, so a small one."""
    def kept(line: str) -> bool:
        path = line.split(" - ", 1)[-1].rstrip("\n")  # "ID - A > B > C"
        return (line.startswith("#") or path == "Food, Beverages & Tobacco"
                or any(path == b or path.startswith(f"{b} > ") for b in BRANCHES))

    lines = (SAMPLES / "google_taxonomy_subset.txt").read_text(encoding="utf-8").splitlines(keepends=True)
    path = tmp_path_factory.mktemp("taxonomy") / "beverages_tobacco.txt"
    path.write_text("".join(filter(kept, lines)), encoding="utf-8")
    return path


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """A category cache of this test's own (the session's is shared by every test)."""
    monkeypatch.setenv(EXPORTS_ENV, str(tmp_path / "user-cache"))
    return tmp_path / "user-cache"


def _settings(taxonomy: Path, **kw) -> MigrationSettings:
    return MigrationSettings(source=SOURCE, target_taxonomy=taxonomy, source_category="category,sub_category",
                             progress=False, **kw)


def test_the_second_run_onto_a_taxonomy_encodes_only_the_products(own_cache, migrator, taxonomy):
    first = migrator.run(_settings(taxonomy))
    second = migrator.run(_settings(taxonomy))
    products = first.mapping["source_text"].n_unique()  # with the category appended: at most the rows
    categories = first.facts.encoded - second.facts.encoded
    assert len(load_taxonomy(taxonomy).categories) == 52
    assert first.facts.cached == 0 and categories == 3 * 52  # three phrasings of every category path
    assert second.facts.encoded <= products and second.facts.cached == categories
    assert second.mapping.select("source_id", "target_category", "flags").equals(
        first.mapping.select("source_id", "target_category", "flags"))
    assert category_cache_path().is_file() and category_cache_path().parent == own_cache
    off = migrator.run(_settings(taxonomy, category_cache=False))  # --no-category-cache: neither read nor written
    assert off.facts.encoded == first.facts.encoded and off.facts.cached is None


def test_a_cache_that_cannot_be_opened_is_left_out(tmp_path, monkeypatch, caplog, migrator, taxonomy):
    blocked = tmp_path / "a-file"  # the cache folder cannot be made: the run goes on without it
    blocked.write_text("not a folder")
    monkeypatch.setenv(EXPORTS_ENV, str(blocked))
    with caplog.at_level(logging.WARNING, logger="migrate.core.embedding_cache"):
        result = migrator.run(_settings(taxonomy))
    assert "category embedding cache" in caplog.text and "not used" in caplog.text
    assert result.facts.cached is None and result.mapping.height == 308


def test_no_category_cache_on_the_command_line(own_cache, tmp_path, taxonomy):
    done = CliRunner().invoke(main, ["migrate", str(SOURCE), "--target-taxonomy", str(taxonomy), "-q",
                                     "-o", str(tmp_path / "a.csv"), "--no-category-cache"])
    assert done.exit_code == 0, done.output
    assert not category_cache_path().exists() and pl.read_csv(tmp_path / "a.csv").height == 308


def test_a_state_cache_before_the_category_cache(tmp_path):
    state, user = EmbeddingCache(tmp_path / "state.sqlite"), EmbeddingCache(tmp_path / "user.sqlite")
    user.put("fp", ["b", "c"], np.array([[0, 1], [1, 0]], dtype=np.float32))
    state.put("fp", ["a"], np.array([[1, 1]], dtype=np.float32))
    found, missing = LayeredCache(state, user).get("fp", ["a", "b", "d", "c"])
    assert missing == [2] and found.tolist() == [[1, 1], [0, 1], [1, 0]]
    assert state.count("fp") == 3  # what the user's cache gave is kept in the state for its nights
    LayeredCache(state, user).put("fp", ["d"], np.array([[2, 2]], dtype=np.float32))
    assert state.count("fp") == 4 and user.count("fp") == 3  # written into both


def test_the_category_cache_is_capped(own_cache):
    cache = open_category_cache("old-model")
    cache.put("old-model", [f"t{i}" for i in range(30)], np.ones((30, 4), dtype=np.float32))
    cache.close()
    cache = open_category_cache("new-model", max_vectors=40)
    cache.put("new-model", [f"n{i}" for i in range(20)], np.ones((20, 4), dtype=np.float32))
    cache.close()
    cache = open_category_cache("new-model", max_vectors=40)  # 50 held: the other model's go first
    assert cache.count("old-model") == 0 and cache.count("new-model") == 20
    cache.close()
    cache = open_category_cache("new-model", max_vectors=10)  # still too many: everything goes
    assert cache.count() == 0
    cache.close()
