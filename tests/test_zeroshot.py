"""Self-training onto a taxonomy nobody has labelled: real Instacart products, the bundled model."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import polars as pl
import pytest

from migrate.core.embedding_cache import EmbeddingCache
from migrate.mapping.labels import CategoryLabels
from migrate.mapping.report import EVERY_ROW_FLAGGED
from migrate.mapping.scoring import ScoringParams
from migrate.mapping.settings import MigrationSettings
from migrate.mapping.zeroshot import (WordModel, choose_seeds, confidence_features, listed_ancestors, prefer_specific,
                              proxy_confidence, refine)
from tests.conftest import data_file

AISLE_SAMPLE = 1200


@pytest.fixture(scope="module")
def instacart() -> pl.DataFrame:
    """A seeded sample of Instacart products with their `department > aisle` path (missing/other left out)."""
    frame = (pl.read_csv(data_file("instacart", "products.csv"))
             .join(pl.read_csv(data_file("instacart", "aisles.csv")), on="aisle_id")
             .join(pl.read_csv(data_file("instacart", "departments.csv")), on="department_id")
             .filter(~pl.col("department").is_in(["missing", "other"])))
    frame = frame.sample(n=AISLE_SAMPLE, seed=3).with_columns(
        (pl.col("department") + " > " + pl.col("aisle")).alias("path"))
    return frame


@pytest.fixture(scope="module")
def encoded(instacart, migrator):
    model = migrator.encoder.model
    paths = sorted(set(instacart["path"]))
    labels = CategoryLabels(paths)
    texts = instacart["product_name"].to_list()
    vectors = model.encode([*texts, *labels.names], normalize_embeddings=True, convert_to_numpy=True,
                           show_progress_bar=False)
    labels.fit(vectors[len(texts):])
    truth = np.array([paths.index(p) for p in instacart["path"]])
    return texts, vectors[:len(texts)], labels, paths, truth


def test_self_training_beats_the_label_scores_alone(encoded):
    texts, vectors, labels, paths, truth = encoded
    sims, ids = labels.search(vectors, 50)
    labels_only = (ids[:, 0] == truth).mean()
    probs, top, report = refine(sims, ids, vectors, texts, len(paths))
    refined = (top[:, 0] == truth).mean()
    assert refined >= labels_only + 0.02, (labels_only, refined)
    assert report.rounds == ScoringParams().self_training_rounds and report.seeds > 0 and report.words > 100
    # probabilities sorted, on the candidates, summing to one
    assert np.all(np.diff(probs, axis=1) <= 1e-12)
    assert np.allclose(probs.sum(axis=1), 1.0)
    assert set(np.unique(top[:, 0])) <= set(np.unique(ids))
    off = refine(sims, ids, vectors, texts, len(paths), replace(ScoringParams(), self_training_rounds=0))[1]
    assert (off[:, 0] == ids[:, 0]).all()  # no rounds: the label ranking as it was


def test_refine_finishes_only_the_rows_asked_for_with_the_same_results(encoded):
    """A night's new products self-train among their context and only they are finished: their
    probabilities, categories and report equal the whole run's rows, with and without rounds."""
    texts, vectors, labels, paths, _ = encoded
    sims, ids = labels.search(vectors, 50)
    ancestors = listed_ancestors(paths)
    keep = np.array([40, 3, 17, len(texts) - 1])
    for params in (ScoringParams(), replace(ScoringParams(), self_training_rounds=0)):
        full_probs, full_ids, full = refine(sims, ids, vectors, texts, len(paths), params, None, ancestors)
        probs, top, part = refine(sims, ids, vectors, texts, len(paths), params, None, ancestors, keep=keep)
        np.testing.assert_array_equal(probs, full_probs[keep])
        np.testing.assert_array_equal(top, full_ids[keep])
        for name in ("prior_top", "words_top", "neighbours_top"):
            np.testing.assert_array_equal(getattr(part, name), getattr(full, name)[keep])
        assert part.seeds == full.seeds and part.rounds == full.rounds
        if full.backed_off is not None:
            np.testing.assert_array_equal(part.backed_off, full.backed_off[keep])


