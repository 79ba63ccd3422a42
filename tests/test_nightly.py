"""The review round trip and the nightly job on real BigBasket rows with the real model: three
simulated nights (adds, removals, text edits, a renamed target category), a reviewed workbook
applied between nights, crashes at every commit stage and a real kill followed by a clean
re-run, two runs at once, and bad workbooks that must change nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner
from openpyxl import load_workbook

from migrate.cli import main
from migrate.errors import InputError, OutputExistsError
from migrate.mapping.settings import MigrationSettings
from migrate.nightly.export import FINAL_COLUMNS
from migrate.nightly.lock import LockHeldError, RunLock
from migrate.nightly.reconcile import EXIT_OK, EXIT_REVIEW, reconcile
from migrate.nightly.review import apply_review
from migrate.nightly.state import StateStore
from tests.conftest import ROOT

SUBCATS = ["Skin Care", "Fresh Vegetables", "Biscuits & Cookies", "Chocolates & Candies", "Hair Care",
           "Tea", "Dairy", "Snacks & Namkeen"]
RENAMED_FROM = "Foodgrains, Oil & Masala > Dals & Pulses"
COLUMNS = ["index", "product", "category", "sub_category", "brand"]


@pytest.fixture(scope="module")
def data(bigbasket, tmp_path_factory):
    """A live catalog of 117 products and a labelled target catalog of 360 others (same 9 subcategories)."""
    frame = (bigbasket.filter(pl.col("product").is_not_null() & pl.col("brand").is_not_null())
             .filter(pl.col("sub_category").is_in([*SUBCATS, "Dals & Pulses"])).select(COLUMNS)
             .unique(subset="product", keep="first", maintain_order=True))
    per_cat = frame.with_columns(pl.int_range(pl.len()).over("sub_category").alias("n"))
    live = per_cat.filter(pl.col("n") < 13).drop("n").head(120)
    target = per_cat.filter((pl.col("n") >= 20) & (pl.col("n") < 60)).drop("n")
    extra = per_cat.filter((pl.col("n") >= 13) & (pl.col("n") < 20)).drop("n")
    folder = tmp_path_factory.mktemp("nightly-data")
    target.write_csv(folder / "target.csv")
    renamed = target.with_columns(pl.when(pl.col("sub_category") == "Dals & Pulses").then(pl.lit("Lentils & Pulses"))
                                  .otherwise(pl.col("sub_category")).alias("sub_category"))
    renamed.write_csv(folder / "target_renamed.csv")
    return {"live": live, "extra": extra, "folder": folder}


def _settings(folder: Path, catalog: Path, target: str = "target.csv") -> MigrationSettings:
    return MigrationSettings(source=catalog, target_catalog=folder / target, target_category="category,sub_category",
                             source_category="category,sub_category", progress=False)


def _decide(workbook: Path, out: Path, decisions: dict[str, str], sheet: str = "Review", note: str = "checked") -> None:
    """Fill the decision cells of the given product ids, as a reviewer would."""
    wb = load_workbook(workbook)
    ws = wb[sheet]
    header = [c.value for c in ws[1]]
    sid, dec, nte = (header.index(c) + 1 for c in ("source_id", "decision", "reviewer_note"))
    found = set()
    for r in range(2, ws.max_row + 1):
        pid = ws.cell(r, sid).value
        if pid in decisions:
            ws.cell(r, dec).value = decisions[pid]
            ws.cell(r, nte).value = note
            found.add(pid)
    assert found == set(decisions), f"rows not in sheet {sheet}: {set(decisions) - found}"
    wb.save(out)


def _generations(state: Path) -> list[str]:
    return StateStore(state).generation_names()


@pytest.fixture(scope="module")
def three_nights(data, migrator, tmp_path_factory):
    """Night 1 (init) -> review applied -> night 2 (changes, renamed target category) -> night 3 (no change)."""
    folder = tmp_path_factory.mktemp("nights")
    state = folder / "state"
    live = data["live"]
    n1 = folder / "night1.csv"
    live.write_csv(n1)
    out = {"folder": folder, "state": state}
    out["night1"] = reconcile(n1, state, folder / "r1.xlsx", init_settings=_settings(data["folder"], n1),
                              migrator=migrator, progress=False)
    products = StateStore.open(state).load().products
    flagged = products.filter(pl.col("needs_review")).sort("confidence")["product_id"].to_list()
    other_target = next(c for c in products["target_category"].unique().sort() if c != RENAMED_FROM)
    # a reviewer accepts one flagged row, moves one to another category, says one needs a new
    # category, and moves one into "Dals & Pulses" (which the target renames on night 2)
    accept, override, newcat, carry = flagged[:4]
    decisions = {accept: "ACCEPT", override: other_target, newcat: "NEW CATEGORY NEEDED", carry: RENAMED_FROM}
    _decide(folder / "r1.xlsx", folder / "r1_reviewed.xlsx", decisions)
    out["apply"] = apply_review(folder / "r1_reviewed.xlsx", state, folder / "final1.csv", reviewer="priya")
    out["decided"] = {"accept": accept, "override": override, "override_to": other_target, "new": newcat,
                      "carry": carry}
    out["after_apply"] = StateStore.open(state).load().products

    # night 2: remove 2, add 2, a material edit of the overridden product, a minor edit of the
    # accepted one, and the target renames "Dals & Pulses" -> "Lentils & Pulses"
    removed = [p for p in live["index"].to_list() if p not in decisions][:2]
    added = data["extra"].head(2)
    n2 = live.filter(~pl.col("index").is_in(removed))
    n2 = pl.concat([n2, added])
    accepted_text = n2.filter(pl.col("index") == accept)["product"][0]
    n2 = n2.with_columns(
        pl.when(pl.col("index") == override).then(pl.lit("Surf Excel Matic Liquid Detergent - Front Load"))
        .when(pl.col("index") == accept).then(pl.lit(accepted_text + " - Pack of 2"))
        .otherwise(pl.col("product")).alias("product"))
    n2_path = folder / "night2.csv"
    n2.write_csv(n2_path)
    out["removed"], out["added"] = removed, added["index"].to_list()
    out["night2"] = reconcile(n2_path, state, folder / "r2.xlsx", migrator=migrator, progress=False,
                              overrides={"target_catalog": data["folder"] / "target_renamed.csv",
                                         "target_category": "category,sub_category"})
    out["state2"] = StateStore.open(state).load()
    out["night3"] = reconcile(n2_path, state, folder / "r3.xlsx", migrator=migrator, progress=False)
    out["state3"] = StateStore.open(state).load()
    return out


def test_first_night_creates_the_state_and_a_report(three_nights, data):
    n1 = three_nights["night1"]
    assert n1.exit_code in (EXIT_OK, EXIT_REVIEW)
    assert n1.monitoring["counts"]["products"] == data["live"].height == 117 and n1.monitoring["first_run"]
    report = json.loads((three_nights["folder"] / "r1.json").read_text())
    assert report["counts"]["needs_review"] == n1.monitoring["counts"]["needs_review"]
    wb = load_workbook(three_nights["folder"] / "r1.xlsx", read_only=True)
    assert {"Summary", "Review", "Changes", "Category counts", "Drift", "Target changes", "Rejects"} <= set(wb.sheetnames)
    summary = [(r[0], r[1]) for r in wb["Summary"].iter_rows(min_row=3, values_only=True)]
    assert summary[0] == ("At a glance", None)  # the first lines say what tonight needs
    glance = dict(summary[1:9])
    assert glance["  Rows to review tonight (Review sheet)"] == n1.monitoring["counts"]["in_report_for_review"]
    assert glance["  New / removed / changed text tonight"] == "117 / 0 / 0"
    assert glance["  Exit code"].startswith(str(n1.exit_code))
    wb.close()
    history = StateStore(three_nights["state"]).history()
    assert history[0]["outcome"] == "ok" and history[0]["run_id"] == n1.run_id


def test_review_apply_records_who_when_and_what(three_nights):
    apply = three_nights["apply"]
    d = three_nights["decided"]
    assert apply.counts["accept"] + apply.counts["override"] + apply.counts["new_category"] == 4
    products = three_nights["after_apply"]
    row = {r["product_id"]: r for r in products.iter_rows(named=True)}
    assert row[d["override"]]["final_category"] == d["override_to"] and row[d["override"]]["final_source"] == "reviewer"
    assert row[d["accept"]]["final_category"] == row[d["accept"]]["target_category"]
    assert row[d["new"]]["final_category"] == "" and row[d["new"]]["final_source"] == "new_category"
    for pid in (d["accept"], d["override"], d["new"]):
        assert row[pid]["decided_by"] == "priya" and row[pid]["decided_at"] and not row[pid]["needs_review"]
    final = pl.read_csv(three_nights["folder"] / "final1.csv", infer_schema=False)
    assert final.height == 117
    assert final.filter(pl.col("product_id") == d["override"])["final_category"][0] == d["override_to"]


def test_second_night_reports_every_change_and_keeps_decisions(three_nights):
    n2 = three_nights["night2"]
    c = n2.monitoring["counts"]
    assert (c["new"], c["removed"], c["text_changed"]) == (2, 2, 2)
    changes = pl.read_excel(three_nights["folder"] / "r2.xlsx", sheet_name="Changes")
    by = {k: set(changes.filter(pl.col("change") == k)["product_id"].cast(pl.String)) for k in
          ("new", "removed", "text_changed", "decision_stale")}
    d = three_nights["decided"]
    assert by["new"] == set(three_nights["added"]) and by["removed"] == set(three_nights["removed"])
    assert by["text_changed"] == {d["override"], d["accept"]}
    # the material edit (another product altogether) makes the decision stale; a pack size does not
    assert by["decision_stale"] == {d["override"]}
    products = {r["product_id"]: r for r in three_nights["state2"].products.iter_rows(named=True)}
    stale = products[d["override"]]
    assert "DECISION_STALE" in stale["flags"] and stale["needs_review"]
    assert stale["final_category"] == d["override_to"] and stale["decision"] == d["override_to"]  # still visible
    assert products[d["accept"]]["flags"] == "" and products[d["accept"]]["final_source"] == "reviewer"
    # only new and changed texts were embedded: 2 new products, 2 edited ones, the renamed category's
    # label, and the old and new raw texts of the 2 decided products whose text changed
    assert 5 <= n2.monitoring["embedding"]["encoded"] <= 2 + 2 + 1 + 4


def test_second_night_detects_the_renamed_target_category(three_nights):
    n2 = three_nights["night2"]
    t = n2.monitoring["target_changes"]
    assert t["renamed"] == {RENAMED_FROM: "Foodgrains, Oil & Masala > Lentils & Pulses"}
    assert not t["removed"] and not t["added"]
    products = three_nights["state2"].products
    assert RENAMED_FROM not in set(products["final_category"])
    carried = products.filter(pl.col("product_id") == three_nights["decided"]["carry"]).row(0, named=True)
    assert carried["final_category"] == "Foodgrains, Oil & Masala > Lentils & Pulses"
    assert carried["final_source"] == "reviewer" and not carried["needs_review"]
    assert carried["decision"] == carried["final_category"] and "carried by taxmig" in carried["decision_note"]
    log = three_nights["state2"].decisions.filter(pl.col("product_id") == three_nights["decided"]["carry"])
    assert log["decision"].to_list() == [RENAMED_FROM, carried["final_category"]]
    assert log["decided_by"].to_list() == ["priya", "priya"]
    moved = products.filter(pl.col("source_category") == RENAMED_FROM)
    assert moved.height and (moved["target_category"] == "Foodgrains, Oil & Masala > Lentils & Pulses").mean() > 0.8
    report = pl.read_excel(three_nights["folder"] / "r2.xlsx", sheet_name="Target changes")
    assert report.row(0)[:2] == ("renamed", RENAMED_FROM)
    changed = pl.read_excel(three_nights["folder"] / "r2.xlsx", sheet_name="Changes") \
        .filter(pl.col("change") == "assignment_changed")
    assert set(changed["reason"]) <= {"target changed", "text changed"} and changed.height >= moved.height - 1


def test_third_night_without_changes_embeds_nothing_and_changes_nothing(three_nights):
    n3 = three_nights["night3"]
    c = n3.monitoring["counts"]
    assert (c["new"], c["removed"], c["text_changed"], c["assignment_changed"]) == (0, 0, 0, 0)
    assert n3.monitoring["embedding"]["encoded"] == 0
    # the labelled target's classifier and calibration: fitted on night 1, fitted again on night 2
    # (the target catalog renamed a category), read back on night 3 (nothing changed)
    from migrate.mapping.report import TARGET_SIDE_FITTED, TARGET_SIDE_READ

    sides = [three_nights[n].monitoring["target_side"] for n in ("night1", "night2", "night3")]
    assert sides == [TARGET_SIDE_FITTED, TARGET_SIDE_FITTED, TARGET_SIDE_READ]
    assert (three_nights["state"] / "target_side.json").is_file() and (three_nights["state"] / "target_side.npz").is_file()
    assert not (three_nights["state"] / "target_side.pkl").exists()
    two, three = three_nights["state2"].products, three_nights["state3"].products
    assert two.select("product_id", "final_category", "decision").equals(three.select("product_id", "final_category", "decision"))
    # nothing new needs a person tonight (exit 0), though an open queue from earlier nights remains
    assert c["in_report_for_review"] == 0 and c["needs_review"] > 0 and n3.exit_code == EXIT_OK
    assert pl.read_excel(three_nights["folder"] / "r3.xlsx", sheet_name="Review").height == 0
    runs = [h for h in StateStore(three_nights["state"]).history() if h["outcome"] == "ok"]
    assert [h["kind"] for h in runs] == ["reconcile", "review", "reconcile", "reconcile"]


def test_a_night_with_nothing_new_never_loads_the_model(three_nights, state_copy, tmp_path):
    """Everything in the embedding cache and the target side in the state: the model is not loaded;
    a night with one new product loads it (and encodes that product only)."""
    from migrate.mapping.pipeline import Migrator
    from migrate.mapping.report import TARGET_SIDE_READ
    from migrate.nightly.reconcile import settings_for_night

    n2_path = three_nights["folder"] / "night2.csv"
    settings = settings_for_night(StateStore.open(state_copy).load().meta["settings"], n2_path, {}, progress=False)
    lazy = Migrator.from_settings(settings, lazy=True)
    quiet = reconcile(n2_path, state_copy, tmp_path / "r4.xlsx", migrator=lazy, progress=False)
    assert not lazy.encoder.model.loaded
    assert quiet.monitoring["embedding"]["encoded"] == 0 and quiet.monitoring["target_side"] == TARGET_SIDE_READ
    assert quiet.monitoring["counts"]["assignment_changed"] == 0

    n5 = pl.concat([pl.read_csv(n2_path, infer_schema=False),
                    pl.DataFrame({"index": ["999001"], "product": ["Cadbury Dairy Milk Silk Bubbly Chocolate Bar"],
                                  "category": ["Snacks & Branded Foods"], "sub_category": ["Chocolates & Candies"],
                                  "brand": ["Cadbury"]})])
    n5.write_csv(tmp_path / "night5.csv")
    busy = reconcile(tmp_path / "night5.csv", state_copy, tmp_path / "r5.xlsx", migrator=lazy, progress=False)
    assert lazy.encoder.model.loaded
    assert busy.monitoring["counts"]["new"] == 1 and busy.monitoring["embedding"]["encoded"] >= 1


def test_review_all_lists_the_whole_open_queue(three_nights, migrator, tmp_path):
    import shutil

    state = tmp_path / "state"
    shutil.copytree(three_nights["state"], state)
    night = reconcile(three_nights["folder"] / "night2.csv", state, tmp_path / "all.xlsx", migrator=migrator,
                      progress=False, review_scope="all")
    review = pl.read_excel(tmp_path / "all.xlsx", sheet_name="Review")
    assert review.height == night.monitoring["counts"]["needs_review"] > 0 and night.exit_code == EXIT_REVIEW
    assert review["confidence"].is_sorted()


def test_reviewed_nightly_report_goes_back_through_review_apply(three_nights, tmp_path):
    """The stale row is re-decided from the night-2 report; the flag clears and the log keeps both."""
    d = three_nights["decided"]
    import shutil

    state = tmp_path / "state"
    shutil.copytree(three_nights["state"], state)
    _decide(three_nights["folder"] / "r2.xlsx", tmp_path / "r2_reviewed.xlsx", {d["override"]: "ACCEPT"})
    apply_review(tmp_path / "r2_reviewed.xlsx", state, tmp_path / "final.parquet", reviewer="sam")
    gen = StateStore(state).load()
    row = gen.products.filter(pl.col("product_id") == d["override"]).row(0, named=True)
    assert row["flags"] == "" and row["decided_by"] == "sam"
    assert row["final_category"] == row["target_category"]
    assert gen.decisions.filter(pl.col("product_id") == d["override"]).height == 2
    assert pl.read_parquet(tmp_path / "final.parquet").height == gen.products.height


def test_nightly_mapping_and_export_hand_over_the_final_mapping(three_nights, migrator, tmp_path):
    """`reconcile --mapping` writes tonight's final mapping beside the report; `taxmig export` writes
    the same from the state at any time; neither overwrites a file unasked."""
    import shutil

    state = tmp_path / "state"
    shutil.copytree(three_nights["state"], state)
    d = three_nights["decided"]
    night = reconcile(three_nights["folder"] / "night2.csv", state, tmp_path / "n.xlsx", migrator=migrator,
                      progress=False, mapping=tmp_path / "feed" / "final.parquet")
    feed = pl.read_parquet(tmp_path / "feed" / "final.parquet")
    gen = StateStore(state).load()
    assert feed.columns == FINAL_COLUMNS
    assert feed.height == gen.products.height == night.monitoring["counts"]["products"]
    assert tmp_path / "feed" / "final.parquet" in night.written
    row = feed.filter(pl.col("product_id") == d["new"]).row(0, named=True)
    assert row["final_source"] == "new_category" and row["final_category"] == "" and row["decided_by"] == "priya"
    model_rows = feed.filter(pl.col("final_source") == "model")
    assert (model_rows["final_category"] == model_rows["target_category"]).all() and model_rows.height > 0
    # export: the same mapping from the state, as CSV; an existing file needs --overwrite
    out = tmp_path / "final.csv"
    result = CliRunner().invoke(main, ["export", "--state", str(state), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert f"{feed.height} products" in result.output and len(result.output.strip().splitlines()) == 1  # one line
    exported = pl.read_csv(out, infer_schema=False)
    assert exported["product_id"].to_list() == feed["product_id"].to_list()
    assert exported["final_category"].fill_null("").to_list() == feed["final_category"].to_list()
    again = CliRunner().invoke(main, ["export", "--state", str(state), "-o", str(out)])
    assert again.exit_code == 1 and "overwrite" in again.output
    bad = CliRunner().invoke(main, ["export", "--state", str(state), "-o", str(tmp_path / "final.txt")])
    assert bad.exit_code == 1 and "unknown output format" in bad.output
    # a night refuses an existing mapping file before any work: the state is unchanged
    before = _generations(state)
    with pytest.raises(OutputExistsError):
        reconcile(three_nights["folder"] / "night2.csv", state, tmp_path / "n2.xlsx", migrator=migrator,
                  progress=False, mapping=out)
    assert _generations(state) == before and not (tmp_path / "n2.xlsx").exists()


SCORE_COLUMNS = ["product_id", "target_category", "confidence", "margin", "score", "alt1_category", "alt1_score",
                 "alt2_category", "alt2_score", "model_flags"]


def _night_with(path: Path, tmp_path: Path, name: str, edit_id: str | None = None) -> Path:
    """Night 2's catalog plus one new product (and one edited name when ``edit_id`` is given)."""
    frame = pl.concat([pl.read_csv(path, infer_schema=False),
                       pl.DataFrame({"index": ["999002"], "product": ["Britannia Good Day Cashew Cookies"],
                                     "category": ["Snacks & Branded Foods"], "sub_category": ["Biscuits & Cookies"],
                                     "brand": ["Britannia"]})])
    if edit_id is not None:
        frame = frame.with_columns(pl.when(pl.col("index") == edit_id).then(pl.lit("Tata Tea Gold Leaf Tea"))
                                   .otherwise(pl.col("product")).alias("product"))
    out = tmp_path / name
    frame.write_csv(out)
    return out


