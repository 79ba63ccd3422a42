"""Fine-tuning on a small real BigBasket subset: loss goes down, the model loads and maps,
runs resume from checkpoints, the card has provenance but no training rows, evaluate reports."""

from __future__ import annotations

import json

import polars as pl
import pytest

from migrate.errors import TaxmigError
from models import fingerprint, load_encoder, resolve_model
from train.finetune import TrainConfig, train_encoder

N_PRODUCTS = 400


@pytest.fixture(scope="module")
def small_catalog(bigbasket, tmp_path_factory):
    """400 real products from 8 subcategories (enough per category for positives and a held-out split)."""
    frame = bigbasket.filter(pl.col("product").is_not_null()).select("index", "product", "brand", "category",
                                                                      "sub_category")
    top = frame.group_by("category", "sub_category").len().sort("len", descending=True).head(8)
    frame = frame.join(top.select("category", "sub_category"), on=["category", "sub_category"])
    frame = frame.sample(n=N_PRODUCTS, seed=3).sort(pl.col("index").cast(pl.Int64))
    path = tmp_path_factory.mktemp("catalog") / "catalog.csv"
    frame.write_csv(path)
    return path


def _config(**kw) -> TrainConfig:
    base = dict(max_pairs=160, batch_size=16, learning_rate=1e-4, epochs=1, evaluations=2, max_eval_pairs=200)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def trained(small_catalog, tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "retail-test"
    return train_encoder(small_catalog, out, _config(), category="category,sub_category")


def test_training_lowers_the_loss_and_writes_a_loadable_model_with_a_card(trained, small_catalog):
    losses = [row["loss"] for row in trained.metrics["log_history"] if "loss" in row]
    assert len(losses) >= 2 and min(losses[1:]) < losses[0]
    out = trained.output_dir
    model, fp = load_encoder(resolve_model(str(out)))
    assert fp == fingerprint(out) != fingerprint(resolve_model(None).location)
    assert model.encode(["Dark Chocolate"]).shape == (1, 384)
    card = (out / "README.md").read_text()
    record = json.loads((out / "taxmig_train.json").read_text())
    assert record["base_model_fingerprint"] in card and record["data_fingerprint"] in card
    assert "CosineSimilarityLoss" in card
    texts = pl.read_csv(small_catalog, infer_schema=False)["product"].to_list()
    assert not any(t in card for t in texts if len(t) > 12)       # never training rows in the card
    assert {p.name for p in out.glob("training_*.png")} >= {"training_loss.png", "training_learning_rate.png"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eval"]["primary_metric"] in metrics["eval"]["after"]
    assert trained.pair_counts["positive"] > 0 and trained.pair_counts["negative"] > 0


def test_resume_continues_from_the_last_checkpoint_and_refuses_another_base(trained, small_catalog, tmp_path):
    out = trained.output_dir
    steps = trained.metrics["steps"]
    resumed = train_encoder(small_catalog, out, _config(epochs=2, resume=True), category="category,sub_category")
    assert resumed.metrics["steps"] > steps
    record = out / "taxmig_train.json"
    data = json.loads(record.read_text())
    data["base_model_fingerprint"] = "0" * 16
    record.write_text(json.dumps(data))
    with pytest.raises(TaxmigError, match="another base model"):
        train_encoder(small_catalog, out, _config(resume=True), category="category,sub_category")


def test_training_refuses_bad_input(small_catalog, tmp_path, bigbasket):
    with pytest.raises(TaxmigError, match="not empty"):
        target = tmp_path / "used"
        target.mkdir()
        (target / "x").write_text("x")
        train_encoder(small_catalog, target, _config(), category="category,sub_category")
    one = tmp_path / "one.csv"
    bigbasket.filter(pl.col("sub_category") == "Skin Care").head(60).write_csv(one)
    with pytest.raises(TaxmigError, match="categor"):
        train_encoder(one, tmp_path / "m1", _config(), category="category,sub_category")
    with pytest.raises(TaxmigError, match="does not exist"):
        train_encoder(small_catalog, tmp_path / "m2", _config(base_model="./no-such-model"),
                      category="category,sub_category")


def test_evaluate_reports_base_and_fine_tuned_side_by_side(trained, small_catalog, tmp_path):
    from train.evaluate import PRIMARY_METRIC, evaluate_models

    report = evaluate_models(small_catalog, model=str(trained.output_dir), baseline=None, output_dir=tmp_path / "r",
                             category="category,sub_category")
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert set(metrics) == {"base", "fine-tuned"}
    for m in metrics.values():
        assert 0 <= m[PRIMARY_METRIC] <= 1 and -1 <= m["spearman"] <= 1
        assert set(m["matryoshka_top1"]) == {"384", "192", "96", "48"}
    text = report.read_text()
    assert "| migrate top-1 |" in text and "matryoshka.png" in text and "Tricky real pairs" in text
    assert (tmp_path / "r" / "similarity_boxplot.png").stat().st_size > 1000
    with pytest.raises(TaxmigError, match="already exists"):
        evaluate_models(small_catalog, model=str(trained.output_dir), baseline=None, output_dir=tmp_path / "r",
                        category="category,sub_category")
