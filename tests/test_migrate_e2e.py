"""End to end on real data with the real bundled model: samples, a labelled target catalog,
every row accounted for, formats in and out, flags that mean what they say."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import polars as pl
import pytest
from openpyxl import load_workbook
from rapidfuzz import fuzz, utils

from migrate.core.encoder import EncoderSettings
from migrate.core.taxonomy import load_taxonomy
from migrate.errors import TaxmigError
from migrate.mapping.calibration import expected_calibration_error
from migrate.mapping.flags import Thresholds, _leaf, _related
from migrate.mapping.output import write_output
from migrate.mapping.pipeline import run_migration
from migrate.mapping.settings import MigrationSettings
from tests.conftest import ROOT, SAMPLES, counting_model_loads

SAMPLE_SOURCE = SAMPLES / "bigbasket_sample.csv"
SAMPLE_TAXONOMY = SAMPLES / "google_taxonomy_subset.txt"


def sample_settings(taxonomy=SAMPLE_TAXONOMY, **kw) -> MigrationSettings:
    return MigrationSettings(source=SAMPLE_SOURCE, target_taxonomy=taxonomy,
                             source_category="category,sub_category", progress=False, **kw)


@pytest.fixture(scope="module")
def food_taxonomy(tmp_path_factory):
    """Google's food, beverages and tobacco branch of the sample taxonomy (364 of its 1,499
    categories, what the sample's groceries map onto), for the runs that embed each level name of
    the taxonomy (product texts without their source category): its own names, not the whole one's."""
    path = tmp_path_factory.mktemp("taxonomy") / "food.txt"
    path.write_text("".join(line for line in SAMPLE_TAXONOMY.read_text(encoding="utf-8").splitlines(keepends=True)
                            if "Food, Beverages" in line), encoding="utf-8")
    assert len(load_taxonomy(path).categories) == 364
    return path


@pytest.fixture(scope="module")
def sample_result(migrator):
    return run_migration(sample_settings(), migrator)


def test_sample_migration_maps_every_row_to_a_listed_category(sample_result):
    source = pl.read_csv(SAMPLE_SOURCE, infer_schema=False)
    taxonomy = load_taxonomy(SAMPLE_TAXONOMY)
    mapping = sample_result.mapping
    assert mapping.height == source.height == 308
    assert sample_result.rejects.height == 0
    assert mapping["source_id"].to_list() == source["index"].to_list()
    assert set(mapping["target_category"]) <= set(taxonomy.categories)
    # the Google id travels with the category
    for cat, cid in zip(mapping["target_category"], mapping["target_id"]):
        assert taxonomy.ids[cat] == cid
    assert mapping["confidence"].is_between(0, 1).all()
    assert (mapping["margin"] >= 0).all()
    assert (mapping["needs_review"] == (mapping["flags"] != "")).all()
    assert (mapping["score"] >= mapping["alt1_score"]).all() and (mapping["alt1_score"] >= mapping["alt2_score"]).all()
    summary = sample_result.summary_dict()
    # taxonomy only: self-trained, confidence estimated by the proxy calibration, every row flagged by default
    assert summary["Confidence calibrated"].startswith("estimated")
    assert summary["Mapping method"].startswith("taxonomy only: label scores refined by self-training")
    assert mapping["needs_review"].all()
    assert summary["At a glance"]["Rows safe to accept (no flag)"] == 0
    assert summary["Model fingerprint"] and len(summary["Model fingerprint"]) == 16
    # source categories are appended to the product texts, so labels are compared as whole paths
    assert "whole category paths" in summary["Label scoring"]


def test_without_source_categories_labels_are_scored_level_by_level(migrator, food_taxonomy):
    result = run_migration(sample_settings(food_taxonomy, category_context=False), migrator)
    assert result.summary_dict()["Label scoring"].startswith("exact; each path level")
    assert result.mapping.height == 308
    honey = result.mapping.filter(pl.col("source_id") == "2035")["target_category"][0]
    assert honey.rsplit(" > ", 1)[-1] == "Honey"


