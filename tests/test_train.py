"""Fine-tuning on a small real BigBasket subset: loss goes down, the model loads and maps,
runs resume from checkpoints, the card has provenance but no training rows, evaluate reports."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from migrate.errors import TaxmigError
from models import fingerprint, load_encoder, resolve_model
from train.finetune import TrainConfig, train_encoder

N_PRODUCTS = 200
LOSS_DROP = 0.05  # the least drop of the ranking loss on fixed pairs (test_training_lowers_the_loss...)


@pytest.fixture(scope="module")
def small_catalog(bigbasket, tmp_path_factory):
    """200 real products from 8 subcategories (enough per category for positives, the reviewer's
    corrections and a held-out split of over 10)."""
    frame = bigbasket.filter(pl.col("product").is_not_null()).select("index", "product", "brand", "category",
                                                                      "sub_category")
    top = frame.group_by("category", "sub_category").len().sort("len", descending=True).head(8)
    frame = frame.join(top.select("category", "sub_category"), on=["category", "sub_category"])
    frame = frame.sample(n=N_PRODUCTS, seed=3).sort(pl.col("index").cast(pl.Int64))
    path = tmp_path_factory.mktemp("catalog") / "catalog.csv"
    frame.write_csv(path)
    return path


def _config(**kw) -> TrainConfig:
    # 32 catalog pairs beside the 45 of the reviewer's decisions: 4 steps, and the same drop of the
    # ranking loss as 64 pairs (6 steps) gave (test_training_lowers_the_loss...)
    base = dict(max_pairs=32, batch_size=16, learning_rate=1e-4, epochs=1, evaluations=2, max_eval_pairs=40)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def decision_state(small_catalog, tmp_path_factory):
    """A state folder with a reviewer's decisions on products of the sample (and those decisions)."""
    return _state_with_decisions(tmp_path_factory.mktemp("decisions"), small_catalog)


@pytest.fixture(scope="module")
def trained(small_catalog, decision_state, tmp_path_factory):
    """One short run, with the reviewer's decisions as extra pairs (the module's tests share it)."""
    from train.decisions import load_decisions

    out = tmp_path_factory.mktemp("model") / "retail-test"
    return train_encoder(small_catalog, out, _config(), category="category,sub_category",
                         decisions=load_decisions(decision_state[0]))


def _ranking_loss(model, texts: list[str], categories: list[str]) -> float:
    """The in-batch ranking loss (MultipleNegativesRankingLoss's: scale 20, batches of 16) of each
    product paired with another of its category (seeded): what the default loss trains down."""
    rng = np.random.default_rng(0)
    members: dict[str, list[str]] = {}
    for text, category in zip(texts, categories):
        members.setdefault(category, []).append(text)
    pairs = [(t, others[rng.integers(len(others))]) for t, c in zip(texts, categories)
             if (others := [o for o in members[c] if o != t])]
    a = np.asarray(model.encode([x for x, _ in pairs], normalize_embeddings=True, convert_to_numpy=True))
    b = np.asarray(model.encode([y for _, y in pairs], normalize_embeddings=True, convert_to_numpy=True))
    losses = []
    for s in range(0, len(pairs), 16):
        logits = 20 * a[s:s + 16] @ b[s:s + 16].T
        logits -= logits.max(1, keepdims=True)
        losses.append(float(np.mean(np.log(np.exp(logits).sum(1)) - np.diag(logits))))
    return float(np.mean(losses))


