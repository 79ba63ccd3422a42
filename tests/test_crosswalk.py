"""``taxmig crosswalk`` on real taxonomy slices with the real bundled model: Google's "Animals &
Pet Supplies" onto Shopify's, BigBasket's category > sub_category paths (with products) onto
Instacart's department > aisle; the workbook, CSV escaping, --overwrite, bad files, and the
``review apply`` round trip on a crosswalk workbook."""

from __future__ import annotations

import shlex
from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner
from openpyxl import load_workbook

from migrate.cli import main
from migrate.core.report import GUIDE
from migrate.core.taxonomy import load_taxonomy
from migrate.errors import InputError, TaxmigError
from migrate.mapping.crosswalk import CROSSWALK_MAPPING_COLUMNS, CROSSWALK_SHEETS, CrosswalkSettings, run_crosswalk
from migrate.mapping.result import mapping_dtype, review_order
from migrate.mapping.workbook import SHEET_NAMES
from migrate.nightly.review import apply_review
from tests.conftest import data_file

ANIMALS = "Animals & Pet Supplies"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Real slices written as the layouts users have: Google's YAML slice, Shopify's gid text slice,
    BigBasket paths one per line, Instacart paths, and up to 5 BigBasket products per path."""
    folder = tmp_path_factory.mktemp("crosswalk")
    google = data_file("shopify_product_taxonomy", "data", "integrations", "google", "2021-09-21", "full_names.yml")
    shopify = data_file("shopify_product_taxonomy", "dist", "en", "categories.txt")
    lines = google.read_text().splitlines()
    keep: list[str] = []
    for i, line in enumerate(lines):  # "- id: N" followed by "  full_name: ..."
        if line.lstrip().startswith("full_name:") and ANIMALS in line:
            keep += [lines[i - 1], line]
    (folder / "google.yml").write_text("---\n" + "\n".join(keep) + "\n")
    shop = [ln for ln in shopify.read_text().splitlines() if f": {ANIMALS}" in ln]
    (folder / "shopify.txt").write_text("\n".join(shop) + "\n")
    (folder / "shopify_no_dog_diapers.txt").write_text("\n".join(ln for ln in shop if "> Dog Diapers" not in ln) + "\n")
    bb = pl.read_csv(data_file("bigbasket", "products.csv"), infer_schema=False).filter(
        pl.col("product").is_not_null() & pl.col("sub_category").is_not_null())
    bb = bb.with_columns(pl.concat_str([pl.col("category").str.strip_chars(), pl.col("sub_category").str.strip_chars()],
                                       separator=" > ").alias("path"))
    paths = sorted(set(bb["path"]))
    (folder / "bigbasket.txt").write_text("\n".join(paths) + "\n")
    bb.filter(pl.int_range(pl.len()).over("path") < 5).select("index", "product", "brand", "path") \
        .write_csv(folder / "products.csv")
    aisles = pl.read_csv(data_file("instacart", "aisles.csv"))
    departments = pl.read_csv(data_file("instacart", "departments.csv"))
    pairs = (pl.read_csv(data_file("instacart", "products.csv")).join(aisles, on="aisle_id")
             .join(departments, on="department_id").select("department", "aisle").unique())
    (folder / "instacart.txt").write_text("\n".join(sorted(f"{d} > {a}" for d, a in pairs.iter_rows()
                                                           if {d, a}.isdisjoint({"missing", "other"}))) + "\n")
    return {name: folder / name for name in ("google.yml", "shopify.txt", "shopify_no_dog_diapers.txt", "bigbasket.txt",
                                             "products.csv", "instacart.txt")} | {"folder": folder}


@pytest.fixture
def offline_model(migrator, monkeypatch):
    """CLI runs reuse the session's model instead of loading it again."""
    monkeypatch.setattr("migrate.core.encoder.load_encoder",
                        lambda ref, **kw: (migrator.encoder.model, migrator.encoder.fingerprint))


@pytest.fixture(scope="module")
def google_shopify(files, migrator):
    settings = CrosswalkSettings(old=files["google.yml"], new=files["shopify.txt"], progress=False)
    return run_crosswalk(settings, migrator.encoder)


