"""The first page of a review workbook (issue 37 item 8) on real Instacart products onto their
department > aisle taxonomy: it says which sheets' ``decision`` column to fill and the exact
``taxmig review apply`` command, naming the run's own workbook and state folder -- and that
command, run as printed on the reviewed workbook, reads it back; a run without a state folder
says how to get one; the nightly report says the same; the flags chart lies whole on one printed
page; ``make demo`` echoes the command its workbook's first page prints. Crosswalk's first page
(item 9) is tested in tests/test_crosswalk.py."""

from __future__ import annotations

import math
import re
import shlex
import subprocess
from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner
from openpyxl import load_workbook

from migrate.cli import main
from migrate.core.report import GLANCE, GUIDE, review_command
from migrate.core.sheets import ACCEPT
from migrate.mapping.settings import MigrationSettings
from migrate.mapping.workbook import CATEGORY_SHEET, CHART_PAGE_CM, LINE_HEIGHT, write_workbook
from migrate.nightly.reconcile import migrate_into_state, reconcile
from tests.conftest import ROOT, data_file

DEPARTMENTS = ("snacks", "frozen", "beverages", "breakfast")
EMU_PER_CM = 360_000
PT_PER_CM = 72 / 2.54


@pytest.fixture(scope="module")
def instacart(tmp_path_factory) -> dict[str, Path]:
    """300 Instacart products of four departments (the source carries the department, so the
    workbook has a Category decisions sheet) and the taxonomy of their aisles."""
    folder = tmp_path_factory.mktemp("first_page")
    frame = (pl.read_csv(data_file("instacart", "products.csv"))
             .join(pl.read_csv(data_file("instacart", "aisles.csv")), on="aisle_id")
             .join(pl.read_csv(data_file("instacart", "departments.csv")), on="department_id")
             .filter(pl.col("department").is_in(DEPARTMENTS)).sample(n=300, seed=5))
    frame.select(pl.col("product_id").cast(pl.String).alias("id"), pl.col("product_name").alias("product"),
                 "department").write_csv(folder / "source.csv")
    paths = sorted({f"{d} > {a}" for d, a in zip(frame["department"], frame["aisle"])})
    (folder / "aisles.txt").write_text("\n".join(paths) + "\n", encoding="utf-8")
    return {"folder": folder, "source": folder / "source.csv", "taxonomy": folder / "aisles.txt"}


def _settings(data: dict[str, Path], source: Path | None = None) -> MigrationSettings:
    return MigrationSettings(source=source or data["source"], target_taxonomy=data["taxonomy"],
                             source_category="department", progress=False)


@pytest.fixture(scope="module")
def migrated(instacart, migrator):
    """``taxmig migrate ... -o mapping.xlsx --state state``, as ``make demo`` runs it."""
    out, state = instacart["folder"] / "mapping.xlsx", instacart["folder"] / "state"
    result, _ = migrate_into_state(_settings(instacart), state, out, migrator=migrator)
    return {"result": result, "out": out, "state": state, "folder": instacart["folder"]}


def summary_rows(path: Path) -> list[tuple[str, object]]:
    """The Summary sheet's (label, value) rows below its Item/Value header, labels as written."""
    ws = load_workbook(path, read_only=True)["Summary"]
    return [(r[0], r[1]) for r in ws.iter_rows(min_row=3, max_col=2, values_only=True) if r[0] is not None]


def guide(rows: list[tuple[str, object]]) -> dict[str, object]:
    """The GUIDE block's steps (indented labels stripped)."""
    labels = [label for label, _ in rows]
    start = labels.index(GUIDE) + 1
    block = {}
    for label, value in rows[start:]:
        if not label.startswith("  "):
            break
        block[label.strip()] = value
    return block


