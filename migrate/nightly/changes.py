"""What changed between two nights: products, assignments, flags, categories, score drift, target.

Every function here compares two snapshots and returns plain polars tables, so the report
writer and the JSON summary say the same thing.

>>> before = pl.DataFrame({"kind": ["category"] * 2, "key": ["A > B", "A > C"], "category": ["A > B", "A > C"],
...                        "taxonomy_id": ["1", "2"], "content_hash": [None, None]})
>>> after = before.with_columns(pl.when(pl.col("key") == "A > C").then(pl.lit("A > Cee")).otherwise(pl.col("key"))
...                             .alias("key")).with_columns(pl.col("key").alias("category"))
>>> diff_targets(before, after).renamed
{'A > C': 'A > Cee'}
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from migrate.nightly.decisions import content_hash
from migrate.nightly.state import TARGET_SCHEMA

CHANGE_COLUMNS = ["change", "product_id", "source_text", "previous_text", "previous_category", "category",
                  "flags", "reason"]
CHANGE_KINDS = ("new", "removed", "text_changed", "assignment_changed", "newly_flagged", "decision_stale",
                "decision_carried")
RENAME_SHARE = 0.8
"""A target-catalog category counts as renamed when at least this share of its products (by id)
sits under one single new category the next night."""


def target_snapshot(categories: list[str], taxonomy_ids: dict[str, str], products: list[tuple[str, str, str]]
                    ) -> pl.DataFrame:
    """Rows for the state: each category (with its taxonomy id) and each target product
    ``(id, text, category)`` with a content hash."""
    rows = [{"kind": "category", "key": c, "category": c, "taxonomy_id": taxonomy_ids.get(c, ""),
             "content_hash": None} for c in categories]
    rows += [{"kind": "product", "key": pid, "category": cat, "taxonomy_id": "",
              "content_hash": content_hash(text, cat)} for pid, text, cat in products]
    return pl.DataFrame(rows, schema=TARGET_SCHEMA) if rows else pl.DataFrame(schema=TARGET_SCHEMA)


@dataclass
class TargetChanges:
    """Categories added, removed and renamed (old -> new), and target products changed."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    renamed: dict[str, str] = field(default_factory=dict)
    rename_basis: dict[str, str] = field(default_factory=dict)
    products_added: int = 0
    products_removed: int = 0
    products_changed: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed or self.renamed or self.products_added or self.products_removed
                    or self.products_changed)

    def table(self) -> pl.DataFrame:
        rows = [{"change": "renamed", "category": old, "new_name": new, "basis": self.rename_basis.get(old, "")}
                for old, new in self.renamed.items()]
        rows += [{"change": "removed", "category": c, "new_name": "", "basis": ""} for c in self.removed]
        rows += [{"change": "added", "category": c, "new_name": "", "basis": ""} for c in self.added]
        return pl.DataFrame(rows, schema={"change": pl.String, "category": pl.String, "new_name": pl.String,
                                          "basis": pl.String})

    def as_dict(self) -> dict[str, Any]:
        return {"changed": self.changed, "added": self.added, "removed": self.removed, "renamed": self.renamed,
                "target_products_added": self.products_added, "target_products_removed": self.products_removed,
                "target_products_changed": self.products_changed}