def test_every_google_category_once_and_known_rows_right(google_shopify, files):
    old = load_taxonomy(files["google.yml"]).categories
    m = google_shopify.mapping
    assert m["source_id"].to_list() == old  # every old category exactly once, in file order
    assert m.columns == CROSSWALK_MAPPING_COLUMNS
    row = dict(zip(m["source_id"], m["target_category"]))
    assert row["Animals & Pet Supplies > Pet Supplies > Cat Supplies > Cat Litter"] == \
        "Animals & Pet Supplies > Pet Supplies > Cat Supplies > Cat Litter"
    # Shopify renamed the parent: "Fish Supplies" -> "Fish & Aquatic Supplies"
    assert row["Animals & Pet Supplies > Pet Supplies > Fish Supplies > Aquarium Filters"] == \
        "Animals & Pet Supplies > Pet Supplies > Fish & Aquatic Supplies > Aquarium Filters"
    ids = dict(zip(m["source_id"], m["target_id"]))
    assert ids["Animals & Pet Supplies > Pet Supplies > Cat Supplies > Cat Litter"] == \
        "gid://shopify/TaxonomyCategory/ap-2-2-4"
    assert m["source_taxonomy_id"][0] != ""  # Google's numeric ids are kept
    first = m.filter(pl.col("source_id") == ANIMALS).row(0, named=True)
    assert first["source_category"] == "" and first["parent_target"] == ""
    assert (m["confidence"] >= m["alt1_score"]).all()


def test_a_category_without_an_equivalent_lands_with_its_parent_not_on_a_sibling(files, migrator):
    """Shopify without "Dog Diapers": Google's dog diapers belong on "Dog Supplies" (where their
    parent landed), not on the sibling "Dog Diaper Pads & Liners" the plain nearest path picks."""
    settings = CrosswalkSettings(old=files["google.yml"], new=files["shopify_no_dog_diapers.txt"], progress=False)
    diapers = "Animals & Pet Supplies > Pet Supplies > Dog Supplies > Dog Diapers"
    ours = run_crosswalk(settings, migrator.encoder).mapping.filter(pl.col("source_id") == diapers).row(0, named=True)
    plain = run_crosswalk(replace(settings, parent_bonus=0.0), migrator.encoder).mapping \
        .filter(pl.col("source_id") == diapers).row(0, named=True)
    assert ours["target_category"] == "Animals & Pet Supplies > Pet Supplies > Dog Supplies" == ours["parent_target"]
    assert plain["target_category"] == "Animals & Pet Supplies > Pet Supplies > Dog Supplies > Dog Diaper Pads & Liners"