def test_a_night_scores_only_new_and_changed_products_and_maps_as_if_it_scored_all(three_nights, migrator,
                                                                                     tmp_path):
    """Onto a labelled target, kept scores are exact: the night that scores only the new and edited
    product writes the same mapping, to the last digit, as --rescore-all."""
    import shutil

    live = pl.read_csv(three_nights["folder"] / "night2.csv", infer_schema=False)
    edited = live["index"][5]
    catalog = _night_with(three_nights["folder"] / "night2.csv", tmp_path, "n.csv", edit_id=edited)
    copies = {}
    for name, rescore in (("kept", False), ("all", True)):
        state = tmp_path / f"state-{name}"
        shutil.copytree(three_nights["state"], state)
        copies[name] = reconcile(catalog, state, tmp_path / f"{name}.xlsx", migrator=migrator, progress=False,
                                 rescore_all=rescore)
        copies[name + "-products"] = StateStore.open(state).load().products.sort("product_id")
    assert copies["kept"].monitoring["scores_kept"] == live.height - 1  # all but the edited one
    assert copies["all"].monitoring["scores_kept"] == 0
    assert copies["kept-products"].select(SCORE_COLUMNS).equals(copies["all-products"].select(SCORE_COLUMNS))
    assert copies["kept"].monitoring["counts"]["new"] == 1 and copies["kept"].monitoring["counts"]["text_changed"] == 1