@pytest.mark.parametrize("product_id, leaf", [
    ("2035", "Honey"),                     # Organic Honey
    ("3172", "Bar Soap"),                  # Bathing Bar Soap - Skincare | Dettol
    ("4712", "Chips"),                     # Chips - Peri Peri
])
def test_sample_migration_gets_the_obvious_ones_right(sample_result, product_id, leaf):
    row = sample_result.mapping.filter(pl.col("source_id") == product_id)
    assert row["target_category"][0].rsplit(" > ", 1)[-1] == leaf


def test_lexical_conflict_and_source_split_flags_mean_what_they_say(sample_result):
    mapping = sample_result.mapping
    th = Thresholds()
    targets = sample_result.target_categories
    leaves = [utils.default_process(_leaf(t)) for t in targets]
    counts = mapping.group_by("source_category", "target_category").len()
    totals = mapping.group_by("source_category").len().rename({"len": "total"})
    shares = {(r["source_category"], r["target_category"]): (r["len"], r["total"])
              for r in counts.join(totals, on="source_category").iter_rows(named=True)}
    n_groups = mapping.group_by("source_category").agg(pl.col("target_category").n_unique()).rows()
    n_targets = dict(n_groups)
    for r in mapping.iter_rows(named=True):
        src_leaf = utils.default_process(_leaf(r["source_category"]))
        best = max(range(len(leaves)), key=lambda i: fuzz.ratio(src_leaf, leaves[i]))
        conflict = fuzz.ratio(src_leaf, leaves[best]) >= th.lexical_min_ratio and \
            not _related(targets[best], r["target_category"])
        assert ("LEXICAL_CONFLICT" in r["flags"]) == conflict, r
        n, total = shares[(r["source_category"], r["target_category"])]
        split = total >= th.split_min_products and n_targets[r["source_category"]] > 1 and n / total < th.split_min_share
        assert ("SOURCE_SPLIT" in r["flags"]) == split, r
    crosswalk = sample_result.crosswalk
    assert crosswalk["count"].sum() == mapping.height
    assert np.allclose(crosswalk.group_by("source_category").agg(pl.col("share").sum())["share"].to_numpy(), 1.0,
                       atol=1e-3)


