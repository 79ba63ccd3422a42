"""The Excel writer: sheets, decision drop-down, review order, formula-injection safety."""

from __future__ import annotations

import random
import zipfile
from pathlib import Path

import polars as pl
import pytest
from openpyxl import Workbook, load_workbook

from migrate.core.cells import escape_csv_text, is_formula_like, set_text
from migrate.core.hashing import row_key
from migrate.core.report import RunFacts
from migrate.core.rejects import REJECT_COLUMNS
from migrate.core.sheets import NEW_CATEGORY
from migrate.errors import TaxmigError
from migrate.mapping.result import MAPPING_COLUMNS, MigrationResult
from migrate.mapping.workbook import write_workbook
from tests.conftest import data_file

CATEGORIES = [
    "Food, Beverages & Tobacco > Food Items > Cooking & Baking Ingredients > Sugar",
    "Health & Beauty > Personal Care > Hair Care > Hair Oil",
    "Home & Garden > Kitchen & Dining > Food & Beverage Carriers > Water Bottles",
    "Food, Beverages & Tobacco > Beverages > Tea & Infusions",
    "=EVIL()+Category",
]
INJECTED = {2: '=HYPERLINK("http://x","click")', 3: "-5 kg Sugar", 4: "@SUM(A1)", 5: "=1+1"}
N_ROWS = 50


def _mapping(products: pl.DataFrame) -> pl.DataFrame:
    """Mapping rows from real products, with faked model columns."""
    rnd = random.Random(7)
    texts = products["product"].to_list()
    for i, text in INJECTED.items():
        texts[i] = text
    rows = []
    for i, text in enumerate(texts):
        confidence = rnd.random()
        flagged = confidence < 0.4
        rows.append({
            "source_row": i + 2, "source_id": products["index"][i], "source_text": text,
            "source_category": f"{products['category'][i]} > {products['sub_category'][i]}",
            "target_category": CATEGORIES[i % len(CATEGORIES)], "target_id": str(100 + i % len(CATEGORIES)),
            "confidence": confidence, "margin": rnd.random() / 4, "needs_review": flagged,
            "flags": "LOW_CONFIDENCE" if flagged else "",
            "alt1_category": CATEGORIES[(i + 1) % len(CATEGORIES)], "alt1_score": rnd.random(),
            "alt2_category": None if i % 9 == 0 else CATEGORIES[(i + 2) % len(CATEGORIES)],
            "alt2_score": float("nan") if i % 9 == 0 else rnd.random(),
            "score": rnd.random(), "nearest_target": CATEGORIES[(i + 3) % len(CATEGORIES)],
            "nearest_similarity": rnd.random(),
        })
    return pl.DataFrame(rows).select(MAPPING_COLUMNS)


@pytest.fixture(scope="module")
def result() -> MigrationResult:
    BIGBASKET = data_file("bigbasket", "products.csv")
    products = pl.read_csv(BIGBASKET, n_rows=N_ROWS, infer_schema_length=0)
    mapping = _mapping(products)
    crosswalk = (mapping.group_by("source_category", "target_category")
                 .agg(pl.len().alias("count"), pl.col("confidence").mean().alias("mean_confidence"))
                 .with_columns((pl.col("count") / mapping.height).alias("share"))
                 .select("source_category", "target_category", "count", "share", "mean_confidence"))
    summary = [("rows mapped", mapping.height), ("mean confidence", 0.5), ("calibrated", False),
               ("thresholds", {"min_confidence": 0.4, "min_margin": 0.05}), ("model", None),
               ("Scoring", {"k": 20}), ("Run seconds", 1.5)]
    return MigrationResult(mapping=mapping, rejects=pl.DataFrame(), crosswalk=crosswalk,
                           summary=summary, target_categories=CATEGORIES, facts=RunFacts("migrate"))