def test_onto_a_taxonomy_untouched_products_keep_their_suggestions(data, migrator, tmp_path, monkeypatch):
    """Self-training reads the whole catalog, so a new product nudges every score: a night keeps the
    untouched products' suggestions (they do not go back to a reviewer), self-trains the new one among
    a context (here 40 of the 61 products) and --rescore-all scores all."""
    import shutil

    import migrate.mapping.pipeline as pipeline

    monkeypatch.setattr(pipeline, "SELF_TRAINING_CONTEXT", 40)

    live = data["live"].head(60)
    n1 = tmp_path / "n1.csv"
    live.write_csv(n1)
    state = tmp_path / "state"
    taxonomy = tmp_path / "taxonomy.txt"  # the sample taxonomy's two branches these products belong to
    taxonomy.write_text("".join(line for line in (ROOT / "sample_catalogs" / "google_taxonomy_subset.txt")
                                .read_text().splitlines(keepends=True)
                                if line.split(" - ", 1)[-1].startswith(("Food, Beverages", "Health & Beauty"))))
    settings = MigrationSettings(source=n1, target_taxonomy=taxonomy, source_category="category,sub_category",
                                 progress=False)
    reconcile(n1, state, tmp_path / "r1.xlsx", init_settings=settings, migrator=migrator, progress=False)
    first = StateStore.open(state).load().products
    n2 = _night_with(n1, tmp_path, "n2.csv")
    shutil.copytree(state, tmp_path / "state-all")
    night = reconcile(n2, state, tmp_path / "r2.xlsx", migrator=migrator, progress=False)
    second = StateStore.open(state).load().products
    kept = second.join(first.select("product_id", *SCORE_COLUMNS[1:]), on="product_id", suffix="_before")
    assert kept.height == live.height and night.monitoring["scores_kept"] == live.height
    for column in SCORE_COLUMNS[1:]:
        assert kept[column].equals(kept[f"{column}_before"], check_names=False), column
    assert night.monitoring["counts"]["assignment_changed"] == 0 and night.monitoring["counts"]["new"] == 1
    added = second.filter(pl.col("product_id") == "999002").row(0, named=True)
    assert added["target_category"].startswith("Food, Beverages & Tobacco") and 0 < added["confidence"] <= 1
    rescored = reconcile(n2, tmp_path / "state-all", tmp_path / "r3.xlsx", migrator=migrator, progress=False,
                         rescore_all=True)
    assert rescored.monitoring["scores_kept"] == 0
    # review apply scores nothing: the next night still starts from the kept scores
    _decide(tmp_path / "r2.xlsx", tmp_path / "r2_reviewed.xlsx", {"999002": "ACCEPT"})
    apply_review(tmp_path / "r2_reviewed.xlsx", state, tmp_path / "final.csv", reviewer="ana")
    third = reconcile(n2, state, tmp_path / "r4.xlsx", migrator=migrator, progress=False)
    assert third.monitoring["scores_kept"] == live.height + 1


