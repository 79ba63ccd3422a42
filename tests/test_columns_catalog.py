"""ColumnSpec.resolve and load_catalog on real BigBasket rows, with injected problems."""

from __future__ import annotations

import csv

import pytest

from migrate.core.catalog import PATH_SEPARATOR, load_catalog, normalise_path
from migrate.core.columns import ROW_ID, ColumnSpec
from migrate.core.readers import read_table
from migrate.errors import InputError
from tests.conftest import data_file

N = 40


@pytest.fixture(scope="module")
def real():
    """Header and the first N product rows of BigBasket (without the two blank trailing columns)."""
    with data_file("bigbasket", "products.csv").open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)[:9]
        rows = [next(reader)[:9] for _ in range(N)]
    return header, rows


def _write(path, header, rows):
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _col(header, name):
    return header.index(name)


# --- ColumnSpec -----------------------------------------------------------------------------------

def test_defaults_on_the_real_bigbasket_header():
    table = read_table(data_file("bigbasket", "products.csv"))
    spec = ColumnSpec.resolve(table.frame.columns, role="source", path=table.path)  # _row is ignored
    assert spec.id == "index"
    assert spec.text == ("product", "brand")
    assert spec.category == ("category", "sub_category")
    assert spec.describe() == "id=index; text=product + brand; category=category > sub_category"


def test_defaults_pick_description_on_the_description_file():
    table = read_table(data_file("bigbasket", "products_with_description_first6079.csv"))
    spec = ColumnSpec.resolve(table.columns, role="source")
    assert spec.text == ("product", "brand", "description")


def test_headers_are_matched_whatever_their_case_and_punctuation():
    """A shop's export spells the known names its own way: "Product Name", "SKU", "Sub-Category"."""
    spec = ColumnSpec.resolve(["SKU", "Product Name", "Brand Name", "Main Category", "Sub Category", "Price"],
                              role="source")
    assert spec.id == "SKU" and spec.text == ("Product Name", "Brand Name")
    assert spec.category == ("Main Category", "Sub Category")
    from migrate.core.columns import find_column
    from migrate.matching.inputs import CODE_NAMES
    assert find_column(["title", "Model No."], CODE_NAMES) == "Model No."
    assert find_column(["title", "MPN#"], CODE_NAMES) == "MPN#"
    assert find_column(["title", "modelno"], CODE_NAMES) == "modelno"


def test_no_id_column_uses_row_numbers(real):
    header, _ = real
    cols = [c for c in header if c != "index"]
    spec = ColumnSpec.resolve(cols, role="source")
    assert spec.id == ROW_ID
    assert "id=row number" in spec.describe()


def test_every_misnamed_column_is_reported_at_once_with_suggestions(real):
    header, _ = real
    with pytest.raises(InputError) as err:
        ColumnSpec.resolve(header, role="source", id="indx", text="prodct, brnd",
                           category="categry,subcategory", path="shop.csv")
    msg = str(err.value)
    assert msg.startswith("shop.csv: ")
    for wrong, right in [("indx", "index"), ("prodct", "product"), ("brnd", "brand"),
                         ("categry", "category"), ("subcategory", "sub_category")]:
        assert f"column '{wrong}' not found (did you mean '{right}'?)" in msg
    assert msg.count("not found") == 5
    assert "the columns are: index, product, category, sub_category, brand" in msg


def test_misnamed_column_without_a_near_name_gets_no_suggestion(real):
    header, _ = real
    with pytest.raises(InputError) as err:
        ColumnSpec.resolve(header, role="target", text="zzzzzz")
    assert "column 'zzzzzz' not found" in str(err.value)
    assert "did you mean" not in str(err.value)


def test_no_text_and_no_category_columns_are_both_reported(real):
    with pytest.raises(InputError) as err:
        ColumnSpec.resolve(["sku", "price"], role="target", category_required=True)
    msg = str(err.value)
    assert "no product text column" in msg and "--target-text" in msg
    assert "no category column" in msg and "--target-category" in msg


def test_path_column_is_preferred_over_level_columns():
    spec = ColumnSpec.resolve(["id", "title", "category", "sub_category", "category_path"], role="source")
    assert spec.category == ("category_path",)
    assert spec.text == ("title",)


# --- load_catalog ---------------------------------------------------------------------------------