def test_the_first_page_says_what_to_fill_and_the_command_it_prints_reads_the_workbook_back(migrated):
    out, state, folder = migrated["out"], migrated["state"], migrated["folder"]
    rows = summary_rows(out)
    labels = [label for label, _ in rows]
    # At a glance, then at once what to do with the file: on the first printed page
    glance_end = next(i for i in range(labels.index(GLANCE) + 1, len(labels)) if not labels[i].startswith("  "))
    assert labels[glance_end] == GUIDE and labels.index(GUIDE) < 20
    steps = guide(rows)
    assert list(steps) == ["1. Fill the 'decision' column", "2. Choose", "3. Save", "4. Read it back",
                           "5. What that writes"]
    assert steps["1. Fill the 'decision' column"].startswith("In Category decisions, where one row decides a whole "
                                                             "source category")
    asked = migrated["result"].questions.height
    assert f"in Review (one flagged product per row; the first {asked}, numbered in 'question'" in \
        steps["1. Fill the 'decision' column"]
    assert steps["2. Choose"].startswith(f"{ACCEPT} keeps target_category")
    command = (f"taxmig review apply {out} --state {state} -o {folder / 'mapping_final.csv'} "
               f"--next {folder / 'mapping_round1.xlsx'}")
    assert steps["4. Read it back"] == command == review_command(str(out), str(state), next_round=True)
    assert str(out) in steps["3. Save"]
    assert steps["5. What that writes"].startswith(f"{folder / 'mapping_final.csv'}: every product's final category")

    # the reviewer does what it says: a decision in each named sheet's 'decision' column, saved in place
    wb = load_workbook(out)
    categories, review = wb[CATEGORY_SHEET], wb["Review"]
    head = {c.value: c.column for c in categories[1]}
    first_category = categories.cell(2, head["source_category"]).value
    categories.cell(2, head["decision"]).value = ACCEPT  # a whole source category
    head = {c.value: c.column for c in review[1]}
    assert review.cell(2, head["question"]).value  # the first row is the first question
    answered = review.cell(2, head["source_id"]).value
    review.cell(2, head["decision"]).value = review.cell(2, head["alt1_category"]).value
    wb.save(out)
    run = CliRunner().invoke(main, shlex.split(steps["4. Read it back"])[1:])
    assert run.exit_code == 0, run.output
    final = pl.read_csv(folder / "mapping_final.csv", infer_schema=False)
    assert final.height == migrated["result"].facts.mapped
    assert final.filter(pl.col("product_id") == answered)["final_source"].item() == "reviewer"
    assert (final.filter(pl.col("final_source") == "category_decision")["product_id"].len()
            == migrated["result"].mapping.filter((pl.col("source_category") == first_category)
                                                 & (pl.col("source_id") != answered)).height)
    # the next round's workbook has the same first page, naming its own path and the state folder
    round1, round2 = folder / "mapping_round1.xlsx", folder / "mapping_round2.xlsx"
    steps = guide(summary_rows(round1))
    assert list(steps) == ["1. Fill the 'decision' column", "2. Choose", "3. Save", "4. Read it back",
                           "5. What that writes"]
    command = (f"taxmig review apply {round1} --state {state} -o {folder / 'mapping_round1_final.csv'} "
               f"--next {round2}")
    assert steps["4. Read it back"] == command == review_command(str(round1), str(state), next_round=True)
    assert str(round1) in steps["3. Save"]
    assert steps["5. What that writes"].startswith(f"{folder / 'mapping_round1_final.csv'}: every product's final")
    assert not any(placeholder in " ".join(map(str, steps.values()))
                   for placeholder in ("THIS.xlsx", "STATE", "FINAL.csv", "NEXT.xlsx"))

    # and its command, run as printed on the reviewed round, reads it back and writes round 2
    wb = load_workbook(round1)
    review = wb["Review"]
    head = {c.value: c.column for c in review[1]}
    answered = review.cell(2, head["source_id"]).value
    review.cell(2, head["decision"]).value = ACCEPT
    wb.save(round1)
    run = CliRunner().invoke(main, shlex.split(steps["4. Read it back"])[1:])
    assert run.exit_code == 0, run.output
    final = pl.read_csv(folder / "mapping_round1_final.csv", infer_schema=False)
    assert final.height == migrated["result"].facts.mapped
    assert final.filter(pl.col("product_id") == answered)["final_source"].item() == "reviewer"
    assert guide(summary_rows(round2))["4. Read it back"] == review_command(str(round2), str(state), next_round=True)