# --- bad workbooks: clear errors, state unchanged ---------------------------------------------

@pytest.fixture
def state_copy(three_nights, tmp_path):
    import shutil

    state = tmp_path / "state"
    shutil.copytree(three_nights["state"], state)
    return state


def _bad_apply(path: Path, state: Path, tmp_path: Path, match: str) -> str:
    """The refusal's message (with its hint); nothing applied, nothing written."""
    before = _generations(state)
    with pytest.raises(InputError, match=match) as err:
        apply_review(path, state, tmp_path / "final.csv")
    assert _generations(state) == before and not (tmp_path / "final.csv").exists()
    return str(err.value)


def test_bad_workbooks_are_refused_with_the_cell_and_nothing_is_applied(three_nights, state_copy, tmp_path):
    report = three_nights["folder"] / "r1.xlsx"  # an older report: its run is still a run of the state
    review = pl.read_excel(report, sheet_name="Review", infer_schema_length=0)
    assert review.height >= 2
    first, second = review["source_id"][0], review["source_id"][1]
    # an unknown category (with a suggestion), and a good row beside it that must not be applied alone
    _decide(report, tmp_path / "unknown.xlsx", {first: "Food Items > Snackz", second: "ACCEPT"})
    _bad_apply(tmp_path / "unknown.xlsx", state_copy, tmp_path, r"Review!V2: 'Food Items > Snackz' is not a target")
    # an edited product id
    wb = load_workbook(report)
    wb["Review"]["B2"] = "999999"
    wb["Review"]["V2"] = "ACCEPT"
    wb.save(tmp_path / "edited.xlsx")
    _bad_apply(tmp_path / "edited.xlsx", state_copy, tmp_path, "row_key no longer matches")
    # the decision column deleted
    wb = load_workbook(report)
    wb["Review"].delete_cols(22)
    wb.save(tmp_path / "nocol.xlsx")
    _bad_apply(tmp_path / "nocol.xlsx", state_copy, tmp_path, "decision missing")
    # two different decisions for one product
    wb = load_workbook(report)
    wb["Review"]["V2"] = "ACCEPT"
    wb["Review"]["V3"] = "NEW CATEGORY NEEDED"
    for col in "BCX":  # row 3 becomes a copy of row 2's product (id, text, row key)
        wb["Review"][f"{col}3"] = wb["Review"][f"{col}2"].value
    wb.save(tmp_path / "twice.xlsx")
    _bad_apply(tmp_path / "twice.xlsx", state_copy, tmp_path, "also has the decision")
    # not a taxmig workbook
    from openpyxl import Workbook

    foreign = Workbook()
    foreign.active.title = "Mapping"
    foreign.active.append(["source_id", "decision"])
    foreign.active.append(["1", "ACCEPT"])
    foreign.save(tmp_path / "foreign.xlsx")
    _bad_apply(tmp_path / "foreign.xlsx", state_copy, tmp_path, "not a workbook written by taxmig")
    # a product removed from the catalog since the workbook was exported (night 1 -> night 2)
    removed = three_nights["removed"][0]
    night1 = three_nights["folder"] / "r1.xlsx"
    if removed in set(pl.read_excel(night1, sheet_name="Review", infer_schema_length=0)["source_id"]):
        _decide(night1, tmp_path / "gone.xlsx", {removed: "ACCEPT"})
        _bad_apply(tmp_path / "gone.xlsx", state_copy, tmp_path, "no longer in the catalog")


