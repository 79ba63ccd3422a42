"""FAISS search paths and the category scoring on real embeddings of the sample catalog."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from migrate.core.index import build_index, search
from migrate.mapping.scoring import ScoringParams, score_categories
from tests.conftest import SAMPLES


@pytest.fixture(scope="module")
def sample_vectors(migrator) -> np.ndarray:
    from migrate.core.embedding import Embedder

    texts = pl.read_csv(SAMPLES / "bigbasket_sample.csv", infer_schema=False)["product"].to_list()
    return Embedder(migrator.encoder.model, progress=False).encode(texts)


def test_approximate_index_above_the_exact_limit_finds_the_exact_neighbours(sample_vectors):
    exact = build_index(sample_vectors)
    approx = build_index(sample_vectors, exact_limit=100)
    assert exact.kind == "flat (exact)" and approx.kind.startswith("HNSW")
    _, exact_ids = search(exact, sample_vectors, 10)
    sims, approx_ids = search(approx, sample_vectors, 10)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx_ids, exact_ids)])
    assert recall > 0.95
    assert (approx_ids[:, 0] == np.arange(len(sample_vectors))).mean() > 0.97  # each finds itself
    assert np.all(np.diff(sims, axis=1) <= 1e-6)                              # sorted by similarity


def test_search_pads_when_the_index_is_smaller_than_k(sample_vectors):
    small = build_index(sample_vectors[:3])
    sims, ids = search(small, sample_vectors[:2], 10)
    assert ids.shape == (2, 3) and set(ids[0]) == {0, 1, 2}


def test_scores_are_a_distribution_and_the_vote_follows_the_neighbours():
    # two products; neighbours vote categories 0/1; labels favour category 2 slightly
    nn_sims = np.array([[0.9, 0.8, 0.5], [0.6, 0.6, 0.6]], dtype=np.float32)
    nn_cats = np.array([[0, 0, 1], [1, 1, -1]])
    label_sims = np.array([[0.5, 0.4], [0.5, 0.4]], dtype=np.float32)
    label_ids = np.array([[2, 0], [2, 0]])
    scores = score_categories(3, ScoringParams(), nn_sims=nn_sims, nn_categories=nn_cats,
                              label_sims=label_sims, label_ids=label_ids)
    assert scores.top_ids[:, 0].tolist() == [0, 1]
    assert np.all(scores.top_scores.sum(axis=1) <= 1 + 1e-9)
    assert np.allclose(scores.margin, scores.top_scores[:, 0] - scores.top_scores[:, 1])
    # taxonomy only: the label part alone decides
    only_labels = score_categories(3, ScoringParams(), nn_sims=None, nn_categories=None,
                                   label_sims=label_sims, label_ids=label_ids)
    assert only_labels.top_ids[:, 0].tolist() == [2, 2]
    assert np.isnan(only_labels.nearest_sim).all()


def test_search_with_a_progress_bar_searches_in_chunks_to_the_same_answer(sample_vectors, monkeypatch, capsys):
    import migrate.core.index as index_module

    index = build_index(sample_vectors)
    whole = search(index, sample_vectors, 5)
    monkeypatch.setattr(index_module, "SEARCH_CHUNK", 7)
    chunked = search(index, sample_vectors, 5, progress=True, desc="neighbours")
    assert np.array_equal(whole[1], chunked[1]) and np.allclose(whole[0], chunked[0])
    assert "neighbours" in capsys.readouterr().err
