"""Decisions per source category: "everything in ``Dairy > Cheese`` goes to ``Cheese``, except these".

The workbook's **Category decisions** sheet (:func:`category_table`) has one ``category`` row per
source category -- its products, the share of each of its top target categories, mean confidence,
flags -- followed by one ``pair`` row per (source category, suggested target category) of the
Crosswalk. A reviewer's ``decision`` on a row:

- ``category`` row: ``ACCEPT`` sends every product of the source category to the row's
  ``target_category`` (its most common suggestion); another category sends them all there;
  ``NEW CATEGORY NEEDED`` says none fits.
- ``pair`` row: the same, for the products of the source category whose suggestion is the pair's
  target category (``ACCEPT`` confirms the suggestion for all of them).

Precedence, most specific first: a product's own row decision, then a pair decision, then a
category decision (:func:`covering`). A later category decision replaces an earlier one, never a
row decision. The nightly job keeps them (:func:`migrate.nightly.decisions.resolve_products`): a product
that joins a decided source category later inherits the decision, flagged ``CATEGORY_DECISION``
(informational: the row does not wait for a person), unless its own evidence disagrees strongly --
the model suggests another category and would have left that suggestion unflagged -- then it is
also flagged ``CATEGORY_DISAGREES`` and waits for a person (the category decision stays final
until one decides).
"""

from __future__ import annotations

from typing import Any

import polars as pl

from migrate.core.hashing import short_key

LEVEL_CATEGORY, LEVEL_PAIR = "category", "pair"
LEVELS = (LEVEL_CATEGORY, LEVEL_PAIR)
SCOPE_ROW = "row"
"""The ``scope`` of a decision-log row a person made on the product itself (null in older logs)."""
CATEGORY_DECISION = "CATEGORY_DECISION"
CATEGORY_DISAGREES = "CATEGORY_DISAGREES"
INFORMATIONAL_FLAGS = frozenset({CATEGORY_DECISION})
"""Flags that say what happened without sending the row to a person."""
SOURCE_CATEGORY_DECISION = "category_decision"
"""``final_source`` of a product whose final category a category or pair decision set."""
TOP_TARGETS = 3  # target categories listed per source category in ``top_targets``
TOP_FLAGS = 3
NO_SOURCE_CATEGORY = ""

CATEGORY_COLUMNS = ["level", "source_category", "target_category", "products", "share", "top_targets",
                    "mean_confidence", "flagged", "flags"]
"""The Category decisions sheet, before ``decision``, ``reviewer_note`` and the hidden key."""

CATEGORY_DECISION_SCHEMA: dict[str, pl.DataType] = {
    "level": pl.String, "source_category": pl.String, "target_category": pl.String, "decision": pl.String,
    "kind": pl.String, "decided_by": pl.String, "decided_at": pl.String, "note": pl.String,
    "products_covered": pl.Int64, "workbook": pl.String, "workbook_run": pl.String, "sheet_row": pl.String,
    "applied_run": pl.String,
}
"""One category or pair decision of a person, as the state keeps it (oldest first, never rewritten).
``target_category``: for a pair, the suggestion it applies to; for a category row, the suggestion
the reviewer saw (what ACCEPT took). ``products_covered``: products it decided when applied."""


def category_key(run_id: str, level: str, source_category: str, target_category: str) -> str:
    """The hidden key of a Category decisions row: an edited source or target cell no longer matches.

    >>> category_key("r", "pair", "Dairy", "Cheese") != category_key("r", "pair", "Dairy", "Butter")
    True
    """
    return short_key(run_id, level, source_category, target_category)


def decision_id(level: str, source_category: str, target_category: str) -> str:
    """How a decision-log row names the category decision that set it (``scope``)."""
    if level == LEVEL_PAIR:
        return f"pair: {source_category} -> {target_category}"
    return f"category: {source_category}"


