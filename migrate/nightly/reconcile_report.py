"""The nightly report: a workbook for people and a JSON summary for monitoring.

Sheets: Summary, Category decisions (every live product per source category and source -> target
pair: :mod:`migrate.mapping.category_decisions`), Review (every product that needs a person, with the
``decision`` drop-down and hidden row keys, so the file can go straight back through ``taxmig
review apply``), Changes,
Category counts (per final category and their change), Drift (score distributions and the
Kolmogorov-Smirnov statistic), Target changes, Rejects, Chart data (the tables of the Summary's two
charts: live products per confidence band, open review rows per source category), and the hidden
Categories list that feeds the drop-down.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from openpyxl import Workbook

from migrate.core.rejects import REJECT_COLUMNS
from migrate.core.sheets import (decision_choices, fit_print_width, save_workbook, wrap_columns, write_categories_sheet,
                            write_summary, write_table)
from migrate.mapping.workbook import (CATEGORY_SHEET, REVIEW_WRAPPED, add_summary_charts, write_category_sheet,
                              write_review_table)
from migrate.nightly.changes import CHANGE_COLUMNS

REVIEW_COLUMNS = ["source_row", "source_id", "source_text", "source_category", "target_category", "target_id",
                  "confidence", "margin", "needs_review", "flags", "model_flags", "alt1_category", "alt1_score",
                  "alt2_category", "alt2_score", "score", "current_decision", "decided_by", "decided_at",
                  "decision_note", "decision_text"]
"""The Review sheet: ``target_category`` is the model's suggestion (what ACCEPT takes);
``current_decision`` the decision in force, if any."""


@dataclass
class NightlyReport:
    """Everything one reconcile run reports."""

    run_id: str
    summary: list[tuple[str, Any]]
    review: pl.DataFrame
    changes: pl.DataFrame
    categories: pl.DataFrame
    drift: pl.DataFrame
    target_changes: pl.DataFrame
    rejects: pl.DataFrame
    choices: list[str]
    monitoring: dict[str, Any]
    category_table: pl.DataFrame | None = None
    """The Category decisions sheet over every live product (the model's suggestions)."""
    products: pl.DataFrame | None = None
    """Every live product (confidence, needs_review, source category): the Summary's charts."""


REVIEW_SCOPES = ("new", "all")


def newly_needing_review(products: pl.DataFrame, previous: pl.DataFrame | None) -> pl.Series:
    """Per product: needs a person *because of tonight* -- new, text changed, or flags changed."""
    if previous is None:
        return products["needs_review"]
    prev = previous.select("product_id", pl.col("content_hash").alias("_h"), pl.col("flags").alias("_f"),
                           pl.col("needs_review").alias("_r"))
    joined = products.select("product_id", "content_hash", "flags", "needs_review").join(
        prev, on="product_id", how="left", maintain_order="left")
    fresh = (pl.col("_h").is_null() | (pl.col("_h") != pl.col("content_hash")) | ~pl.col("_r").fill_null(False)
             | (pl.col("_f").fill_null("") != pl.col("flags").fill_null("")))
    return joined.select((pl.col("needs_review") & fresh).alias("new"))["new"]


def review_rows(products: pl.DataFrame, previous: pl.DataFrame | None = None, scope: str = "all") -> pl.DataFrame:
    """Products that need a person (``scope="new"``: only those that do because of tonight),
    lowest confidence first, in the Review sheet's columns."""
    keep = newly_needing_review(products, previous) if scope == "new" else products["needs_review"]
    return (products.filter(keep)
            .sort("confidence", nulls_last=True)
            .rename({"product_id": "source_id", "decision": "current_decision"})
            .select(REVIEW_COLUMNS))


def write_report_workbook(report: NightlyReport, path: Path) -> None:
    wb = Workbook()
    wb.remove(wb.active)
    write_summary(wb.create_sheet("Summary"), report.summary)
    wb["Summary"].cell(1, 1).value = "taxmig nightly reconciliation"
    fit_print_width(wb["Summary"])
    if report.category_table is not None and report.category_table.height:
        write_category_sheet(wb.create_sheet(CATEGORY_SHEET), report.category_table, run_id=report.run_id,
                             n_choices=len(report.choices))
    write_review_table(wb.create_sheet("Review"), report.review, REVIEW_COLUMNS, run_id=report.run_id,
                       n_choices=len(report.choices))
    wrap_columns(wb["Review"], report.review, REVIEW_WRAPPED)
    write_table(wb.create_sheet("Changes"), report.changes, CHANGE_COLUMNS, freeze="C2")
    write_table(wb.create_sheet("Category counts"), report.categories, ["category", "previous", "count", "change"])
    write_table(wb.create_sheet("Drift"), report.drift, ["metric"])
    write_table(wb.create_sheet("Target changes"), report.target_changes, ["change", "category", "new_name", "basis"])
    write_table(wb.create_sheet("Rejects"), report.rejects, REJECT_COLUMNS)
    if report.products is not None and report.products.height:  # the Summary's charts; their tables
        add_summary_charts(wb["Summary"], wb.create_sheet("Chart data"), report.products)
    write_categories_sheet(wb.create_sheet("Categories"), report.choices)  # feeds the drop-down
    save_workbook(wb, path)


def write_report_json(report: NightlyReport, path: Path) -> None:
    path.write_text(json.dumps(report.monitoring, indent=2, default=str), encoding="utf-8")


def choices_for(categories: list[str]) -> list[str]:
    return decision_choices(categories)