def test_without_a_state_folder_the_first_page_says_how_to_get_one(migrated, tmp_path):
    result = migrated["result"]
    plain = replace(result, facts=replace(result.facts, output=None, state=None))  # taxmig migrate without --state
    write_workbook(plain, tmp_path / "plain.xlsx")
    steps = guide(summary_rows(tmp_path / "plain.xlsx"))
    assert list(steps) == ["1. Fill the 'decision' column", "2. Choose", "3. Read it back"]
    assert "this run started none: run the same taxmig migrate again with --state DIR added" in steps["3. Read it back"]


def test_the_flags_chart_lies_whole_on_one_printed_page(migrated):
    """Each chart under the Summary starts on a page after a row break and ends before the page
    does: its rows have explicit heights, and the rows above it on its page plus its own height
    stay within :data:`CHART_PAGE_CM` (landscape A4 less the margins and the repeated title row)."""
    ws = load_workbook(migrated["out"])["Summary"]
    breaks = sorted(b.id for b in ws.row_breaks.brk)
    assert breaks and breaks[0] == 2 + len(summary_rows(migrated["out"]))  # the charts start after the last row
    assert ws.page_margins.top == ws.page_margins.bottom == 0.5
    charts = ws._charts
    assert len(charts) == 2
    flags_title = charts[1].title.tx.rich.p[0].r[0].t
    assert flags_title == "Flagged rows per source category"
    for chart in charts:
        top = chart.anchor._from.row + 1  # 1-based
        height = chart.anchor.ext.height / EMU_PER_CM
        page_top = max(b for b in breaks if b < top) + 1
        span = math.ceil(height / (LINE_HEIGHT / PT_PER_CM))
        assert all(ws.row_dimensions[r].height == LINE_HEIGHT for r in range(page_top, top + span))
        assert not [b for b in breaks if top <= b < top + span - 1]  # no break inside the chart
        above = (top - page_top) * LINE_HEIGHT / PT_PER_CM
        assert above + height <= CHART_PAGE_CM


def test_the_nightly_report_says_what_to_do_and_the_command_reads_it_back(instacart, migrator, tmp_path):
    state, report = tmp_path / "night_state", tmp_path / "reports" / "night1.xlsx"
    night = reconcile(instacart["source"], state, report, init_settings=_settings(instacart), migrator=migrator,
                      progress=False)
    rows = summary_rows(report)
    assert rows[0] == (GLANCE, None)
    steps = guide(rows)
    assert "in Review (one product per row, those that need a person because of tonight)" in \
        steps["1. Fill the 'decision' column"]
    final = tmp_path / "reports" / "night1_final.csv"
    assert steps["4. Read it back"] == f"taxmig review apply {report} --state {state} -o {final}"
    wb = load_workbook(report)
    head = {c.value: c.column for c in wb["Review"][1]}
    wb["Review"].cell(2, head["decision"]).value = ACCEPT
    wb.save(report)
    run = CliRunner().invoke(main, shlex.split(steps["4. Read it back"])[1:])
    assert run.exit_code == 0, run.output
    assert pl.read_csv(final).height == night.monitoring["counts"]["products"]


def test_make_demo_echoes_the_command_its_first_page_prints():
    """``make demo`` ends with the first page's command (taxmig from the demo's venv)."""
    plan = subprocess.run(["make", "-n", "demo"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    demo = re.search(r"-o (\S+\.xlsx) --overwrite --state (\S+)", plan)
    echoed = [line for line in plan.splitlines() if "review apply" in line]
    assert len(echoed) == 1 and demo is not None
    expected = review_command(demo[1], demo[2], next_round=True)  # the demo maps onto a taxonomy: --next
    assert re.fullmatch(r'echo "\s*(.*)"', echoed[0].strip())[1] == f".venv/bin/{expected}"
    assert GUIDE in plan and "'decision'" in plan