def test_workbook_from_another_state_is_refused(three_nights, data, migrator, tmp_path):
    other = tmp_path / "other"
    n1 = tmp_path / "n.csv"
    data["live"].head(40).write_csv(n1)
    reconcile(n1, other, tmp_path / "o.xlsx", init_settings=_settings(data["folder"], n1), migrator=migrator,
              progress=False)
    review = pl.read_excel(tmp_path / "o.xlsx", sheet_name="Review", infer_schema_length=0)
    _decide(tmp_path / "o.xlsx", tmp_path / "o_rev.xlsx", {review["source_id"][0]: "ACCEPT"})
    message = _bad_apply(tmp_path / "o_rev.xlsx", three_nights["state"], tmp_path, "not a run of this state")
    assert "row_key" not in message and "fix those cells" not in message  # the one problem, no cells to fix


# --- crashes, kills and concurrency ------------------------------------------------------------

def _cli(*args, env=None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "migrate.cli", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=600, **kw)


def _rerun(catalog: Path, state: Path, output: Path):
    """The same command again after a crash or a kill, in this process: what the tests check is that
    it finishes from what the killed process left, not how a process starts."""
    return CliRunner().invoke(main, ["reconcile", str(catalog), "--state", str(state), "-o", str(output), "-q"])


@pytest.fixture
def small_state(data, migrator, traced_bundled_model, tmp_path):
    n1 = tmp_path / "n1.csv"
    data["live"].head(30).write_csv(n1)
    state = tmp_path / "state"
    reconcile(n1, state, tmp_path / "r1.xlsx", init_settings=_settings(data["folder"], n1), migrator=migrator,
              progress=False)
    n2 = tmp_path / "n2.csv"
    pl.concat([data["live"].head(30).tail(28), data["extra"].head(3)]).write_csv(n2)
    return {"state": state, "n2": n2, "tmp": tmp_path}