def test_training_lowers_the_loss_and_writes_a_loadable_model_with_a_card(trained, small_catalog, migrator):
    losses = [row["loss"] for row in trained.metrics["log_history"] if "loss" in row]
    assert len(losses) >= 2 and min(losses[1:]) < losses[0]
    out = trained.output_dir
    model, fp = load_encoder(resolve_model(str(out)))
    # the logged losses are of different batches; on one fixed set of same-category pairs the trained
    # model's ranking loss is lower than the base model's (measured with 32 pairs and the decisions:
    # 3.617 -> 3.395, as 64 pairs without them; a run that learns nothing, at a learning rate of 1e-9:
    # 3.617 -> 3.617)
    frame = pl.read_csv(small_catalog, infer_schema=False)
    texts, categories = frame["product"].to_list(), (frame["category"] + " > " + frame["sub_category"]).to_list()
    before = _ranking_loss(migrator.encoder.model, texts, categories)
    assert _ranking_loss(model, texts, categories) < before - LOSS_DROP, before
    assert fp == fingerprint(out) != fingerprint(resolve_model(None).location)
    assert model.encode(["Dark Chocolate"]).shape == (1, 384)
    card = (out / "README.md").read_text()
    record = json.loads((out / "taxmig_train.json").read_text())
    assert record["base_model_fingerprint"] in card and record["data_fingerprint"] in card
    assert "MultipleNegativesRankingLoss" in card      # the default loss
    texts = pl.read_csv(small_catalog, infer_schema=False)["product"].to_list()
    assert not any(t in card for t in texts if len(t) > 12)       # never training rows in the card
    assert {p.name for p in out.glob("training_*.png")} >= {"training_loss.png", "training_learning_rate.png"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eval"]["primary_metric"] == "heldout_migrate_top1"  # checkpoints chosen by the migrate top-1
    assert 0 < metrics["eval"]["after"]["heldout_migrate_top1"] <= 1
    assert "heldout_spearman_cosine" in metrics["eval"]["after"]  # the pair similarity reported beside it
    # "after" is the best checkpoint's logged evaluation, not a second one: the saved model scores it
    from migrate.core.catalog import load_catalog
    from train.migration_evaluator import MigrationTop1Evaluator
    from train.splits import split_labels

    catalog = load_catalog(small_catalog, role="catalog", category="category,sub_category", category_required=True)
    split = split_labels(catalog.texts)
    part = lambda name: ([t for t, s in zip(catalog.texts, split) if s == name],  # noqa: E731
                         [c for c, s in zip(catalog.categories, split) if s == name])
    again = MigrationTop1Evaluator(*part("eval"), *part("train"), name="heldout")(model)
    assert again["heldout_migrate_top1"] == metrics["eval"]["after"]["heldout_migrate_top1"]
    assert again["heldout_migrate_top3"] == metrics["eval"]["after"]["heldout_migrate_top3"]
    assert trained.pair_counts["positive"] > 0 and trained.pair_counts["negative"] > 0


def test_resume_continues_from_the_last_checkpoint_and_refuses_another_base(trained, small_catalog, decision_state):
    from train.decisions import load_decisions

    out = trained.output_dir
    steps = trained.metrics["steps"]
    resumed = train_encoder(small_catalog, out, _config(epochs=1.5, resume=True), category="category,sub_category",
                            decisions=load_decisions(decision_state[0]))
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


def test_training_names_its_encoder_as_every_command_does(monkeypatch):
    """The base model comes through EncoderSettings (resolved and loaded as migrate's encoder is),
    and a setting training cannot honour is an error before any load."""
    from migrate.core.encoder import EncoderSettings
    from migrate.errors import ModelError
    from train.finetune import load_base

    assert TrainConfig(base_model="models/x").encoder == EncoderSettings(model="models/x")
    assert TrainConfig().encoder.resolve() == resolve_model(None)
    monkeypatch.setattr("train.finetune.load_encoder", lambda *a, **k: pytest.fail("loaded a model"))
    for settings, problem in ((EncoderSettings(precision="fp16"), "fp32 weights"),
                              (EncoderSettings(backend="openvino"), "with torch"),
                              (EncoderSettings(precision="int4"), "--precision 'int4'")):
        with pytest.raises(ModelError, match=problem):
            load_base(settings)
    seen = {}
    monkeypatch.setattr("train.finetune.load_encoder", lambda ref, **options: seen.update(options) or ("m", "fp"))
    ref, model, fp = load_base(EncoderSettings(device="cpu"))
    assert ref == resolve_model(None) and (model, fp) == ("m", "fp")
    # training keeps fp32 weights whatever --precision auto means on this CPU
    assert seen == {**EncoderSettings(device="cpu").load_options(), "precision": "fp32"} and seen["device"] == "cpu"


def _with_formula_product(catalog_path, tmp_path):
    """The catalog with one held-out product renamed to formula-like text (as an untrusted catalog may
    hold); returns (path, that product's text as the catalog reads it)."""
    from migrate.core.catalog import load_catalog
    from train.splits import split_labels

    frame = pl.read_csv(catalog_path, infer_schema=False)
    path = tmp_path / "catalog.csv"
    for row in range(frame.height):
        renamed = frame.with_columns(pl.when(pl.int_range(pl.len()) == row)
                                     .then(pl.lit("=HYPERLINK(1) ") + pl.col("product"))
                                     .otherwise(pl.col("product")).alias("product"))
        renamed.write_csv(path)
        catalog = load_catalog(path, role="catalog", category="category,sub_category", category_required=True)
        held = dict(zip(catalog.texts, split_labels(catalog.texts)))
        formula = [t for t in catalog.texts if t.startswith("=")]
        if formula and held[formula[0]] == "test":
            return path, formula[0]
    raise AssertionError("no product of the sample can be renamed into the held-out split")


def test_evaluate_reports_base_and_fine_tuned_side_by_side(trained, small_catalog, tmp_path):
    from train.evaluate import PRIMARY_METRIC, evaluate_models

    catalog, formula_text = _with_formula_product(small_catalog, tmp_path)
    report = evaluate_models(catalog, model=str(trained.output_dir), baseline=None, output_dir=tmp_path / "r",
                             category="category,sub_category")
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert set(metrics) == {"base", "fine-tuned", "paired"}
    for label in ("base", "fine-tuned"):
        m = metrics[label]
        assert 0 <= m[PRIMARY_METRIC] <= 1 and -1 <= m["spearman"] <= 1
        assert set(m["matryoshka_top1"]) == {"384", "192", "96", "48"}
    # every held-out product once, with both models' choices; the metrics agree with the rows
    predictions = pl.read_csv(tmp_path / "r" / "predictions.csv", infer_schema=False)
    assert predictions.columns == ["id", "text", "category", "base", "fine-tuned"]
    assert predictions["id"].n_unique() == predictions.height > 10
    right = {m: predictions[m] == predictions["category"] for m in ("base", "fine-tuned")}
    for label in right:
        assert right[label].mean() == pytest.approx(metrics[label][PRIMARY_METRIC])
    paired = metrics["paired"]
    assert paired["only_fine_tuned"] == int((right["fine-tuned"] & ~right["base"]).sum())
    assert paired["only_base"] == int((~right["fine-tuned"] & right["base"]).sum())
    assert 0 < paired["p_value"] <= 1
    text = report.read_text()
    assert "| migrate top-1 |" in text and "matryoshka.png" in text and "Tricky real pairs" in text
    assert f"only the fine-tuned model is right on {paired['only_fine_tuned']}" in text
    # catalog text never becomes a live formula when predictions.csv is opened in a spreadsheet
    assert "'" + formula_text in predictions["text"].to_list()
    assert not any(t.startswith("=") for t in predictions["text"])
    assert (tmp_path / "r" / "similarity_boxplot.png").stat().st_size > 1000
    with pytest.raises(TaxmigError, match="already exists"):
        evaluate_models(catalog, model=str(trained.output_dir), baseline=None, output_dir=tmp_path / "r",
                        category="category,sub_category")


def _state_with_decisions(tmp_path, catalog_path):
    """A state folder whose decision log holds real products: two corrections, an accept, a new-category."""
    from migrate.nightly.state import DECISION_SCHEMA, NewGeneration, StateStore
    from train.splits import split_of

    frame = pl.read_csv(catalog_path, infer_schema=False)
    text = pl.concat_str([pl.col("product"), pl.col("brand")], separator=" | ")
    frame = frame.filter(text.map_elements(lambda t: split_of(t) == "train", return_dtype=pl.Boolean))
    cats = sorted({f"{c} > {s}" for c, s in zip(frame["category"], frame["sub_category"])})
    rows = []
    for i, (kind, offset) in enumerate([("override", 1), ("override", 2), ("accept", 0), ("new_category", 0)]):
        text = f"{frame['product'][i]} | {frame['brand'][i]}"
        own = f"{frame['category'][i]} > {frame['sub_category'][i]}"
        wrong = cats[(cats.index(own) + offset) % len(cats)]
        rows.append({"product_id": frame["index"][i], "kind": kind, "source_text": text,
                     "decision": "NEW CATEGORY NEEDED" if kind == "new_category" else own,
                     "suggested_category": wrong if kind == "override" else own, "decided_by": "priya"})
    store = StateStore.create(tmp_path / "state")
    store.commit(NewGeneration(meta={"run": {"run_id": "r1"}}, products=pl.DataFrame({"product_id": ["x"]}),
                               decisions=pl.DataFrame(rows, schema={k: DECISION_SCHEMA[k] for k in rows[0]}),
                               targets=pl.DataFrame()))
    return tmp_path / "state", rows


def test_reviewer_decisions_become_weighted_training_pairs(small_catalog, tmp_path):
    from migrate.core.catalog import load_catalog
    from train.decisions import decision_pairs, load_decisions

    state, rows = _state_with_decisions(tmp_path, small_catalog)
    examples = load_decisions(state)
    assert len(examples) == 3 and examples.corrections == 2  # NEW CATEGORY NEEDED names no category
    cat = load_catalog(small_catalog, role="catalog", category="category,sub_category", category_required=True)
    category_of = dict(zip(cat.texts, cat.categories))
    pairs = decision_pairs(examples, cat.texts, cat.categories, positives=3, negatives=3, correction_weight=2).pairs
    for r in pairs.iter_rows(named=True):
        decided = rows[[x["source_text"] for x in rows].index(r["sentence1"])]
        if r["kind"] == "decision_positive":
            assert category_of[r["sentence2"]] == decided["decision"] and r["score"] == 1.0
        else:
            assert category_of[r["sentence2"]] == decided["suggested_category"] != decided["decision"]
            assert r["score"] == 0.0
    per = pairs.group_by("sentence1", "kind").len()
    corrected = per.filter(pl.col("kind") == "decision_positive").sort("len")["len"].to_list()
    assert corrected == [3, 6, 6]  # corrections count twice
    assert pairs.filter(pl.col("kind") == "correction_negative").height == 12


def test_train_with_decisions_records_them(trained, tmp_path):
    from train.decisions import load_decisions

    used = trained.metrics["reviewer_decisions"]
    # an accept: 5 positives; each correction (weight 2): 10 positives and 10 hard negatives
    assert (used["decisions"], used["corrections"], used["decision_pairs"]) == (3, 2, 5 + 2 * (10 + 10))
    assert "| decision_pairs | 45 |" in (trained.output_dir / "README.md").read_text()
    with pytest.raises(TaxmigError, match="does not exist"):
        load_decisions(tmp_path / "nowhere")


def test_the_training_evaluator_scores_as_migrate_does(migrator, bigbasket, tmp_path):
    """The evaluator that picks checkpoints gives the top-1 of ``taxmig migrate`` onto the same
    target products without the lexical and classifier votes (which do not depend on the encoder)."""
    from migrate import MigrationSettings, ScoringParams, run_migration
    from train.migration_evaluator import MigrationTop1Evaluator

    frame = (bigbasket.select("index", "product", "category", "sub_category").drop_nulls()
             .unique("product", keep="first", maintain_order=True).sample(600, seed=3)
             .with_columns((pl.col("category") + " > " + pl.col("sub_category")).alias("path")))
    target, held = frame.head(480), frame.tail(120)
    held = held.filter(pl.col("path").is_in(target["path"].unique().to_list()))
    evaluator = MigrationTop1Evaluator(held["product"].to_list(), held["path"].to_list(),
                                       target["product"].to_list(), target["path"].to_list(), name="t")
    metrics = evaluator(migrator.encoder.model)
    assert evaluator.primary_metric == "t_migrate_top1" and set(metrics) == {"t_migrate_top1", "t_migrate_top3"}
    target.select("index", "product", "path").write_csv(tmp_path / "target.csv")
    held.select("index", "product").write_csv(tmp_path / "source.csv")
    settings = MigrationSettings(source=tmp_path / "source.csv", target_catalog=tmp_path / "target.csv",
                                 source_text="product", target_text="product", target_category="path",
                                 scoring=ScoringParams(lexical_weight=0.0, classifier_weight=0.0), progress=False)
    mapping = run_migration(settings, migrator).mapping
    truth = dict(zip(held["index"], held["path"]))
    top1 = float(np.mean([truth[i] == c for i, c in zip(mapping["source_id"], mapping["target_category"])]))
    assert metrics["t_migrate_top1"] == pytest.approx(top1, abs=1 / held.height), (metrics, top1)
    assert 0.45 < top1 < 0.95  # 0.509 measured (base model, 480 target products, 116 held out, no classifier)
