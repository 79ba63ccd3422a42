"""load_taxonomy on the real Google and Shopify taxonomies and on derived files."""

from __future__ import annotations

import re

import polars as pl
import pytest

from migrate.core.taxonomy import Taxonomy, load_taxonomy
from migrate.errors import InputError
from tests.conftest import SAMPLES, data_file

GOOGLE_TXT = ("google_product_taxonomy", "taxonomy-with-ids.en-US.txt")
GOOGLE_YML = ("shopify_product_taxonomy", "data", "integrations", "google", "2021-09-21", "full_names.yml")
SHOPIFY_TXT = ("shopify_product_taxonomy", "dist", "en", "categories.txt")
MADRONO = "Food, Beverages & Tobacco > Food Items > Fruits & Vegetables > Fresh & Frozen Fruits > Madroño"


@pytest.fixture(scope="module")
def google_txt() -> Taxonomy:
    return load_taxonomy(data_file(*GOOGLE_TXT))


@pytest.fixture(scope="module")
def google_yml() -> Taxonomy:
    return load_taxonomy(data_file(*GOOGLE_YML))


@pytest.fixture(scope="module")
def shopify() -> Taxonomy:
    return load_taxonomy(data_file(*SHOPIFY_TXT))


def test_google_text_format(google_txt):
    assert len(google_txt) == 5595
    assert len(google_txt.ids) == 5595
    assert google_txt.categories[0] == "Animals & Pet Supplies"
    assert google_txt.ids["Animals & Pet Supplies"] == "1"
    assert google_txt.ids["Animals & Pet Supplies > Live Animals"] == "3237"
    assert {v: k for k, v in google_txt.ids.items()}["1"] == "Animals & Pet Supplies"
    assert not any(c.startswith("#") or "Google_Product_Taxonomy_Version" in c for c in google_txt.categories)
    assert not any(re.match(r"^\d+ - ", c) for c in google_txt.categories)  # the id is not part of the path
    assert len(set(google_txt.ids.values())) == 5595
    # the expected lines of the file, computed independently
    lines = [ln for ln in data_file(*GOOGLE_TXT).read_text(encoding="utf-8").splitlines() if re.match(r"^\d+ - ", ln)]
    assert len(lines) == 5595
    assert google_txt.categories == [ln.split(" - ", 1)[1].strip() for ln in lines]


def test_google_yaml_is_the_same_taxonomy_with_clean_names(google_yml, google_txt):
    assert len(google_yml) == 5595
    assert google_yml.ids[MADRONO] == "6813"
    assert MADRONO in google_yml
    assert MADRONO not in google_txt  # the text copy has the broken "MadroГ±o"
    # same ids in both; only the nine lines with broken characters differ in their names
    assert sorted(google_yml.ids.values()) == sorted(google_txt.ids.values())
    by_id_yml = {v: k for k, v in google_yml.ids.items()}
    by_id_txt = {v: k for k, v in google_txt.ids.items()}
    differ = {i for i in by_id_yml if by_id_yml[i] != by_id_txt[i]}
    assert len(differ) == 9
    assert "6813" in differ
    assert not any("Г" in c for c in google_yml.categories)
    assert sum("Г" in c for c in google_txt.categories) == 9


def test_shopify_categories_txt(shopify):
    raw = data_file(*SHOPIFY_TXT).read_text(encoding="utf-8").splitlines()
    gid_lines = [ln for ln in raw if ln.startswith("gid://")]
    assert len(shopify) == len(gid_lines) == 10_595
    assert shopify.categories[0] == "Animals & Pet Supplies"
    assert shopify.ids["Animals & Pet Supplies"] == "gid://shopify/TaxonomyCategory/ap"
    first, path = gid_lines[-1].split(" : ", 1)
    assert shopify.ids[path.strip()] == first.strip()
    assert not any(c.startswith(("#", "gid://", "Format:")) for c in shopify.categories)
    assert max(c.count(" > ") for c in shopify.categories) + 1 == 8


def test_plain_one_path_per_line(tmp_path, google_yml):
    paths = [c for c in google_yml.categories if c.startswith("Food, Beverages & Tobacco")][:60]
    messy = [p.replace(" > ", " >  ") if i % 2 else p for i, p in enumerate(paths)]
    text = "# my taxonomy\n\n" + "\n".join(messy + messy[:5]) + "\n"  # comment, blank, repeats
    path = tmp_path / "tax.txt"
    path.write_text(text, encoding="utf-8")
    tax = load_taxonomy(path)
    assert tax.categories == paths
    assert tax.ids == {}


def test_table_with_path_column(tmp_path, google_yml):
    items = list(google_yml.ids.items())[:80]
    df = pl.DataFrame({"id": [i for _, i in items], "path": [p for p, _ in items]})
    df.write_csv(tmp_path / "tax.csv")
    tax = load_taxonomy(tmp_path / "tax.csv")
    assert tax.categories == [p for p, _ in items]
    assert tax.ids == dict(items)
    df.write_parquet(tmp_path / "tax.parquet")
    assert load_taxonomy(tmp_path / "tax.parquet").categories == tax.categories
    # a named column
    df.rename({"path": "Kategorie"}).write_csv(tmp_path / "named.csv")
    assert load_taxonomy(tmp_path / "named.csv", column="Kategorie").categories == tax.categories
    with pytest.raises(InputError, match="no category path column"):
        load_taxonomy(tmp_path / "named.csv")


