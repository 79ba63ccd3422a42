"""Category label scores: each path level embedded on its own (migrate/labels.py)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from migrate.labels import CategoryLabels, path_levels


def test_levels_are_shared_and_top_level_categories_stand_for_themselves():
    labels = CategoryLabels(["Food", "Food > Tea", "Home > Tea", "Food > Tea > Green"])
    assert labels.names == ["Food", "Tea", "Home", "Green"]
    assert labels.own.tolist() == [0, 1, 1, 3]
    weights = labels.ancestors.toarray()
    assert weights.tolist() == [[1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0.5, 0.5, 0, 0]]
    assert path_levels("Food >  Tea") == ["Food", "Tea"]


def test_score_is_own_name_plus_weighted_mean_of_ancestors():
    labels = CategoryLabels(["A", "A > B", "C > D"], ancestor_weight=0.5)
    # names A, B, C, D as unit vectors; the query has cosine 0.6 with A, 0.8 with B, 0 with C and D
    labels.fit(np.eye(4, dtype=np.float32))
    query = np.array([[0.6, 0.8, 0.0, 0.0]], dtype=np.float32)
    assert labels.scores(query)[0] == pytest.approx([0.6, (0.8 + 0.5 * 0.6) / 1.5, 0.0])
    sims, ids = labels.search(query, k=5)
    assert ids[0].tolist() == [1, 0, 2, -1, -1]
    assert sims[0, :3] == pytest.approx([1.1 / 1.5, 0.6, 0.0])


def test_whole_paths_mode_embeds_each_path_as_one_text():
    labels = CategoryLabels(["Food", "Food > Tea"], by_level=False)
    assert labels.names == ["Food", "Food > Tea"]
    labels.fit(np.eye(2, dtype=np.float32))
    assert labels.scores(np.array([[0.6, 0.8]], dtype=np.float32))[0] == pytest.approx([0.6, 0.8])
    assert "whole category paths" in labels.describe()


def test_no_categories_gives_padding():
    labels = CategoryLabels([]).fit(np.zeros((0, 4), dtype=np.float32))
    sims, ids = labels.search(np.ones((2, 4), dtype=np.float32), k=3)
    assert ids.tolist() == [[-1] * 3] * 2 and not sims.any()


def test_levels_beat_whole_paths_zero_shot_on_bigbasket(bigbasket, migrator):
    """400 real products onto BigBasket's own 99 paths with no labelled products: the per-level
    label score must pick the right path more often than the whole path read as one sentence."""
    rows = (bigbasket.filter(pl.col("product").is_not_null())
            .with_columns(path=pl.col("category") + " > " + pl.col("sub_category"))
            .sample(400, seed=0))
    categories = sorted(set(bigbasket["category"] + " > " + bigbasket["sub_category"]))
    truth = np.array([categories.index(p) for p in rows["path"]])
    encode = lambda texts: migrator.encoder.model.encode(texts, normalize_embeddings=True,  # noqa: E731
                                                         show_progress_bar=False)
    queries = encode(rows["product"].to_list())
    whole_path = (queries @ encode(categories).T).argmax(axis=1)
    labels = CategoryLabels(categories)
    by_level = labels.fit(encode(labels.names)).search(queries, k=1)[1][:, 0]
    path_top1, level_top1 = (whole_path == truth).mean(), (by_level == truth).mean()
    assert level_top1 >= path_top1 + 0.03, (path_top1, level_top1)