def diff_targets(before: pl.DataFrame, after: pl.DataFrame) -> TargetChanges:
    """Compare two target snapshots; renames are recognised by taxonomy id or by products moving
    together (see :data:`RENAME_SHARE`), never by name similarity alone."""
    cats_before = before.filter(pl.col("kind") == "category")
    cats_after = after.filter(pl.col("kind") == "category")
    old = cats_before["key"].to_list()
    new = cats_after["key"].to_list()
    old_set, new_set = set(old), set(new)
    gone = [c for c in old if c not in new_set]
    came = [c for c in new if c not in old_set]
    changes = TargetChanges()
    # 1. same taxonomy id, new path
    id_after = {i: c for c, i in zip(cats_after["key"], cats_after["taxonomy_id"]) if i}
    for cat, tid in zip(cats_before["key"], cats_before["taxonomy_id"]):
        if cat in gone and tid and id_after.get(tid) in came:
            changes.renamed[cat] = id_after[tid]
            changes.rename_basis[cat] = f"same taxonomy id {tid}"
    # 2. the same target products now under one new name
    prods_before = dict(zip(*before.filter(pl.col("kind") == "product").select("key", "category")))
    prods_after_frame = after.filter(pl.col("kind") == "product")
    prods_after = dict(zip(prods_after_frame["key"], prods_after_frame["category"]))
    members: dict[str, list[str]] = defaultdict(list)
    for pid, cat in prods_before.items():
        members[cat].append(pid)
    taken = set(changes.renamed.values())
    for cat in gone:
        if cat in changes.renamed or not members.get(cat):
            continue
        moved = Counter(prods_after.get(pid) for pid in members[cat] if pid in prods_after)
        if not moved:
            continue
        dest, count = moved.most_common(1)[0]
        if dest in came and dest not in taken and count / len(members[cat]) >= RENAME_SHARE:
            changes.renamed[cat] = dest
            changes.rename_basis[cat] = f"{count} of its {len(members[cat])} target products moved there"
            taken.add(dest)
    changes.removed = [c for c in gone if c not in changes.renamed]
    changes.added = [c for c in came if c not in taken]
    hash_before = dict(zip(*before.filter(pl.col("kind") == "product").select("key", "content_hash")))
    hash_after = dict(zip(prods_after_frame["key"], prods_after_frame["content_hash"]))
    changes.products_added = sum(1 for k in hash_after if k not in hash_before)
    changes.products_removed = sum(1 for k in hash_before if k not in hash_after)
    changes.products_changed = sum(1 for k, h in hash_after.items() if k in hash_before and hash_before[k] != h)
    return changes


PRODUCT_READ = ("product_id", "source_text", "content_hash", "final_category", "flags", "needs_review", "decision",
                "decided_by", "decision_text")
"""The products table's columns :func:`product_changes` reads: rows as dicts of these alone (every
column as dicts was a night's hot spot)."""


def _changed_pairs(before: pl.DataFrame | None, after: pl.DataFrame):
    """(tonight's row, last night's row or None) of each product that may have changed: new, or
    a different text, final category, review need or flags -- a superset of what
    :func:`product_changes` reports, found by a join instead of a loop over every product. None
    before the first night."""
    if before is None:
        return
    old_names = {c: f"{c}__old" for c in PRODUCT_READ if c != "product_id"}
    joined = after.join(before.rename(old_names).with_columns(pl.lit(True).alias("__had")), on="product_id",
                        how="left", maintain_order="left")
    differs = pl.lit(False)
    for column in PRODUCT_READ[1:]:
        differs = differs | pl.col(column).ne_missing(pl.col(old_names[column]))
    for row in joined.filter(pl.col("__had").is_null() | differs).iter_rows(named=True):
        now = {c: row[c] for c in PRODUCT_READ}
        old = {c: row[old_names.get(c, c)] for c in PRODUCT_READ} if row["__had"] else None
        yield now, old


def product_changes(before: pl.DataFrame | None, after: pl.DataFrame, *, rejected: dict[str, str],
                    target: TargetChanges, model_changed: bool, stale_ratio: dict[str, float],
                    carried: list[dict[str, Any]]) -> pl.DataFrame:
    """One row per change of a product (a product may have several: text, assignment, flags)."""
    rows: list[dict[str, Any]] = []
    after = after.select(PRODUCT_READ)
    if before is not None:
        before = before.select(PRODUCT_READ).unique("product_id", keep="last", maintain_order=True)

    def add(change: str, now: dict | None, old: dict | None, reason: str) -> None:
        rows.append({"change": change, "product_id": (now or old)["product_id"],
                     "source_text": (now or {}).get("source_text", ""), "previous_text": (old or {}).get("source_text", ""),
                     "previous_category": (old or {}).get("final_category", ""),
                     "category": (now or {}).get("final_category", ""), "flags": (now or {}).get("flags", ""),
                     "reason": reason})

    for now, old in _changed_pairs(before, after):
        if old is None:
            add("new", now, None, "first seen tonight" + (f"; flags {now['flags']}" if now["flags"] else ""))
            continue
        text_changed = old["content_hash"] != now["content_hash"]
        if text_changed:
            sim = stale_ratio.get(now["product_id"])
            add("text_changed", now, old, "text or source category changed" +
                (f" (similarity to the decided text {sim:.2f})" if sim is not None else ""))
        if (old["final_category"] or "") != (now["final_category"] or ""):
            why = ("text changed" if text_changed else "target changed" if target.changed
                   else "model changed" if model_changed else "scores changed with the rest of the catalog")
            add("assignment_changed", now, old, why)
        if now["needs_review"] and not old["needs_review"]:
            add("newly_flagged", now, old, now["flags"])
        if "DECISION_STALE" in (now["flags"] or "") and "DECISION_STALE" not in (old["flags"] or ""):
            add("decision_stale", now, old, f"decided '{now['decision']}' by {now['decided_by'] or 'unknown'} on "
                                            f"'{now['decision_text']}'; the text changed materially")
    if before is not None:
        for old in before.filter(~pl.col("product_id").is_in(after["product_id"].implode())).iter_rows(named=True):
            pid = old["product_id"]
            add("removed", None, old, f"rejected tonight: {rejected[pid]}" if pid in rejected
                else "not in tonight's catalog")
    prev = ({r["product_id"]: r for r in before.filter(pl.col("product_id").is_in([c["product_id"] for c in carried]))
             .iter_rows(named=True)} if before is not None and carried else {})
    by_id = {r["product_id"]: r for r in after.iter_rows(named=True)} if carried else {}
    for c in carried:
        add("decision_carried", by_id.get(c["product_id"]), prev.get(c["product_id"]),
            f"decided category renamed: '{c['from']}' -> '{c['to']}'")
    order = {k: i for i, k in enumerate(CHANGE_KINDS)}
    frame = pl.DataFrame(rows, schema={c: pl.String for c in CHANGE_COLUMNS})
    return frame.with_columns(pl.col("change").replace_strict(order, return_dtype=pl.Int64).alias("_o")) \
        .sort("_o", "product_id", maintain_order=True).drop("_o")