def test_leaves_only_removes_every_parent(google_yml, shopify):
    for tax in (google_yml, shopify):
        leaves = tax.leaves_only()
        parents = set()
        for c in tax.categories:
            parts = c.split(" > ")
            parents.update(" > ".join(parts[:k]) for k in range(1, len(parts)))
        assert set(leaves.categories) == set(tax.categories) - parents
        assert not any(other.startswith(leaf + " > ") for leaf in leaves.categories[:200] for other in tax.categories)
        assert set(leaves.ids) == set(leaves.categories) & set(tax.ids)
    assert len(google_yml.leaves_only()) == 4719
    assert "Animals & Pet Supplies" not in google_yml.leaves_only()
    assert MADRONO in google_yml.leaves_only()
    assert len(shopify.leaves_only()) == 8516


def test_bundled_subset_is_closed_under_parents():
    tax = load_taxonomy(SAMPLES / "google_taxonomy_subset.txt")
    assert len(tax) > 1000
    assert len(tax.ids) == len(tax)
    cats = set(tax.categories)
    for c in tax.categories:
        if " > " in c:
            assert c.rsplit(" > ", 1)[0] in cats, c
    full = load_taxonomy(data_file(*GOOGLE_YML))  # the subset carries the clean names and Google's ids
    for c in tax.categories:
        assert full.ids[c] == tax.ids[c]


def test_undecodable_taxonomy_names_the_line(tmp_path, google_yml):
    lines = google_yml.categories[:30] + [MADRONO] + google_yml.categories[30:40]
    path = tmp_path / "tax.txt"
    path.write_bytes("\n".join(lines).encode("cp1252"))
    with pytest.raises(InputError) as err:
        load_taxonomy(path)
    assert err.value.row == 31
    msg = str(err.value)
    assert str(path) in msg and "line 31" in msg and "--encoding" in msg
    assert MADRONO in load_taxonomy(path, encoding="cp1252")


def test_missing_and_empty_taxonomy(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        load_taxonomy(tmp_path / "none.txt")
    (tmp_path / "comments.txt").write_text("# only a comment\n\n")
    with pytest.raises(InputError, match="lists no categories"):
        load_taxonomy(tmp_path / "comments.txt")


def test_near_duplicate_paths_are_one_category_under_the_first_spelling(tmp_path, migrator):
    real = [line.split(" - ", 1)[1] for line in (SAMPLES / "google_taxonomy_subset.txt").read_text().splitlines()
            if " - " in line and not line.startswith("#")]
    variants = [real[3].lower(), "  " + real[5].upper().replace(" > ", ">  ") + " ", real[3]]
    path = tmp_path / "taxonomy.txt"
    path.write_text("\n".join([*real, *variants]) + "\n", encoding="utf-8")
    tax = load_taxonomy(path)
    assert tax.categories == real  # nothing added: every variant joined the first spelling
    assert tax.merged == [(real[3].lower(), real[3]), (real[5].upper(), real[5])]
    fullwidth = Taxonomy.from_paths(["Food > Fruit", "ＦＯＯＤ > fruit"])
    assert fullwidth.categories == ["Food > Fruit"] and len(fullwidth.merged) == 1
    from migrate.mapping.report import TAXONOMY_MERGED
    from migrate.mapping.settings import MigrationSettings

    result = migrator.run(MigrationSettings(source=SAMPLES / "bigbasket_sample.csv", target_taxonomy=path,
                                            progress=False))
    said = result.summary_dict()[TAXONOMY_MERGED]
    assert said.startswith("2: ") and f"'{real[3].lower()}' -> '{real[3]}'" in said
    assert set(result.mapping["target_category"]) <= set(real)


def test_near_duplicates_with_different_ids_are_refused_naming_both(tmp_path):
    path = tmp_path / "taxonomy.txt"
    path.write_text("1 - Food > Fruit\n2 - food > fruit\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"'Food > Fruit' \(id 1\) and 'food > fruit' \(id 2\)"):
        load_taxonomy(path)


def test_a_product_catalog_given_as_a_taxonomy_is_refused(tmp_path):
    products = pl.read_csv(SAMPLES / "bigbasket_sample.csv", infer_schema=False)
    path = tmp_path / "products.csv"
    products.write_csv(path)
    with pytest.raises(InputError, match="looks like a product catalog") as err:
        load_taxonomy(path)
    assert "--target-catalog products.csv" in str(err.value)
    listed = tmp_path / "paths.csv"  # a real taxonomy table: each category once
    products.select(pl.format("{} > {}", "category", "sub_category").alias("path")).unique(maintain_order=True) \
        .write_csv(listed)
    assert len(load_taxonomy(listed)) == products.select("category", "sub_category").unique().height