@pytest.fixture(scope="module")
def xlsx(result: MigrationResult, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("wb") / "mapping.xlsx"
    write_workbook(result, path)
    return path


@pytest.fixture(scope="module")
def wb(xlsx: Path) -> Workbook:
    return load_workbook(xlsx)


def _header(ws) -> list:
    return [c.value for c in ws[1]]


def test_sheet_order_and_states(wb: Workbook) -> None:
    assert wb.sheetnames == ["Summary", "Category decisions", "Review", "Mapping", "Crosswalk", "Rejects", "Parameters",
                             "Categories"]
    assert wb["Categories"].sheet_state == "hidden"
    assert all(wb[n].sheet_state == "visible" for n in wb.sheetnames[:-1])


def test_summary_rows(wb: Workbook) -> None:
    ws = wb["Summary"]
    assert ws["A1"].value == "taxmig mapping summary" and ws["A1"].font.bold
    rows = [(r[0].value, r[1].value) for r in ws.iter_rows(min_row=2)]
    assert rows[0] == ("Item", "Value")
    assert ("rows mapped", N_ROWS) in rows and ("calibrated", False) in rows
    assert ("  min_confidence", 0.4) in rows and ("thresholds", None) in rows


def test_parameters_have_their_own_sheet_and_the_summary_has_charts(wb: Workbook, result: MigrationResult) -> None:
    summary = [r[0].value for r in wb["Summary"].iter_rows(min_row=3)]
    parameters = [(r[0].value, r[1].value) for r in wb["Parameters"].iter_rows(min_row=3)]
    assert "Scoring" not in summary and "Run seconds" not in summary and "rows mapped" in summary
    assert ("Scoring", None) in parameters and ("  k", 20) in parameters and ("Run seconds", 1.5) in parameters
    bands, per_category = wb["Summary"]._charts
    assert "confidence band" in bands.title.tx.rich.p[0].r[0].t
    # the charts read small tables on the Parameters sheet: rows per band add up to every row
    values = {r[0].value: r[1].value for r in wb["Parameters"].iter_rows() if r[0].value}
    assert sum(values[f"{i / 10:.1f}-{(i + 1) / 10:.1f}"] for i in range(10)) == N_ROWS
    flagged = result.mapping.filter(pl.col("needs_review")).group_by("source_category").len()
    top = flagged.sort("len", descending=True).row(0)
    assert values[top[0]] == top[1]


def test_mapping_rows_and_header(wb: Workbook, result: MigrationResult) -> None:
    ws = wb["Mapping"]
    assert _header(ws) == MAPPING_COLUMNS + ["decision", "reviewer_note", "row_key"]
    assert ws.column_dimensions["T"].hidden  # row_key: what review apply checks edits against
    keys = [c.value for c in ws["T"][1:]]
    assert keys == [row_key(result.run_id, i, t) for i, t in zip(result.mapping["source_id"], result.mapping["source_text"])]
    assert ws.max_row == N_ROWS + 1
    assert [c.value for c in ws["A"][1:]] == result.mapping["source_row"].to_list()
    assert ws.freeze_panes == "D2" and ws.auto_filter.ref == f"A1:S{N_ROWS + 1}"
    assert all(c.font.bold for c in ws[1])
    confidence = ws.cell(2, MAPPING_COLUMNS.index("confidence") + 1)
    assert confidence.number_format == "0.000" and isinstance(confidence.value, float)
    assert isinstance(ws.cell(2, MAPPING_COLUMNS.index("needs_review") + 1).value, bool)
    assert ws.cell(2, MAPPING_COLUMNS.index("alt2_score") + 1).value is None  # NaN -> empty


def test_decision_dropdown_points_at_categories(wb: Workbook) -> None:
    (dv,) = wb["Mapping"].data_validations.dataValidation
    assert dv.type == "list" and dv.allow_blank and dv.errorStyle == "stop"
    assert dv.formula1 == f"Categories!$A$1:$A${len(CATEGORIES) + 2}"
    assert str(dv.sqref) == f"R2:R{N_ROWS + 1}"
    assert "ACCEPT" in dv.prompt and NEW_CATEGORY in dv.prompt
    listed = [c.value for c in wb["Categories"]["A"]]
    assert listed == ["ACCEPT", NEW_CATEGORY, *CATEGORIES]
    (review_dv,) = wb["Review"].data_validations.dataValidation  # reviewers may decide in either sheet
    assert review_dv.formula1 == dv.formula1


def test_injected_texts_stay_strings(wb: Workbook, xlsx: Path) -> None:
    ws = wb["Mapping"]
    for i, text in INJECTED.items():
        cell = ws.cell(i + 2, MAPPING_COLUMNS.index("source_text") + 1)
        assert (cell.value, cell.data_type, cell.quotePrefix) == (text, "s", True)
    assert wb["Categories"]["A7"].value == "=EVIL()+Category"
    assert wb["Categories"]["A7"].data_type == "s"
    with zipfile.ZipFile(xlsx) as z:
        sheets = [n for n in z.namelist() if n.startswith("xl/worksheets/sheet")]
        assert sheets and not any(b"<f>" in z.read(n) for n in sheets)


def test_review_is_flagged_rows_grouped_by_source_category(wb: Workbook, result: MigrationResult) -> None:
    ws = wb["Review"]
    # what a reviewer reads, then the decision, then the rest; the print area ends at the note
    first = ["source_text", "source_category", "target_category", "confidence", "flags", "alt1_category",
             "alt2_category", "decision", "reviewer_note"]
    header = _header(ws)
    assert header[:9] == first and header[-1] == "row_key"
    assert sorted(header[9:-1]) == sorted(c for c in MAPPING_COLUMNS if c not in first)
    assert ws.freeze_panes == "B2" and ws.print_area == f"'Review'!$A$1:$I${ws.max_row}"
    (dv,) = ws.data_validations.dataValidation
    assert str(dv.sqref).startswith("H2:H")
    col = {c: header.index(c) for c in ("confidence", "source_category", "target_category", "needs_review")}
    rows = list(ws.iter_rows(min_row=2, values_only=True))
    assert len(rows) == int(result.mapping["needs_review"].sum()) > 0
    assert all(r[col["needs_review"]] is True for r in rows)
    sid, text = header.index("source_id"), header.index("source_text")
    assert all(r[-1] == row_key(result.run_id, r[sid], r[text]) for r in rows)
    # one block per source category, the blocks with the most flagged rows first
    groups = [r[col["source_category"]] for r in rows]
    blocks = [g for i, g in enumerate(groups) if i == 0 or g != groups[i - 1]]
    assert len(blocks) == len(set(groups))
    sizes = [groups.count(g) for g in blocks]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] > 1
    # inside a block: rows that leave the category's most common target first, then by confidence
    majority = {g: frame.group_by("target_category").len().sort(["len", "target_category"],
                                                                  descending=[True, False])["target_category"][0]
                for (g,), frame in result.mapping.group_by("source_category")}
    for g in blocks:
        block = [r for r in rows if r[col["source_category"]] == g]
        agrees = [r[col["target_category"]] == majority[g] for r in block]
        assert agrees == sorted(agrees)
        for flag in (False, True):
            conf = [r[col["confidence"]] for r, a in zip(block, agrees) if a == flag]
            assert conf == sorted(conf)