def category_table(mapping: pl.DataFrame) -> pl.DataFrame:
    """The Category decisions sheet (:data:`CATEGORY_COLUMNS`): per source category (the most
    flagged first, then the least confident), its ``category`` row, then its ``pair`` rows (most
    products first). Empty when the mapping has no source categories."""
    schema = {"level": pl.String, "source_category": pl.String, "target_category": pl.String,
              "products": pl.Int64, "share": pl.Float64, "top_targets": pl.String, "mean_confidence": pl.Float64,
              "flagged": pl.Int64, "flags": pl.String}
    if not mapping.height or "source_category" not in mapping.columns:
        return pl.DataFrame(schema=schema)
    frame = mapping.with_columns(pl.col("source_category").fill_null(NO_SOURCE_CATEGORY),
                                 pl.col("target_category").fill_null(""), pl.col("flags").fill_null(""))
    if not frame["source_category"].str.len_chars().sum():
        return pl.DataFrame(schema=schema)
    pairs = (frame.group_by("source_category", "target_category")
             .agg(pl.len().alias("products"), pl.col("confidence").mean().alias("mean_confidence"),
                  pl.col("needs_review").sum().alias("flagged"), pl.col("flags"))
             .with_columns((pl.col("products") / pl.col("products").sum().over("source_category")).alias("share"))
             .sort(["source_category", "products", "target_category"], descending=[False, True, False]))
    groups = (frame.group_by("source_category")
              .agg(pl.len().alias("products"), pl.col("confidence").mean().alias("mean_confidence"),
                   pl.col("needs_review").sum().alias("flagged"), pl.col("flags"))
              .sort(["flagged", "mean_confidence", "source_category"], descending=[True, False, False]))
    by_source: dict[str, list[dict[str, Any]]] = {}
    for row in pairs.iter_rows(named=True):
        by_source.setdefault(row["source_category"], []).append(row)
    rows: list[dict[str, Any]] = []
    for group in groups.iter_rows(named=True):
        members = by_source[group["source_category"]]
        top = members[0]
        rows.append({"level": LEVEL_CATEGORY, "source_category": group["source_category"],
                     "target_category": top["target_category"], "products": group["products"],
                     "share": top["share"],
                     "top_targets": "; ".join(f"{m['target_category'] or '(none)'} {m['share']:.0%}"
                                              for m in members[:TOP_TARGETS])
                     + (f"; {len(members) - TOP_TARGETS} more" if len(members) > TOP_TARGETS else ""),
                     "mean_confidence": group["mean_confidence"], "flagged": group["flagged"],
                     "flags": _flag_counts(group["flags"])})
        if len(members) > 1:  # one target only: the category row says it all
            for m in members:
                rows.append({"level": LEVEL_PAIR, "source_category": m["source_category"],
                             "target_category": m["target_category"], "products": m["products"],
                             "share": m["share"], "top_targets": "", "mean_confidence": m["mean_confidence"],
                             "flagged": m["flagged"], "flags": _flag_counts(m["flags"])})
    return pl.DataFrame(rows, schema=schema).with_columns(pl.col("share", "mean_confidence").round(4))


def _flag_counts(flag_lists: list[str]) -> str:
    """"LOW_CONFIDENCE 12; LOW_MARGIN 3" from the rows' comma-joined flags."""
    counts: dict[str, int] = {}
    for flags in flag_lists:
        for flag in filter(None, (flags or "").split(",")):
            counts[flag] = counts.get(flag, 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_FLAGS]
    return "; ".join(f"{flag} {n}" for flag, n in ranked)


def latest_category_decisions(log: pl.DataFrame) -> pl.DataFrame:
    """The category decision in force per (level, source category[, pair target]): the latest."""
    if not log.height:
        return log
    return (log.with_row_index("_order")
            .with_columns(_target=pl.when(pl.col("level") == LEVEL_PAIR).then(pl.col("target_category"))
                          .otherwise(pl.lit("")))
            .sort("_order").group_by("level", "source_category", "_target", maintain_order=True).last()
            .sort("_order").drop("_order", "_target"))


def covering(source_category: str, suggested: str, in_force: dict[tuple[str, str, str], dict[str, Any]]
             ) -> dict[str, Any] | None:
    """The category decision that covers a product (a pair decision before a category one), or None.

    ``in_force`` is :func:`decision_index` of the decisions in force."""
    return (in_force.get((LEVEL_PAIR, source_category or "", suggested or ""))
            or in_force.get((LEVEL_CATEGORY, source_category or "", "")))


def decision_index(decisions: pl.DataFrame) -> dict[tuple[str, str, str], dict[str, Any]]:
    """(level, source category, pair target or "") -> decision, for :func:`covering`."""
    return {(d["level"], d["source_category"] or "", (d["target_category"] or "") if d["level"] == LEVEL_PAIR else ""): d
            for d in latest_category_decisions(decisions).iter_rows(named=True)}


def needs_person(flags: list[str]) -> bool:
    """A row waits for a person when it has a flag that is not informational."""
    return any(f not in INFORMATIONAL_FLAGS for f in flags)