@pytest.mark.parametrize("stage", ["generation-files", "before-current", "before-publish"])
def test_a_crash_at_any_commit_stage_leaves_a_good_state_and_a_rerun_finishes(small_state, stage):
    state, n2, tmp = small_state["state"], small_state["n2"], small_state["tmp"]
    before = StateStore(state).current_name()
    crashed = _cli("reconcile", n2, "--state", state, "-o", tmp / "r2.xlsx", "-q", env={"TAXMIG_FAULT_AT": stage})
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert not (tmp / "r2.xlsx").exists()
    store = StateStore(state)
    if stage == "before-publish":
        assert store.current_name() != before  # committed, not yet published
    else:
        assert store.current_name() == before
    store.load()  # readable
    rerun = _rerun(n2, state, tmp / "r2.xlsx")
    assert rerun.exit_code in (EXIT_OK, EXIT_REVIEW), rerun.output
    assert "stale lock" in rerun.stderr
    assert (tmp / "r2.xlsx").exists() and (tmp / "r2.json").exists()
    report = json.loads((tmp / "r2.json").read_text())
    assert (report["counts"]["new"], report["counts"]["removed"]) == (3, 2)
    runs = [h for h in store.history() if h.get("kind") == "reconcile" and h["outcome"] in ("ok", "recovered")]
    assert len(runs) == 2 and len({h["run_id"] for h in runs}) == 2  # night 1 and exactly one night 2
    if stage == "before-publish":
        assert "finished the interrupted run" in rerun.stdout


