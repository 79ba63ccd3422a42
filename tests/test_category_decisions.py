"""Decisions per source category on real BigBasket rows with the real model: a reviewer decides a
whole source category and one source -> target pair in the nightly report, and one product of
that category on its own row; the row decision wins, the category decisions cover the rest, and
two more nights add products to the decided categories, which inherit the decisions. Bad category
rows stop the apply with the cell named and nothing applied."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest
from openpyxl import load_workbook

from migrate.errors import InputError
from migrate.mapping.category_decisions import (CATEGORY_DECISION, CATEGORY_DISAGREES, LEVEL_CATEGORY, LEVEL_PAIR,
                                        SOURCE_CATEGORY_DECISION, category_table)
from migrate.mapping.settings import MigrationSettings
from migrate.mapping.workbook import CATEGORY_SHEET
from migrate.nightly.reconcile import reconcile
from migrate.nightly.review import apply_review
from migrate.nightly.state import StateStore

SUBCATS = ["Tea", "Coffee", "Biscuits & Cookies", "Chocolates & Candies", "Skin Care", "Hair Care", "Dairy"]
COLUMNS = ["index", "product", "category", "sub_category", "brand"]


@pytest.fixture(scope="module")
def catalogs(bigbasket, tmp_path_factory):
    """Products of seven subcategories: 10 each live on night 1, 3 more each joining on night 2 and
    on night 3, and a labelled target catalog of 30 others each. The source carries only the top
    category (coarser than the target's category > sub_category)."""
    frame = (bigbasket.filter(pl.col("product").is_not_null() & pl.col("sub_category").is_in(SUBCATS))
             .select(COLUMNS).unique(subset="product", keep="first", maintain_order=True)
             .with_columns(pl.int_range(pl.len()).over("sub_category").alias("n")))
    folder = tmp_path_factory.mktemp("category-data")
    frame.filter((pl.col("n") >= 20) & (pl.col("n") < 50)).drop("n").write_csv(folder / "target.csv")
    nights = {}
    for night, upto in ((1, 10), (2, 13), (3, 16)):
        path = folder / f"night{night}.csv"
        frame.filter(pl.col("n") < upto).drop("n", "sub_category").write_csv(path)
        nights[night] = path
    return {"folder": folder, "nights": nights}


def _fill(report: Path, out: Path, category_rows: dict[tuple[str, str, str], str] = (),
          product_rows: dict[str, str] = (), note: str = "by category") -> dict[tuple[str, str, str], str]:
    """Fill decisions as a reviewer would: Category decisions rows by (level, source, target or
    None for the category row's own), Review/Mapping rows by product id. Returns the cells filled."""
    wb = load_workbook(report)
    ws = wb[CATEGORY_SHEET]
    header = [c.value for c in ws[1]]
    col = {h: i + 1 for i, h in enumerate(header)}
    cells = {}
    for (level, source, target), decision in dict(category_rows).items():
        for r in range(2, ws.max_row + 1):
            if (ws.cell(r, col["level"]).value, ws.cell(r, col["source_category"]).value) == (level, source) and \
                    (target is None or ws.cell(r, col["target_category"]).value == target):
                ws.cell(r, col["decision"]).value = decision
                ws.cell(r, col["reviewer_note"]).value = note
                cells[(level, source, target)] = ws.cell(r, col["decision"]).coordinate
                break
        else:
            raise AssertionError(f"no {level} row {source} -> {target}")
    for pid, decision in dict(product_rows).items():
        sheet = wb["Review"] if "Review" in wb.sheetnames else wb["Mapping"]
        head = [c.value for c in sheet[1]]
        sid, dec = head.index("source_id") + 1, head.index("decision") + 1
        rows = [r for r in range(2, sheet.max_row + 1) if str(sheet.cell(r, sid).value) == pid]
        assert rows, f"product {pid} not in the Review sheet"
        sheet.cell(rows[0], dec).value = decision
    wb.save(out)
    return cells


@pytest.fixture(scope="module")
def nights(catalogs, migrator, tmp_path_factory):
    folder = tmp_path_factory.mktemp("category-nights")
    state = folder / "state"
    settings = MigrationSettings(source=catalogs["nights"][1], target_catalog=catalogs["folder"] / "target.csv",
                                 target_category="category,sub_category", source_category="category",
                                 progress=False)
    out = {"folder": folder, "state": state}
    reconcile(catalogs["nights"][1], state, folder / "r1.xlsx", init_settings=settings, migrator=migrator,
              progress=False, review_scope="all")
    products = StateStore.open(state).load().products
    out["night1"] = products
    table = category_table(products)
    cats = table.filter(pl.col("level") == LEVEL_CATEGORY)
    # the category row: the top category with the most products; decided to its most common target
    whole = cats.sort("products", descending=True).row(0, named=True)
    # a pair of another source category that has several targets
    pairs = table.filter((pl.col("level") == LEVEL_PAIR) & (pl.col("source_category") != whole["source_category"]))
    pair = pairs.sort("products", descending=True).row(0, named=True)
    members = products.filter(pl.col("source_category") == whole["source_category"])
    flagged = members.filter(pl.col("needs_review"))
    own = (flagged if flagged.height else members).row(0, named=True)  # decided on its own row
    other = next(c for c in table["target_category"].unique().sort() if c != whole["target_category"])
    out.update(whole=whole, pair=pair, own=own, other=other)
    out["cells"] = _fill(folder / "r1.xlsx", folder / "r1_reviewed.xlsx",
                         {(LEVEL_CATEGORY, whole["source_category"], None): whole["target_category"],
                          (LEVEL_PAIR, pair["source_category"], pair["target_category"]): "ACCEPT"},
                         {own["product_id"]: other})
    out["apply"] = apply_review(folder / "r1_reviewed.xlsx", state, folder / "final1.csv", reviewer="priya")
    out["applied"] = StateStore.open(state).load()
    for night in (2, 3):
        out[f"run{night}"] = reconcile(catalogs["nights"][night], state, folder / f"r{night}.xlsx", migrator=migrator,
                                       progress=False)
        out[f"night{night}"] = StateStore.open(state).load()
    return out


def test_the_sheet_has_a_row_per_source_category_and_pair(nights):
    wb = load_workbook(nights["folder"] / "r1.xlsx", read_only=True)
    assert CATEGORY_SHEET in wb.sheetnames
    rows = list(wb[CATEGORY_SHEET].iter_rows(values_only=True))
    header = rows[0]
    assert header[:9] == ("level", "source_category", "target_category", "products", "share", "top_targets",
                          "mean_confidence", "flagged", "flags")
    assert header[9:12] == ("decision", "reviewer_note", "row_key")
    body = [dict(zip(header, r)) for r in rows[1:]]
    category_rows = [r for r in body if r["level"] == "category"]
    assert sum(r["products"] for r in category_rows) == nights["night1"].height == 70
    for c in category_rows:  # a category's pairs add up to it
        pairs = [r for r in body if r["level"] == "pair" and r["source_category"] == c["source_category"]]
        assert not pairs or sum(p["products"] for p in pairs) == c["products"]
        assert c["top_targets"].startswith(c["target_category"])
    # the Summary's charts count every live product per confidence band (their table: Chart data)
    bands = [r for r in wb["Chart data"].iter_rows(values_only=True) if r and isinstance(r[1], int)]
    assert sum(r[1] for r in bands[:10]) == 70


def test_row_decisions_win_and_category_decisions_cover_the_rest(nights):
    whole, pair, own = nights["whole"], nights["pair"], nights["own"]
    gen = nights["applied"]
    products = gen.products
    members = products.filter(pl.col("source_category") == whole["source_category"])
    mine = products.filter(pl.col("product_id") == own["product_id"]).row(0, named=True)
    assert mine["final_category"] == nights["other"] and mine["final_source"] == "reviewer"
    rest = members.filter(pl.col("product_id") != own["product_id"])
    assert (rest["final_category"] == whole["target_category"]).all()
    assert (rest["final_source"] == SOURCE_CATEGORY_DECISION).all() and not rest["needs_review"].any()
    paired = products.filter((pl.col("source_category") == pair["source_category"])
                             & (pl.col("target_category") == pair["target_category"]))
    assert paired.height == pair["products"] and (paired["final_category"] == pair["target_category"]).all()
    outside = products.filter((pl.col("source_category") == pair["source_category"])
                              & (pl.col("target_category") != pair["target_category"]))
    assert (outside["final_source"] == "model").all()
    # the report of the apply: what each category decision covered
    covered = {c["decision_id"]: c["products"] for c in nights["apply"].covered}
    assert covered == {f"category: {whole['source_category']}": whole["products"] - 1,
                       f"pair: {pair['source_category']} -> {pair['target_category']}": pair["products"]}
    assert f"covered {whole['products'] - 1 + pair['products']} product(s)" in nights["apply"].message
    # the decision log keeps both kinds: per product with its scope, and the category decisions
    log = gen.decisions
    assert log.filter(pl.col("scope") == "row")["product_id"].to_list() == [own["product_id"]]
    assert log.filter(pl.col("scope") == f"category: {whole['source_category']}").height == whole["products"] - 1
    cat_log = gen.category_decisions
    assert cat_log.height == 2 and set(cat_log["decided_by"]) == {"priya"}
    assert sorted(cat_log["products_covered"].to_list()) == sorted([whole["products"] - 1, pair["products"]])
    assert set(cat_log["sheet_row"]) == {f"'{CATEGORY_SHEET}'!{c}" for c in nights["cells"].values()}
    final = pl.read_csv(nights["folder"] / "final1.csv", infer_schema=False)
    assert final.height == products.height


def test_products_joining_a_decided_category_inherit_it_for_two_nights(nights, catalogs):
    whole, pair = nights["whole"], nights["pair"]
    before = set(nights["night1"]["product_id"])
    for night in (2, 3):
        products = nights[f"night{night}"].products
        joined = products.filter((pl.col("source_category") == whole["source_category"])
                                 & ~pl.col("product_id").is_in(list(before)))
        live = pl.read_csv(catalogs["nights"][night], infer_schema=False)
        expected = live.filter((pl.col("category") == whole["source_category"]) & ~pl.col("index").is_in(list(before)))
        assert joined.height == expected.height >= 3 * (night - 1)  # 3 new products per subcategory a night
        assert (joined["final_category"] == whole["target_category"]).all()
        assert (joined["final_source"] == SOURCE_CATEGORY_DECISION).all()
        assert joined["flags"].str.contains(CATEGORY_DECISION).all()
        for row in joined.iter_rows(named=True):  # disagreement: the model would leave another category unflagged
            strong = row["target_category"] != whole["target_category"] and not row["model_flags"]
            assert (CATEGORY_DISAGREES in row["flags"]) == strong and row["needs_review"] == strong
        paired = products.filter((pl.col("source_category") == pair["source_category"])
                                 & (pl.col("target_category") == pair["target_category"]))
        assert (paired["final_category"] == pair["target_category"]).all()
        # the decisions made on night 1 are all still in force, unchanged
        decided = nights["applied"].products.filter(pl.col("final_source") != "model")
        now = products.filter(pl.col("product_id").is_in(decided["product_id"].to_list()))
        assert now.sort("product_id")["final_category"].to_list() == decided.sort("product_id")["final_category"].to_list()
    counts = nights["run3"].monitoring["counts"]
    inherited = nights["night3"].products.filter(pl.col("flags").str.contains(CATEGORY_DECISION))
    assert counts["inherited_category_decision"] == inherited.height >= 6


def test_bad_category_decisions_stop_the_apply_with_the_cell_named(nights, tmp_path):
    state = tmp_path / "state"
    shutil.copytree(nights["state"], state)
    report = nights["folder"] / "r3.xlsx"
    whole = nights["whole"]
    before = StateStore(state).generation_names()
    # an unknown category, next to a good one that must not be applied alone
    cells = _fill(report, tmp_path / "unknown.xlsx",
                  {(LEVEL_CATEGORY, whole["source_category"], None): "Beverages > Teaa",
                   (LEVEL_PAIR, nights["pair"]["source_category"], nights["pair"]["target_category"]): "ACCEPT"})
    cell = cells[(LEVEL_CATEGORY, whole["source_category"], None)]
    with pytest.raises(InputError, match=rf"'{CATEGORY_SHEET}'!{cell}: 'Beverages > Teaa' is not a target category"
                                         r" \(did you mean 'Beverages > Tea'\?\)"):
        apply_review(tmp_path / "unknown.xlsx", state, tmp_path / "final.csv")
    # a category row edited after export: its source category changed
    wb = load_workbook(tmp_path / "unknown.xlsx")
    ws = wb[CATEGORY_SHEET]
    ws[cell] = "ACCEPT"
    ws.cell(ws[cell].row, 2).value = "Snacks & Branded Foods"
    wb.save(tmp_path / "edited.xlsx")
    with pytest.raises(InputError, match=rf"'{CATEGORY_SHEET}'!{cell}: level, source_category or target_category "
                                         "of this row was edited"):
        apply_review(tmp_path / "edited.xlsx", state, tmp_path / "final.csv")
    assert StateStore(state).generation_names() == before and not (tmp_path / "final.csv").exists()

