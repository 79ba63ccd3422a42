"""``taxmig train --objective labels`` on a tiny real BigBasket subset: the (product, category path)
pairs hold the right values, training runs through the shared trainer, the saved folder loads and its
card names the objective; bad option values are clear errors."""

from __future__ import annotations

import json

import polars as pl
import pytest
from click.testing import CliRunner

from migrate.cli import main
from migrate.core.catalog import load_catalog
from migrate.errors import TaxmigError
from models import fingerprint, load_encoder, resolve_model
from train.finetune import TrainConfig, train_encoder
from train.label_alignment import CategoryAccuracyEvaluator, build_label_pairs, top_accuracy
from train.splits import split_labels

CATEGORY = "category,sub_category"


@pytest.fixture(scope="module")
def tiny_catalog(bigbasket, tmp_path_factory):
    """240 real products from 6 subcategories (the eval split gets a few of each)."""
    frame = bigbasket.filter(pl.col("product").is_not_null()).select("index", "product", "brand", "category",
                                                                      "sub_category")
    top = frame.group_by("category", "sub_category").len().sort("len", descending=True).head(6)
    frame = frame.join(top.select("category", "sub_category"), on=["category", "sub_category"])
    frame = frame.sample(n=240, seed=5).sort(pl.col("index").cast(pl.Int64))
    path = tmp_path_factory.mktemp("labels") / "catalog.csv"
    frame.write_csv(path)
    return path


def _config(**kw) -> TrainConfig:
    base = dict(objective="labels", max_pairs=32, batch_size=16, learning_rate=1e-4, epochs=1, evaluations=2,
                max_eval_pairs=40)
    base.update(kw)
    return TrainConfig(**base)


def test_label_pairs_are_products_with_their_own_category_path_and_leaf(tiny_catalog):
    cat = load_catalog(tiny_catalog, role="catalog", category=CATEGORY, category_required=True)
    frame = pl.read_csv(tiny_catalog, infer_schema=False)
    file_path = {i: f"{c} > {s}" for i, c, s in frame.select("index", "category", "sub_category").iter_rows()}
    path_of = {t: file_path[i] for t, i in zip(cat.texts, cat.ids)}  # the file's own columns, by product id
    pairs = build_label_pairs(cat.texts, cat.categories, leaf_names=True).pairs
    paths, leaves = pairs.filter(pl.col("kind") == "path"), pairs.filter(pl.col("kind") == "leaf")
    assert paths.height == leaves.height == len({(t.lower(), c) for t, c in zip(cat.texts, cat.categories)})
    for anchor, positive in paths.select("anchor", "positive").iter_rows():
        assert positive == path_of[anchor] and " > " in positive  # the whole path, as the mapping compares it
    for anchor, positive in leaves.select("anchor", "positive").iter_rows():
        assert positive == path_of[anchor].split(" > ")[-1]
    first = frame.row(0, named=True)
    assert (f"{first['product'].strip()} | {first['brand'].strip()}", f"{first['category']} > {first['sub_category']}") \
        in set(paths.select("anchor", "positive").iter_rows())
    capped = build_label_pairs(cat.texts, cat.categories, leaf_names=True, max_pairs=64, seed=1)
    assert len(capped) == 64 and capped.pairs.equals(build_label_pairs(cat.texts, cat.categories, leaf_names=True,
                                                                       max_pairs=64, seed=1).pairs)
    assert list(build_label_pairs(cat.texts, cat.categories).to_dataset().column_names) == ["anchor", "positive"]
    assert set(capped.to_dataset()) == {"path", "leaf"}  # a DatasetDict: no batch mixes paths and leaf names