def test_confidence_is_an_estimate_that_ranks(encoded):
    texts, vectors, labels, paths, truth = encoded
    sims, ids = labels.search(vectors, 50)
    probs, top, report = refine(sims, ids, vectors, texts, len(paths))
    conf = proxy_confidence(confidence_features(probs, top, report, sims, ids))
    right = top[:, 0] == truth
    assert ((conf > 0) & (conf < 1)).all()
    # the most confident quarter is far more often right than the least confident quarter
    order = np.argsort(-conf)
    quarter = len(order) // 4
    assert right[order[:quarter]].mean() > right[order[-quarter:]].mean() + 0.3
    assert abs(conf.mean() - right.mean()) < 0.15  # a rough estimate of the accuracy


def test_word_model_leaves_a_seed_out_of_its_own_category():
    texts = ["zzz tea", "green tea", "masala tea", "butter", "cheese"]
    model = WordModel(texts)
    ids = np.array([[0, 1]] * 5)
    labels = np.array([0, 0, 0, 1, 1])
    seeds = np.array([True, True, True, True, True])
    with_self = model.log_likelihoods(ids, seeds, labels, 2)
    # the same row scored by a model fitted without it
    rest = np.array([False, True, True, True, True])
    without = model.log_likelihoods(ids, rest, labels, 2)
    assert with_self[0, 0] == pytest.approx(without[0, 0])
    # and its own rare word gives it no lift over what the other seeds say
    assert with_self[1, 0] == pytest.approx(model.log_likelihoods(ids, np.array([True, False, True, True, True]),
                                                                   labels, 2)[1, 0])


def test_every_category_gets_seeds_even_small_ones():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4], [0.55, 0.45]])
    ids = np.array([[0, 1], [0, 1], [0, 1], [0, 1], [1, 0]])
    top, seeds = choose_seeds(probs, ids, 0.5)
    assert top.tolist() == [0, 0, 0, 0, 1]
    assert seeds.tolist() == [True, True, False, False, True]


def test_inner_categories_hand_their_probability_down_to_candidate_descendants():
    categories = ["deli", "deli > lunch meat", "deli > dips", "meat", "meat > packaged meat", "a > b > c",
                  "deli > salads", "deli > soups"]
    ancestors = listed_ancestors(categories)
    assert ancestors[:, 0].tolist() == [-1, 0, 0, -1, 3, -1, 0, 0]  # "a > b" is not listed: no ancestor
    # row 0: "deli" wins on its own, but its children are candidates: 0.4 goes to them 3:1
    # row 1: "meat" has no candidate child and keeps its mass; row 2: a leaf wins, nothing to hand down
    # row 3: "deli" wins and no child holds half of the evidence under it: it stays (back-off)
    ids = np.array([[0, 1, 4, 2, -1], [3, 0, -1, -1, -1], [5, 0, 1, -1, -1], [0, 1, 6, 7, 3]])
    probs = np.array([[0.4, 0.3, 0.2, 0.1, 0], [0.7, 0.3, 0, 0, 0], [0.5, 0.3, 0.2, 0, 0],
                      [0.4, 0.2, 0.15, 0.15, 0.1]])
    out_probs, out_ids, backed_off = prefer_specific(probs, ids, ancestors)
    assert out_ids.tolist() == [[1, 4, 2, -1, -1], [3, 0, -1, -1, -1], [5, 1, -1, -1, -1], [0, 1, 6, 7, 3]]
    assert out_probs[0, :3] == pytest.approx([0.3 + 0.4 * 0.75, 0.2, 0.1 + 0.4 * 0.25])
    assert out_probs[1, :2] == pytest.approx([0.7, 0.3])
    assert out_probs[2, :2] == pytest.approx([0.5, 0.5])
    assert out_probs[3] == pytest.approx(probs[3])
    assert out_probs.sum(axis=1) == pytest.approx([1.0] * 4)
    assert backed_off.tolist() == [False, False, False, True]
    two = probs[:, :2]
    assert prefer_specific(two, np.array([[0, 1]] * 4), listed_ancestors(["x", "y"]))[0] is two  # a flat taxonomy