def category_counts(before: pl.DataFrame | None, after: pl.DataFrame) -> pl.DataFrame:
    """Products per final category, last night and tonight, with the change."""
    def counts(frame: pl.DataFrame | None, name: str) -> pl.DataFrame:
        if frame is None or frame.height == 0:
            return pl.DataFrame(schema={"category": pl.String, name: pl.Int64})
        return (frame.with_columns(pl.col("final_category").fill_null("").alias("category"))
                .group_by("category").agg(pl.len().cast(pl.Int64).alias(name)))

    joined = counts(before, "previous").join(counts(after, "count"), on="category", how="full", coalesce=True)
    return (joined.with_columns(pl.col("previous").fill_null(0), pl.col("count").fill_null(0))
            .with_columns((pl.col("count") - pl.col("previous")).alias("change"),
                          pl.when(pl.col("category") == "").then(pl.lit("(unmapped)")).otherwise(pl.col("category"))
                          .alias("category"))
            .sort(["count", "category"], descending=[True, False])
            .select("category", "previous", "count", "change"))


DRIFT_COLUMNS = ("confidence", "margin", "score")


def ks_two_sample(before: np.ndarray, after: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov (statistic, two-sided p-value): the statistic as
    ``scipy.stats.ks_2samp`` computes it, the p-value from Kolmogorov's limiting distribution
    (``scipy.special.kolmogorov`` at sqrt(n m / (n + m)) times the statistic). Not
    ``ks_2samp`` itself: importing scipy.stats is a noticeable share of a short night, and drift over
    thousands of scores needs no exact tail."""
    from scipy.special import kolmogorov

    before, after = np.sort(before), np.sort(after)
    both = np.concatenate([before, after])
    gaps = (np.searchsorted(before, both, side="right") / len(before)
            - np.searchsorted(after, both, side="right") / len(after))
    statistic = float(max(gaps.max(), -gaps.min(), 0.0))
    effective = len(before) * len(after) / (len(before) + len(after))
    return statistic, float(np.clip(kolmogorov(np.sqrt(effective) * statistic), 0.0, 1.0))


def score_drift(before: pl.DataFrame | None, after: pl.DataFrame) -> pl.DataFrame:
    """Distribution of confidence, margin and score, last night vs tonight, with the two-sample
    Kolmogorov-Smirnov statistic as the drift measure (:func:`ks_two_sample`)."""
    rows = []
    for col in DRIFT_COLUMNS:
        now = after[col].drop_nulls().to_numpy().astype(float)
        old = before[col].drop_nulls().to_numpy().astype(float) if before is not None and before.height else np.zeros(0)
        row: dict[str, Any] = {"metric": col}
        for label, values in (("previous", old), ("tonight", now)):
            for name, q in (("p10", 10), ("median", 50), ("p90", 90)):
                row[f"{label}_{name}"] = float(np.percentile(values, q)) if values.size else None
            row[f"{label}_mean"] = float(values.mean()) if values.size else None
        if old.size and now.size:
            row["ks_statistic"], row["ks_pvalue"] = ks_two_sample(old, now)
        else:
            row["ks_statistic"] = row["ks_pvalue"] = None
        rows.append(row)
    return pl.DataFrame(rows)