def test_cli_workbook_with_products(files, offline_model, tmp_path):
    out = tmp_path / "bb_instacart.xlsx"
    args = ["crosswalk", str(files["bigbasket.txt"]), str(files["instacart.txt"]), "-o", str(out), "--quiet",
            "--products", str(files["products.csv"]), "--product-category", "path"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "mapped 99 old categories onto 132 new ones" in result.output
    wb = load_workbook(out)
    assert wb.sheetnames == ["Summary", "Review", "Mapping", "Rejects", "Parameters", "Categories"]
    assert wb["Categories"].sheet_state == "hidden"
    header = [c.value for c in wb["Mapping"][1]]
    assert header[:len(CROSSWALK_MAPPING_COLUMNS)] == CROSSWALK_MAPPING_COLUMNS
    assert header[-3:] == ["decision", "reviewer_note", "row_key"]
    rows = {r[1]: dict(zip(header, r)) for r in wb["Mapping"].iter_rows(min_row=2, values_only=True)}
    assert rows["Beverages > Tea"]["target_category"] == "beverages > tea"
    assert rows["Baby Care > Diapers & Wipes"]["target_category"] == "babies > diapers wipes"
    assert rows["Beverages > Tea"]["products"] == 5
    summary = {r[0]: r[1] for r in wb["Summary"].iter_rows(min_row=3, values_only=True)}
    assert summary["Old categories"] == 99
    assert summary["Products used"] == pl.read_csv(files["products.csv"]).height == sum(r["products"] for r in rows.values())
    review = [r for r in wb["Review"].iter_rows(min_row=2, values_only=True)]
    flagged = sum(1 for r in wb["Mapping"].iter_rows(min_row=2, values_only=True) if r[header.index("needs_review")])
    assert len(review) == flagged > 0
    # without --state the first page says how to get a workbook that review apply reads back
    steps = first_page_guide(out)
    assert "this run started none: run the same taxmig crosswalk again with --state DIR added" in \
        steps["3. Read it back"]


def first_page_guide(path: Path) -> dict[str, object]:
    """The steps of the Summary's 'What to do with this file' block."""
    rows = [r for r in load_workbook(path, read_only=True)["Summary"].iter_rows(min_row=3, max_col=2, values_only=True)]
    start = [r[0] for r in rows].index(GUIDE) + 1
    steps = {}
    for label, value in rows[start:]:
        if not str(label).startswith("  "):
            break
        steps[label.strip()] = value
    return steps


def test_the_crosswalk_workbook_has_migrates_first_page_and_order(files, offline_model, tmp_path):
    """Issue 37 item 9: migrate's sheets in migrate's order (less the two a crosswalk has no use
    for), the first page with At a glance, what to do and the command -- which, run as printed on
    the reviewed workbook, reads it back -- Review in migrate's order and columns."""
    out, state = tmp_path / "google_shopify.xlsx", tmp_path / "cw_state"
    args = ["crosswalk", str(files["google.yml"]), str(files["shopify.txt"]), "-o", str(out), "--quiet",
            "--state", str(state)]
    run = CliRunner().invoke(main, args)
    assert run.exit_code == 0, run.output
    wb = load_workbook(out)
    assert wb.sheetnames == [name for name in SHEET_NAMES if name not in ("Category decisions", "Crosswalk")] \
        == list(CROSSWALK_SHEETS)
    mapping = wb["Mapping"]
    header = [c.value for c in mapping[1]]
    frame = pl.DataFrame([dict(zip(header[:len(CROSSWALK_MAPPING_COLUMNS)], r))
                          for r in mapping.iter_rows(min_row=2, max_col=len(CROSSWALK_MAPPING_COLUMNS),
                                                     values_only=True)],
                         schema={c: mapping_dtype(c) if c not in ("products", "path_similarity") else
                                 (pl.Int64 if c == "products" else pl.Float64) for c in CROSSWALK_MAPPING_COLUMNS})
    frame = frame.with_columns(pl.col("source_category").fill_null(""))
    rows = [(r[0], r[1]) for r in wb["Summary"].iter_rows(min_row=3, max_col=2, values_only=True)]
    assert wb["Summary"]["A1"].value == "taxmig crosswalk summary"
    assert rows[0] == ("At a glance", None)
    glance = dict(rows[1:6])
    assert glance["  Rows safe to accept (no flag)"] == frame.filter(~pl.col("needs_review")).height
    assert glance["  Rows to review (flagged; Review sheet)"] == frame.filter(pl.col("needs_review")).height > 0
    assert rows[6] == (GUIDE, None)
    # what a run describes of itself sits on Parameters, as migrate's does
    labels = [label for label, _ in rows]
    assert "Model fingerprint" not in labels and "Settings" not in labels
    assert "Model fingerprint" in [r[0] for r in wb["Parameters"].iter_rows(min_row=3, max_col=1, values_only=True)]
    steps = first_page_guide(out)
    assert steps["1. Fill the 'decision' column"].startswith("In Review: one flagged old category per row")
    final = tmp_path / "google_shopify_final.csv"
    assert steps["4. Read it back"] == f"taxmig review apply {out} --state {state} -o {final}"
    assert steps["5. What that writes"].startswith(f"{final}: every old category's final category")
    # Review: migrate's order (grouped by parent, the most flagged groups first) and its columns first
    review = wb["Review"]
    review_header = [c.value for c in review[1]]
    assert review_header[:9] == ["source_text", "source_category", "target_category", "confidence", "flags",
                                 "alt1_category", "alt2_category", "decision", "reviewer_note"]
    listed = [r[0] for r in review.iter_rows(min_row=2, max_col=1, values_only=True)]
    assert listed == review_order(frame)["source_text"].to_list()
    assert len(wb["Summary"]._charts) == 2 and wb["Summary"].row_breaks.brk
    # the reviewer does what the page says: a decision in Review, saved in place, then the command
    review.cell(2, review_header.index("decision") + 1).value = "ACCEPT"
    wb.save(out)
    applied = CliRunner().invoke(main, shlex.split(steps["4. Read it back"])[1:])
    assert applied.exit_code == 0, applied.output
    table = pl.read_csv(final, infer_schema=False)
    assert table.height == frame.height
    assert table.filter(pl.col("product_id") == listed[0])["final_source"].item() == "reviewer"


def test_formula_like_names_are_escaped_and_overwrite_is_respected(files, offline_model, tmp_path):
    old = tmp_path / "old.txt"
    old.write_text("=HYPERLINK(\"http://x\",\"tea\") > Tea\nBeverages > Coffee\n")
    out = tmp_path / "cw.csv"
    args = ["crosswalk", str(old), str(files["instacart.txt"]), "-o", str(out), "--quiet"]
    assert CliRunner().invoke(main, args).exit_code == 0
    table = pl.read_csv(out)
    assert table["source_id"][0].startswith("'=HYPERLINK")
    assert table["target_category"][1] == "beverages > coffee"
    assert (tmp_path / "cw.summary.json").exists() and (tmp_path / "cw.rejects.csv").exists()
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 1 and "already exists" in again.output and "--overwrite" in again.output
    assert CliRunner().invoke(main, [*args, "--overwrite"]).exit_code == 0
    xlsx = tmp_path / "cw.xlsx"
    assert CliRunner().invoke(main, [*args[:4], str(xlsx), "--quiet"]).exit_code == 0
    cell = load_workbook(xlsx)["Mapping"]["B2"]
    assert cell.value.startswith("=HYPERLINK") and cell.data_type == "s" and cell.quotePrefix


def test_bad_files_give_clear_errors(files, tmp_path):
    missing = CliRunner().invoke(main, ["crosswalk", str(tmp_path / "nope.txt"), str(files["instacart.txt"]),
                                        "-o", str(tmp_path / "x.xlsx")])
    assert missing.exit_code == 1 and "nope.txt: file not found" in missing.output
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(InputError, match="lists no categories"):
        run_crosswalk(CrosswalkSettings(old=empty, new=files["instacart.txt"], progress=False))
    with pytest.raises(TaxmigError, match="no product has a category of the old taxonomy"):
        run_crosswalk(CrosswalkSettings(old=files["instacart.txt"], new=files["bigbasket.txt"],
                                        products=files["products.csv"], product_category="path", progress=False))
    with pytest.raises(TaxmigError, match="--top-n"):
        CrosswalkSettings(old=files["bigbasket.txt"], new=files["instacart.txt"], top_n=0).validate()


def test_review_apply_round_trip_on_a_crosswalk_workbook(files, offline_model, tmp_path):
    out, state = tmp_path / "cw.xlsx", tmp_path / "state"
    args = ["crosswalk", str(files["bigbasket.txt"]), str(files["instacart.txt"]), "-o", str(out), "--quiet",
            "--state", str(state)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    wb = load_workbook(out)
    ws = wb["Mapping"]
    header = [c.value for c in ws[1]]
    col = header.index("decision") + 1
    rows = {ws.cell(r, 2).value: r for r in range(2, ws.max_row + 1)}
    ws.cell(rows["Beverages > Tea"], col).value = "ACCEPT"
    ws.cell(rows["Bakery, Cakes & Dairy > Dairy"], col).value = "dairy eggs > milk"
    ws.cell(rows["Beauty & Hygiene > Mothers & Maternity"], col).value = "NEW CATEGORY NEEDED"
    ws.cell(rows["Beauty & Hygiene > Mothers & Maternity"], header.index("reviewer_note") + 1).value = "no aisle"
    wb.save(tmp_path / "reviewed.xlsx")
    outcome = apply_review(tmp_path / "reviewed.xlsx", state, tmp_path / "final.csv", reviewer="ana")
    assert outcome.counts == {"accept": 1, "override": 1, "new_category": 1, "unchanged": 0, "category_decisions": 0,
                              "covered_by_category_decisions": 0}
    final = pl.read_csv(tmp_path / "final.csv")
    assert final.height == 99
    got = {r["product_id"]: r for r in final.iter_rows(named=True)}
    assert got["Beverages > Tea"]["final_category"] == "beverages > tea"
    assert got["Bakery, Cakes & Dairy > Dairy"]["final_category"] == "dairy eggs > milk"
    assert got["Bakery, Cakes & Dairy > Dairy"]["decided_by"] == "ana"
    assert got["Beauty & Hygiene > Mothers & Maternity"]["final_source"] == "new_category"
    # a typo is refused with its cell, and nothing is applied
    ws.cell(rows["Beverages > Tea"], col).value = "bevrages > tee"
    wb.save(tmp_path / "bad.xlsx")
    with pytest.raises(InputError, match=r"Mapping!\w+\d+: 'bevrages > tee' is not a target category"):
        apply_review(tmp_path / "bad.xlsx", state, tmp_path / "final2.csv")
    assert not (tmp_path / "final2.csv").exists()