def test_taxonomy_only_migration_flags_every_row_unless_a_threshold_is_given(instacart, tmp_path, migrator):
    source = tmp_path / "products.csv"
    instacart.select(pl.col("product_id").alias("id"), pl.col("product_name").alias("product")).write_csv(source)
    taxonomy = tmp_path / "aisles.txt"  # departments listed too, as Google's file lists inner nodes
    taxonomy.write_text("\n".join(sorted({*instacart["path"], *instacart["department"]})) + "\n")
    settings = MigrationSettings(source=source, target_taxonomy=taxonomy, progress=False)
    cache = EmbeddingCache(tmp_path / "cache.sqlite")  # the three runs encode the texts once
    result = migrator.run(settings, cache=cache)
    mapping, summary = result.mapping, result.summary_dict()
    assert mapping.height == instacart.height
    assert mapping["needs_review"].all()
    assert all("LOW_CONFIDENCE" in f for f in mapping["flags"])
    assert summary["Mapping method"].startswith("taxonomy only: label scores refined by self-training")
    assert "'{} products'" in summary["Label scoring"] and "x 0.5 subtracted" in summary["Label scoring"]
    # the aisles list their departments: a department is suggested only with the flag that says why
    backed_off = mapping.filter(pl.col("flags").str.contains("PARENT_BACKOFF"))
    departments = set(instacart["department"])
    assert set(backed_off["target_category"]) <= departments
    assert mapping.filter(pl.col("target_category").is_in(departments)).height == backed_off.height
    assert summary["Flag counts"]["PARENT_BACKOFF"] == backed_off.height < mapping.height // 10
    # NO_MATCH reads the label score before centering: grocery onto grocery aisles, a handful only
    assert sum("NO_MATCH" in f for f in mapping["flags"]) <= 0.01 * mapping.height
    assert summary["min_confidence"].startswith("not set: every row flagged")
    # the rule that flags every row is said in words, its internal number stays in the facts
    assert summary["Thresholds"]["min_confidence"] == EVERY_ROW_FLAGGED and result.facts.thresholds["min_confidence"] > 1
    glance = summary["At a glance"]
    assert glance["Rows safe to accept (no flag)"] == 0 and glance["Rows to review (flagged; Review sheet)"] == mapping.height
    assert "no confidence threshold kept the target precision 0.97" in glance["Why nothing is safe to accept"]
    tradeoff = summary["Accepting the most confident rows"]  # what a lower bar would give, from the estimates
    assert tradeoff["the most confident 10% (120 rows)"].startswith("estimated accuracy ")
    tenth = float(tradeoff["the most confident 10% (120 rows)"].split()[2].rstrip(","))
    assert tenth == pytest.approx(np.sort(mapping["confidence"].to_numpy())[::-1][:120].mean(), abs=1e-3)
    estimate = glance["Estimated accuracy of all rows (mean confidence)"]
    right = (mapping["target_category"] == instacart["path"]).to_numpy()
    assert abs(estimate - right.mean()) < 0.15
    # a reviewer's own threshold leaves the rows above it unflagged, and those are mostly right
    given = migrator.run(replace(settings, thresholds=replace(settings.thresholds, min_confidence=0.8)), cache=cache)
    unflagged = ~given.mapping["needs_review"].to_numpy()
    assert 0 < unflagged.sum() < len(unflagged)
    assert right[unflagged].mean() > right.mean() + 0.2
    assert given.summary_dict()["min_confidence"] == "given"
    # --self-training-rounds 0: the label scores alone, the raw top score as before
    plain = migrator.run(replace(settings, scoring=replace(settings.scoring, self_training_rounds=0)), cache=cache)
    assert plain.summary_dict()["Mapping method"] == "taxonomy only: label scores alone"
    assert plain.summary_dict()["Confidence calibrated"].startswith("NO")
    assert (plain.mapping["target_category"] == instacart["path"]).mean() < right.mean()


def test_self_training_context_holds_the_rows_their_neighbours_and_a_sample_up_to_its_size():
    from migrate.mapping.zeroshot import self_training_context

    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(200, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = np.array([3, 150])
    context = self_training_context(vectors, rows, size=50, neighbours=4)
    nearest = np.argsort(-(vectors[rows] @ vectors.T), axis=1)[:, :5]
    assert len(context) == 50 and np.all(np.diff(context) > 0)
    assert set(rows) <= set(context) and set(nearest.ravel()) <= set(context)
    assert self_training_context(vectors, rows, size=200, neighbours=4).tolist() == list(range(200))