def test_a_real_kill_mid_run_leaves_the_previous_state(small_state):
    state, n2, tmp = small_state["state"], small_state["n2"], small_state["tmp"]
    before = StateStore(state).current_name()
    proc = subprocess.Popen([sys.executable, "-m", "migrate.cli", "reconcile", str(n2), "--state", str(state),
                             "-o", str(tmp / "r2.xlsx")], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:  # kill while it works: after the model loaded, before anything is committed
        if "loaded" in line:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert StateStore(state).current_name() == before
    rerun = _rerun(n2, state, tmp / "r2.xlsx")
    assert rerun.exit_code in (EXIT_OK, EXIT_REVIEW), rerun.output
    assert StateStore(state).current_name() != before


def test_two_runs_at_once_the_second_is_refused_with_exit_3(small_state):
    state, n2, tmp = small_state["state"], small_state["n2"], small_state["tmp"]
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from migrate.nightly.lock import RunLock\n"
        f"with RunLock({str(state)!r}, command='reconcile other'):\n"
        "    print('held', flush=True); time.sleep(60)")], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        second = _cli("reconcile", n2, "--state", state, "-o", tmp / "r2.xlsx", "-q")
        assert second.returncode == 3
        assert "another run holds the state lock" in second.stderr and "reconcile other" in second.stderr
        with pytest.raises(LockHeldError):
            RunLock(state, command="test").acquire()
    finally:
        holder.kill()
        holder.wait()
    assert not (tmp / "r2.xlsx").exists()
    with RunLock(state, command="test") as lock:  # a killed holder leaves a stale record, detected
        assert lock.stale is not None and lock.stale["command"] == "reconcile other"