def test_real_rows_load_with_values(real, tmp_path):
    header, rows = real
    cat = load_catalog(_write(tmp_path / "p.csv", header, rows), role="source")
    assert len(cat) == N and cat.rejects == [] and cat.n_records == N
    assert cat.ids[:3] == ["1", "2", "3"]
    assert cat.rows == list(range(2, N + 2))
    assert cat.texts[0] == "Garlic Oil - Vegetarian Capsule 500 mg | Sri Sri Ayurveda"  # brand's trailing space trimmed
    assert cat.categories[0] == "Beauty & Hygiene > Hair Care"
    assert cat.categories[1] == "Kitchen, Garden & Pets > Storage & Accessories"
    assert all(c.count(PATH_SEPARATOR) == 1 for c in cat.categories)


def test_injected_problems_become_rejects_and_every_row_is_accounted_for(real, tmp_path):
    header, rows = real
    rows = [list(r) for r in rows]
    p, b, i = _col(header, "product"), _col(header, "brand"), _col(header, "index")
    rows[4][p] = ""                      # row 6: empty product name (brand still filled in)
    rows[9][p] = rows[9][b] = "  "       # row 11: no text at all
    rows[14][i] = rows[2][i]             # row 16: duplicates the id of row 4
    rows[19][i] = ""                     # row 21: empty id
    rows[24][i] = rows[4][i]             # row 26: duplicates the id of row 6 (itself rejected)
    path = _write(tmp_path / "bad.csv", header, rows)

    cat = load_catalog(path, role="source")
    by_row = {r.row: r for r in cat.rejects}
    assert sorted(by_row) == [6, 11, 16, 21, 26]
    assert "empty" in by_row[6].reason and "product" in by_row[6].reason and by_row[6].id == "5"
    assert "empty text" in by_row[11].reason and by_row[11].id == "10"
    assert by_row[16].reason.startswith("duplicate id '3' (first at row 4)")
    assert by_row[16].id == "3"
    assert by_row[16].text.startswith(rows[14][p])
    assert "empty id in column 'index'" in by_row[21].reason
    assert by_row[26].reason.startswith("duplicate id '5' (first at row 6)")

    # count identity: every input row is in the catalog or the rejects, exactly once
    assert len(cat) + len(cat.rejects) == cat.n_records == N
    all_rows = cat.rows + [r.row for r in cat.rejects]
    assert sorted(all_rows) == list(range(2, N + 2))
    assert len(set(all_rows)) == len(all_rows)
    assert len(set(cat.ids)) == len(cat.ids)
    assert "3" in cat.ids and cat.rows[cat.ids.index("3")] == 4  # the first one stays


def test_count_identity_holds_with_read_rejects_on_the_real_description_file():
    cat = load_catalog(data_file("bigbasket", "products_with_description_first6079.csv"), role="source")
    assert cat.n_records == 6079
    assert len(cat) + len(cat.rejects) == 6079
    assert [r.id for r in cat.rejects if "malformed" in r.reason] == ["6"]
    assert len(set(cat.rows) | {r.row for r in cat.rejects}) == 6079


def test_full_bigbasket_nameless_product_is_rejected():
    cat = load_catalog(data_file("bigbasket", "products.csv"), role="source")
    assert cat.n_records == 27_555
    assert len(cat) + len(cat.rejects) == 27_555
    assert [(r.id, "product" in r.reason) for r in cat.rejects] == [("14364", True)]
    assert len(set(cat.ids)) == len(cat.ids)


def test_row_numbers_as_ids_when_there_is_no_id_column(real, tmp_path):
    header, rows = real
    keep = [c for c in header if c != "index"]
    idx = [header.index(c) for c in keep]
    path = _write(tmp_path / "noid.csv", keep, [[r[j] for j in idx] for r in rows])
    cat = load_catalog(path, role="source")
    assert cat.spec.id == ROW_ID
    assert cat.ids == [str(n) for n in range(2, N + 2)]


def test_target_role_requires_a_category(real, tmp_path):
    header, rows = real
    rows = [list(r) for r in rows]
    c, s = _col(header, "category"), _col(header, "sub_category")
    rows[7][c] = rows[7][s] = ""  # row 9
    path = _write(tmp_path / "target.csv", header, rows)

    target = load_catalog(path, role="target", category_required=True)
    assert [r.row for r in target.rejects] == [9]
    assert "no category (or an empty level) in category, sub_category" in target.rejects[0].reason
    assert target.rejects[0].id == rows[7][0]
    assert len(target) == N - 1

    source = load_catalog(path, role="source")  # a source row may lack a category
    assert len(source) == N and source.rejects == []
    assert source.categories[7] == ""