def _split(frame: pl.DataFrame, n: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    from bench.common import in_test_split

    frame = frame.filter(pl.col("product").is_not_null()).sample(n=n, seed=1).sort(pl.col("index").cast(pl.Int64))
    test = pl.Series([in_test_split(p) for p in frame["product"]])
    return frame.filter(~test), frame.filter(test)


@pytest.fixture(scope="module")
def catalog_run(migrator, bigbasket, tmp_path_factory):
    """2,400 real BigBasket products: 80% labelled target catalog, 20% source (no category column)."""
    tmp = tmp_path_factory.mktemp("catalog")
    target, source = _split(bigbasket.select("index", "product", "brand", "category", "sub_category"), 2400)
    target.write_csv(tmp / "target.csv")
    source.select("index", "product", "brand").write_csv(tmp / "source.csv")
    # ~19 labelled products per category cannot show 97% precision with 95% confidence (every row
    # would be flagged, as the Summary then says); ask for 90% here, the benchmark holds 97%
    settings = MigrationSettings(source=tmp / "source.csv", target_catalog=tmp / "target.csv", progress=False,
                                 thresholds=Thresholds(target_precision=0.9))
    result = run_migration(settings, migrator)
    truth = dict(zip(source["index"], [f"{c} > {s}" for c, s in zip(source["category"], source["sub_category"])]))
    return result, truth


def test_target_catalog_mode_is_accurate_and_calibrated(catalog_run):
    result, truth = catalog_run
    mapping = result.mapping
    assert mapping.height == len(truth)
    y = np.array([truth[i] for i in mapping["source_id"]], dtype=object)
    correct = np.array(mapping["target_category"].to_list(), dtype=object) == y
    top3 = correct | (np.array(mapping["alt1_category"].to_list(), dtype=object) == y) | \
        (np.array(mapping["alt2_category"].to_list(), dtype=object) == y)
    unflagged = ~mapping["needs_review"].to_numpy()
    assert result.calibrated
    assert correct.mean() > 0.6          # measured 0.70 on this subset (base model, 1,900 targets)
    assert top3.mean() > correct.mean() + 0.1
    assert unflagged.mean() > 0.1
    assert correct[unflagged].mean() > correct.mean() + 0.1   # flags catch the errors
    assert correct[unflagged].mean() > 0.85                     # near the 0.9 asked of leave-one-out
    assert expected_calibration_error(mapping["confidence"].to_numpy(), correct) < 0.1
    summary = result.summary_dict()
    assert summary["Confidence calibrated"].startswith("yes")
    assert summary["Leave-one-out products"] == summary["Target products used"]
    # nearest evidence is a real target product text
    assert mapping["nearest_target"].str.len_chars().min() > 0


def test_the_source_scored_in_small_chunks_maps_as_in_one(catalog_run, migrator, monkeypatch):
    """Onto a labelled target the source is encoded and scored chunk by chunk: 7 chunks of 70 give
    the mapping one chunk gives (the same categories, flags and confidences)."""
    import migrate.mapping.target_side as target_side

    whole, _ = catalog_run
    settings = MigrationSettings(source=whole.summary_dict()["Source file"],
                                 target_catalog=whole.summary_dict()["Target catalog"], progress=False,
                                 thresholds=Thresholds(target_precision=0.9))
    monkeypatch.setattr(target_side, "SOURCE_CHUNK", 70)
    chunked = run_migration(settings, migrator).mapping
    assert whole.mapping.height > 7 * 60
    for column in ("source_id", "target_category", "alt1_category", "flags", "nearest_target"):
        assert chunked[column].to_list() == whole.mapping[column].to_list(), column
    # confidences are rounded to 4 places: a float-level difference of the chunked search may move one
    # across a rounding boundary, never further
    assert np.allclose(chunked["confidence"].to_numpy(), whole.mapping["confidence"].to_numpy(), atol=1.01e-4)


def test_every_source_row_ends_in_mapping_or_rejects_exactly_once(migrator, bigbasket, tmp_path):
    rows = bigbasket.head(60).select("index", "product", "brand", "category", "sub_category")
    lines = [",".join(rows.columns)]
    for r in rows.iter_rows():
        lines.append(",".join('"' + (v or "").replace('"', '""') + '"' for v in r))
    lines[5] = lines[5].replace(lines[5].split(",")[1], '""', 1)          # empty product text
    lines[9] = ",".join(['"1"', *lines[9].split(",")[1:]])               # duplicate of id 1
    lines[14] = lines[14] + ',"extra field"'                              # malformed row
    lines[20] = '"",' + ",".join(lines[20].split(",")[1:])               # empty id
    path = tmp_path / "source.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run_migration(MigrationSettings(source=path, target_taxonomy=SAMPLE_TAXONOMY, progress=False), migrator)
    mapped = result.mapping["source_row"].to_list()
    rejected = result.rejects.filter(pl.col("file") == "source")["row"].to_list()
    assert sorted(mapped + rejected) == list(range(2, 62))   # header is row 1
    assert len(set(mapped) & set(rejected)) == 0
    reasons = dict(zip(rejected, result.rejects["reason"]))
    assert "empty text" in reasons[6]
    assert "duplicate id '1' (first at row 2)" in reasons[10]
    assert "malformed row" in reasons[15]
    assert "empty id" in reasons[21]


def test_input_formats_give_the_same_mapping_and_outputs_hold_everything(migrator, bigbasket, food_taxonomy, tmp_path):
    rows = bigbasket.slice(100, 40).select("index", "product", "brand")
    rows = rows.with_columns(pl.when(pl.int_range(pl.len()) == 3).then(pl.lit('=HYPERLINK("http://x","y")'))
                             .otherwise(pl.col("product")).alias("product"))
    paths = {"csv": tmp_path / "s.csv", "parquet": tmp_path / "s.parquet", "jsonl": tmp_path / "s.jsonl"}
    rows.write_csv(paths["csv"])
    rows.write_parquet(paths["parquet"])
    rows.write_ndjson(paths["jsonl"])
    results = {k: run_migration(MigrationSettings(source=p, target_taxonomy=food_taxonomy, progress=False), migrator)
               for k, p in paths.items()}
    cats = {k: r.mapping["target_category"].to_list() for k, r in results.items()}
    assert cats["csv"] == cats["parquet"] == cats["jsonl"]
    result = results["csv"]
    out = write_output(result, tmp_path / "m.csv")
    assert [p.name for p in out] == ["m.csv", "m.rejects.csv", "m.summary.json"]
    written = pl.read_csv(out[0], infer_schema=False)
    assert written.height == 40
    assert written["source_text"][3].startswith("'=HYPERLINK")      # escaped for spreadsheets
    assert json.loads(out[2].read_text())["Source rows"] == 40
    parquet = write_output(result, tmp_path / "p.parquet")
    assert pl.read_parquet(parquet[0])["source_text"][3].startswith("=HYPERLINK")  # machines get the raw text
    book = write_output(result, tmp_path / "m.xlsx")[0]
    sheet = load_workbook(book)["Mapping"]
    header = [c.value for c in sheet[1]]
    text_cell = sheet.cell(row=5, column=header.index("source_text") + 1)
    assert text_cell.data_type == "s" and text_cell.value.startswith("=HYPERLINK")


def test_target_catalog_rows_outside_the_taxonomy_are_rejected(migrator, bigbasket, tmp_path):
    target = bigbasket.slice(0, 300).select("index", "product", "brand", "category", "sub_category")
    target.write_csv(tmp_path / "target.csv")
    keep = sorted({f"{c} > {s}" for c, s in zip(target["category"], target["sub_category"])})[:5]
    (tmp_path / "tax.txt").write_text("\n".join(keep) + "\n")
    bigbasket.slice(1000, 20).select("index", "product", "brand").write_csv(tmp_path / "source.csv")
    result = run_migration(MigrationSettings(source=tmp_path / "source.csv", target_catalog=tmp_path / "target.csv",
                                             target_taxonomy=tmp_path / "tax.txt", progress=False), migrator)
    in_tax = sum(f"{c} > {s}" in keep for c, s in zip(target["category"], target["sub_category"]))
    target_rejects = result.rejects.filter(pl.col("file") == "target")
    assert target_rejects.height == 300 - in_tax
    assert target_rejects["reason"].str.contains("not in the target taxonomy").all()
    assert set(result.mapping["target_category"]) <= set(keep)


def test_leaves_only_and_identical_texts_encoded_once(migrator, tmp_path):
    from migrate.core.embedding import Embedder

    result = run_migration(sample_settings(leaves_only=True), migrator)
    leaves = set(load_taxonomy(SAMPLE_TAXONOMY).leaves())
    assert set(result.mapping["target_category"]) <= leaves
    emb = Embedder(migrator.encoder.model, progress=False)
    vectors = emb.encode(["Dark Chocolate", "Chocolate Creme Body Lotion", "Dark Chocolate"])
    assert emb.stats == {"requested": 3, "encoded": 2, "cached": 0, "seconds": emb.stats["seconds"]}
    assert np.allclose(vectors[0], vectors[2]) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)