def test_category_accuracy_evaluator_scores_real_products(tiny_catalog, migrator):
    import numpy as np

    cat = load_catalog(tiny_catalog, role="catalog", category=CATEGORY, category_required=True)
    model = migrator.encoder.model._model  # the session's bundled model itself, not its memory of vectors
    taxonomy = sorted(set(cat.categories))
    evaluator = CategoryAccuracyEvaluator(cat.texts[:30], cat.categories[:30], taxonomy, name="t")
    metrics = evaluator(model)
    assert evaluator.primary_metric == "t_path_top1"
    assert set(metrics) == {"t_path_top1", "t_path_top3", "t_level_top1", "t_level_top3"}
    assert 0 < metrics["t_path_top1"] <= metrics["t_path_top3"] <= 1
    vectors = model.encode(cat.texts[:30], normalize_embeddings=True)
    scores = vectors @ model.encode(taxonomy, normalize_embeddings=True).T
    truth = np.array([taxonomy.index(c) for c in cat.categories[:30]])
    assert metrics["t_path_top1"] == pytest.approx(float((scores.argmax(1) == truth).mean()))
    assert top_accuracy(scores, truth)[0] == pytest.approx(metrics["t_path_top1"])
    with pytest.raises(TaxmigError, match="not in the taxonomy"):
        CategoryAccuracyEvaluator(cat.texts[:2], ["Nowhere > Else"] * 2, taxonomy)


def test_labels_objective_trains_and_saves_a_loadable_model_with_its_card(tiny_catalog, tmp_path):
    out = tmp_path / "labels-model"
    result = train_encoder(tiny_catalog, out, _config(leaf_names=True), category=CATEGORY)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["objective"] == "labels" and metrics["train_pairs"] == 32
    assert metrics["eval"]["primary_metric"] == "heldout_path_top1"
    assert 0 <= metrics["eval"]["after"]["heldout_path_top1"] <= 1
    assert metrics["steps"] >= 2 and any("loss" in row for row in metrics["log_history"])
    assert sum(result.pair_counts.values()) == 32 and result.pair_counts["label_leaf"] > 0
    model, fp = load_encoder(resolve_model(str(out)))
    assert fp == fingerprint(out) != fingerprint(resolve_model(None).location)
    assert model.encode(["Dark Chocolate"]).shape == (1, 384)
    card = (out / "README.md").read_text()
    assert "- objective: labels" in card and "(product, leaf name)" in card and "| label_path |" in card
    assert "Held-out category accuracy" in card and "| heldout_path_top1 |" in card
    assert json.loads((out / "taxmig_train.json").read_text())["objective"] == "labels"
    cat = load_catalog(tiny_catalog, role="catalog", category=CATEGORY, category_required=True)
    train_texts = {t for t, s in zip(cat.texts, split_labels(cat.texts)) if s == "train"}
    assert not any(t in card for t in train_texts if len(t) > 12)  # never training rows in the card
    with pytest.raises(TaxmigError, match="trained with --objective labels"):  # resume keeps the objective
        train_encoder(tiny_catalog, out, _config(objective="products", resume=True), category=CATEGORY)
    with pytest.raises(TaxmigError, match="goes with --objective products"):
        train_encoder(tiny_catalog, tmp_path / "m2", _config(), category=CATEGORY, decisions=object())


def test_bad_objective_and_option_mixes_are_clear_errors(tiny_catalog, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["train", str(tiny_catalog), "-o", str(tmp_path / "m"), "--objective", "lables"])
    assert result.exit_code == 64
    assert "Invalid value for '--objective': 'lables' is not one of 'products', 'labels'" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(main, ["train", str(tiny_catalog), "-o", str(tmp_path / "m"), "--objective", "labels",
                                  "--loss", "cosine", "--category", CATEGORY])
    assert result.exit_code == 1 and "use --loss mnrl" in result.output
    result = runner.invoke(main, ["train", str(tiny_catalog), "-o", str(tmp_path / "m"), "--leaf-names"])
    assert result.exit_code == 1 and "--leaf-names goes with --objective labels" in result.output
    assert not (tmp_path / "m").exists()