def test_category_path_from_level_columns(real, tmp_path):
    header, rows = real
    path = _write(tmp_path / "p.csv", header, rows)
    cat = load_catalog(path, role="source", category="category,sub_category,type")
    assert cat.spec.category == ("category", "sub_category", "type")
    c, s, t = _col(header, "category"), _col(header, "sub_category"), _col(header, "type")
    assert cat.categories == [f"{r[c]} > {r[s]} > {r[t]}" for r in rows]
    assert cat.categories[0] == "Beauty & Hygiene > Hair Care > Hair Oil & Serum"


def test_single_path_column_with_irregular_spacing_is_normalised(real, tmp_path):
    header, rows = real
    c, s, t = _col(header, "category"), _col(header, "sub_category"), _col(header, "type")
    messy = []
    for k, r in enumerate(rows):
        sep = [">", " >", "  >   ", ">\t", " > "][k % 5]
        messy.append([r[0], r[1], f"  {r[c]}{sep}{r[s]}  {sep}{r[t]} ".replace("& ", "&  ")])
    path = _write(tmp_path / "paths.csv", ["sku", "title", "category_path"], messy)
    cat = load_catalog(path, role="target", category_required=True)
    assert cat.spec.category == ("category_path",)
    assert cat.spec.id == "sku"
    assert cat.rejects == []
    assert cat.categories == [f"{r[c]} > {r[s]} > {r[t]}" for r in rows]
    assert normalise_path(" Food >Snacks  >  Chips>") == "Food > Snacks > Chips"


def test_load_catalog_reports_misnamed_columns_with_the_file(real, tmp_path):
    header, rows = real
    path = _write(tmp_path / "p.csv", header, rows)
    with pytest.raises(InputError) as err:
        load_catalog(path, role="source", text="prodcut,brand_nam")
    msg = str(err.value)
    assert msg.startswith(f"{path}: ")
    assert "'prodcut' not found (did you mean 'product'?)" in msg
    assert "'brand_nam' not found (did you mean 'brand'?)" in msg


def test_target_row_with_an_empty_category_level_is_rejected_not_shortened(real, tmp_path):
    header, rows = real
    rows = [list(r) for r in rows]
    rows[3][_col(header, "category")] = ""  # row 5: sub_category alone would be a wrong top-level path
    path = _write(tmp_path / "target.csv", header, rows)
    target = load_catalog(path, role="target", category_required=True)
    assert [r.row for r in target.rejects] == [5]
    assert all(" > " in c for c in target.categories)


def test_texts_ids_and_paths_fold_every_whitespace_character_as_python_does(tmp_path):
    """The catalog is built column-wise in polars, whose regex ``\\s`` is not Python's (U+001C-U+001F);
    stored content hashes and cached vectors depend on the texts being exactly what they were."""
    import re
    import sys

    spaces = [chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF and chr(c).isspace()]
    assert len(spaces) == 29 and "\x1c" in spaces and "\u3000" in spaces
    rows = [["id", "name", "brand", "top", "sub"]]
    for i, ch in enumerate(spaces):
        rows.append([f"{ch}p{i}{ch}", f"{ch}Dark{ch}{ch}Chocolate{ch}", f"{ch}", f"{ch}Food{ch}>{ch}",
                     f"{ch}>{ch}Snacks{ch}{ch}Bars{ch}"])
    rows.append(["q1", "Tea", "Tata\u200b", "Drinks", ">  >Tea "])  # a zero-width space is not whitespace
    path = tmp_path / "spaces.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)
    cat = load_catalog(path, role="target", id="id", text=["name", "brand"], category=["top", "sub"],
                       category_required=True)
    assert cat.ids == [f"p{i}" for i in range(len(spaces))] + ["q1"]
    assert cat.texts == ["Dark Chocolate"] * len(spaces) + ["Tea | Tata\u200b"]
    assert cat.categories == ["Food > Snacks Bars"] * len(spaces) + ["Drinks > Tea"]
    assert all(re.sub(r"\s+", " ", t).strip() == t for t in cat.texts)