def test_cli_demo_writes_the_workbook_and_refuses_to_overwrite(migrator, tmp_path):
    """`make demo`'s command, in-process with the session's model (`make demo` itself and the nightly
    tests' `migrate --state` run the real process): every row mapped, no progress bar under --quiet, the sheets in order; run again,
    it refuses to overwrite before any model work."""
    from click.testing import CliRunner

    from migrate.cli import main

    out = tmp_path / "demo.xlsx"
    args = ["migrate", str(SAMPLE_SOURCE), "--target-taxonomy", str(SAMPLE_TAXONOMY), "--source-category",
            "category,sub_category", "-o", str(out), "--quiet"]
    done = CliRunner().invoke(main, args)
    assert done.exit_code == 0, done.output
    assert "mapped 308 of 308" in done.stdout
    assert "Batches" not in done.stderr   # --quiet: no progress bars
    book = load_workbook(out)
    assert book.sheetnames[:6] == ["Summary", "Category decisions", "Review", "Mapping", "Crosswalk", "Rejects"]
    assert book["Mapping"].max_row == 309
    with counting_model_loads() as loads:
        again = CliRunner().invoke(main, args)
    assert again.exit_code == 1 and "already exists" in again.stderr and "Traceback" not in again.output
    assert not loads   # refused before any model work