def test_migrate_with_state_then_reconcile_and_exit_codes(data, tmp_path):
    """`migrate --state`, then a night as a real process (the exit code a scheduler sees); the
    refusals, in-process."""
    n1 = tmp_path / "n1.csv"
    data["live"].head(25).write_csv(n1)
    first = CliRunner().invoke(main, ["migrate", str(n1), "--target-catalog", str(data["folder"] / "target.csv"),
                                      "--target-category", "category,sub_category", "-o", str(tmp_path / "m.xlsx"),
                                      "--state", str(tmp_path / "st"), "-q"])
    assert first.exit_code == 0, first.output
    assert "started state" in first.stdout
    again = CliRunner().invoke(main, ["migrate", str(n1), "--target-catalog", str(data["folder"] / "target.csv"),
                                      "-o", str(tmp_path / "m2.xlsx"), "--state", str(tmp_path / "st"), "-q"])
    assert again.exit_code == 1 and "already holds a state" in again.stderr
    night = _cli("reconcile", n1, "--state", tmp_path / "st", "-o", tmp_path / "r.xlsx", "-q")
    report = json.loads((tmp_path / "r.json").read_text())
    assert night.returncode == 0 and report["counts"]["in_report_for_review"] == 0  # nothing changed
    assert report["embedding"]["encoded"] == 0  # migrate --state filled the cache
    exists = CliRunner().invoke(main, ["reconcile", str(n1), "--state", str(tmp_path / "st"), "-o",
                                       str(tmp_path / "r.xlsx"), "-q"])
    assert exists.exit_code == 1 and "already exists" in exists.stderr
    usage = CliRunner().invoke(main, ["reconcile", str(n1)])
    assert usage.exit_code == 64
    missing = CliRunner().invoke(main, ["reconcile", str(n1), "--state", str(tmp_path / "nothing"), "-o",
                                        str(tmp_path / "x.xlsx"), "-q"])
    assert missing.exit_code == 1 and "does not exist" in missing.stderr