def test_confidence_colour_scale(wb: Workbook) -> None:
    for name, letter in (("Mapping", "G"), ("Review", "D")):
        ranges = {str(cf.sqref): [r.type for r in cf.rules] for cf in wb[name].conditional_formatting}
        scale = [ref for ref, types in ranges.items() if "colorScale" in types]
        assert len(scale) == 1 and scale[0].startswith(f"{letter}2:{letter}"), ranges


def test_empty_rejects_still_have_header(wb: Workbook) -> None:
    ws = wb["Rejects"]
    assert _header(ws) == REJECT_COLUMNS and ws.max_row == 1


def test_crosswalk(wb: Workbook, result: MigrationResult) -> None:
    ws = wb["Crosswalk"]
    assert _header(ws) == list(result.crosswalk.columns) and ws.max_row == result.crosswalk.height + 1
    assert ws.cell(2, 4).number_format == "0.000" and ws.freeze_panes == "A2"


def test_unwritable_path_is_a_taxmig_error(result: MigrationResult, tmp_path: Path) -> None:
    with pytest.raises(TaxmigError, match="cannot write"):
        write_workbook(result, tmp_path / "missing-folder" / "out.xlsx")


@pytest.mark.parametrize("text, expected", [
    ("=1+1", True), ("+44 20", True), ("-5 kg Sugar", True), ("@SUM(A1)", True),
    ("\tx", True), ("\rx", True), ("Sugar 5 kg", False), ("", False), (" =1", False),
])
def test_is_formula_like(text: str, expected: bool) -> None:
    assert is_formula_like(text) is expected
    assert escape_csv_text(text) == ("'" + text if expected else text)


def test_set_text_keeps_values_and_drops_illegal_characters() -> None:
    ws = Workbook().active
    for col, value in enumerate([1.5, True, None, "plain", "bad\x00\x07char"], start=1):
        set_text(ws.cell(1, col), value)
    assert [c.value for c in ws[1]] == [1.5, True, None, "plain", "badchar"]
    assert ws["D1"].quotePrefix is False


def test_category_decisions_sheet(wb: Workbook, result: MigrationResult) -> None:
    """One bold category row per source category, then its pairs; a drop-down on decision; hidden
    row keys; printable up to the note."""
    ws = wb["Category decisions"]
    header = _header(ws)
    assert header == ["level", "source_category", "target_category", "products", "share", "top_targets",
                      "mean_confidence", "flagged", "flags", "decision", "reviewer_note", "row_key"]
    rows = [dict(zip(header, r)) for r in ws.iter_rows(min_row=2, values_only=True)]
    categories = [r for r in rows if r["level"] == "category"]
    assert len(categories) == result.mapping["source_category"].n_unique()
    assert sum(r["products"] for r in categories) == result.mapping.height
    counts = result.mapping.group_by("source_category").agg(pl.col("needs_review").sum())
    assert {r["source_category"]: r["flagged"] for r in categories} == dict(counts.iter_rows())
    flagged = [r["flagged"] for r in categories]
    assert flagged == sorted(flagged, reverse=True)  # the most flagged source categories first
    assert ws["A2"].font.bold and ws.column_dimensions["L"].hidden
    assert not any(ws.cell(r, 1).font.bold for r, row in enumerate(rows, start=2) if row["level"] != "category")
    long_rows = [r for r, row in enumerate(rows, start=2) if len(row["target_category"] or "") > 34]
    assert long_rows  # Google paths: a wrapped path, the row's other cells aligned to its top
    for r in long_rows:
        assert ws.cell(r, 3).alignment.wrap_text and ws.cell(r, 3).alignment.vertical == "top"
        assert ws.cell(r, 4).alignment.vertical == "top" and not ws.cell(r, 4).alignment.wrap_text
        assert ws.row_dimensions[r].height >= 30
    assert ws.cell(2, 5).number_format == "0.000"
    (dv,) = ws.data_validations.dataValidation
    assert str(dv.sqref) == f"J2:J{len(rows) + 1}" and dv.formula1.startswith("Categories!")
    assert ws.print_area.endswith(f"$K${len(rows) + 1}")