def test_the_documented_library_api_imports_and_runs(migrator, tmp_path):
    """migrate/__init__.py's example: the public names import from the package and map the samples;
    a bare `import migrate` does not pull in torch (the process boundary is what is tested)."""
    import migrate
    from migrate import MigrationSettings as Settings, run_migration as run, write_output as write

    from migrate import MatchSettings, run_match, write_match_output
    from migrate.matching.matcher import run_match as matcher_run
    from migrate.matching.output import write_match_output as matcher_write

    assert {"MigrationSettings", "run_migration", "write_output", "reconcile", "apply_review",
            "MatchSettings", "run_match", "write_match_output"} <= set(migrate.__all__)
    assert run_match is matcher_run and write_match_output is matcher_write
    with pytest.raises(TaxmigError, match="shop_a.csv"):
        run_match(MatchSettings(left="shop_a.csv", right="shop_b.csv"))  # the docstring's files: none here
    result = run(Settings(source=SAMPLE_SOURCE, target_taxonomy=SAMPLE_TAXONOMY, progress=False), migrator)
    assert result.mapping.height == 308
    assert write(result, tmp_path / "mapping.xlsx") == [tmp_path / "mapping.xlsx"]
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        migrate.nope  # noqa: B018
    light = subprocess.run([sys.executable, "-c", "import sys, migrate; print('torch' in sys.modules)"],
                           capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert light.stdout.strip() == "False", light.stderr


def test_half_precision_encodes_close_to_fp32_and_is_fingerprinted_apart(migrator, sample_result):
    """--precision bf16 (on this CPU; fp16 is for a GPU): vectors within cosine 0.99 of fp32's, and a
    fingerprint of its own so the embedding cache never mixes the two."""
    from models import load_encoder, resolve_model

    texts = sample_result.mapping["source_text"].to_list()[:64]
    model, fp = load_encoder(resolve_model(None), device="cpu", precision="bf16")
    half = model.encode(texts, normalize_embeddings=True, convert_to_numpy=True).astype(np.float32)
    full = migrator.encoder.model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    cosine = (half * full).sum(axis=1)
    assert cosine.min() > 0.99, cosine.min()
    assert fp == migrator.encoder.fingerprint + "-bf16"
    with pytest.raises(TaxmigError, match="precision"):
        MigrationSettings(source=SAMPLE_SOURCE, target_taxonomy=SAMPLE_TAXONOMY,
                          encoder=EncoderSettings(precision="int4")).validate()


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")
def test_gpu_fp16_maps_the_sample_as_the_cpu_does(sample_result):
    """On a GPU with fp16 the demo sample maps (almost) row for row as fp32 on the CPU."""
    gpu = run_migration(sample_settings(encoder=EncoderSettings(device="cuda", precision="fp16")))
    same = np.mean([a == b for a, b in zip(gpu.mapping["target_category"], sample_result.mapping["target_category"])])
    assert same > 0.95, same
