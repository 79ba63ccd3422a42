"""Reviewer effort: decisions a reviewer needs to finish a migration, row by row against by category.

A simulated reviewer who knows the right answers works through the workbook the way its sheets
suggest, on sources whose own categories are coarser than the target's:

- ``bigbasket``: BigBasket 80/20 (``bench.common.bigbasket_split``) onto the labelled target
  catalog (category > sub_category), the source carrying only BigBasket's 11 top categories;
- ``instacart``: Instacart's products onto its department > aisle taxonomy, zero-shot (no labelled
  product), the source carrying its department.

The review is finished when every flagged row has a decision (the tool asked a person to look at
it; a decision is what closes it) and the final mapping is at least 99% right. Decisions counted:

- **row by row**: one per flagged row, in Review-sheet order (``ACCEPT`` or the right category),
  then one per unflagged wrong row, least confident first, until the mapping is 99% right;
- **by category**: per source category, in Category decisions order, the cheaper of (a) a decision
  on the category row sending it to its most common right category when that holds most of its
  rows, plus a pair decision for each pair whose rows mostly belong elsewhere (where it fixes two
  rows or more), or (b) a pair decision for each pair that has flagged or wrong rows and whose rows
  mostly share one right category; then one decision per flagged row no category decision covered,
  and one per wrong row left, until 99%. Coverage is :func:`migrate.mapping.category_decisions.covering`,
  the precedence ``review apply`` uses.

    python bench/review_effort.py                 # both sets, appends to BENCHMARKS.md
    python bench/review_effort.py --limit 2000 --no-write
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import bigbasket_split, instacart_products, publish  # noqa: E402
from migrate.mapping.category_decisions import (LEVEL_CATEGORY, LEVEL_PAIR, category_table, covering,  # noqa: E402
                                        decision_index)
from migrate.mapping.pipeline import Migrator  # noqa: E402
from migrate.mapping.result import review_order  # noqa: E402
from migrate.mapping.settings import MigrationSettings  # noqa: E402

TARGET_ACCURACY = 0.99  # the bar for a finished review


def bigbasket_case(folder: Path, limit: int | None) -> dict:
    target, source = bigbasket_split(limit)
    target_path, source_path = folder / "bb_target.csv", folder / "bb_source.csv"
    target.write_csv(target_path)
    source.select("index", "product", "brand", "category").write_csv(source_path)
    truth = dict(zip(source["index"], (f"{c} > {s}" for c, s in zip(source["category"], source["sub_category"]))))
    settings = MigrationSettings(source=source_path, source_id="index", source_category="category",
                                 target_catalog=target_path, target_category="category,sub_category", progress=False)
    return dict(name="bigbasket 80/20, labelled target, source: 11 top categories", settings=settings, truth=truth)


def instacart_case(folder: Path, limit: int | None) -> dict:
    frame = instacart_products(limit)
    source_path, taxonomy_path = folder / "ic_source.csv", folder / "ic_taxonomy.txt"
    frame.select(pl.col("product_id").cast(pl.String).alias("id"), pl.col("product_name").alias("product"),
                 "department").write_csv(source_path)
    paths = sorted({f"{d} > {a}" for d, a in zip(frame["department"], frame["aisle"])})
    taxonomy_path.write_text("\n".join(paths) + "\n", encoding="utf-8")
    truth = dict(zip(frame["product_id"].cast(pl.String), (f"{d} > {a}" for d, a in zip(frame["department"],
                                                                                        frame["aisle"]))))
    settings = MigrationSettings(source=source_path, source_id="id", source_text="product",
                                 source_category="department", target_taxonomy=taxonomy_path, progress=False)
    return dict(name="instacart zero-shot onto aisles, source: departments", settings=settings, truth=truth)


def _majority(truths: list[str]) -> tuple[str, int]:
    (label, n), = Counter(truths).most_common(1)
    return label, n


def _finish(final: dict[str, str], truth: dict[str, str], fixable: list[str], decisions: int,
            target: float = TARGET_ACCURACY) -> tuple[int, float]:
    """Fix wrong rows of ``fixable`` in order (one decision each) until the mapping is ``target`` right."""
    need = math.ceil(target * len(final))
    right = sum(final[p] == truth[p] for p in final)
    for pid in fixable:
        if right >= need:
            break
        if final[pid] != truth[pid]:
            final[pid] = truth[pid]
            right += 1
            decisions += 1
    return decisions, right / len(final)


def row_review(mapping: pl.DataFrame, truth: dict[str, str]) -> dict:
    final = dict(zip(mapping["source_id"], mapping["target_category"].fill_null("")))
    decisions = corrections = 0
    for pid in review_order(mapping)["source_id"]:  # every flagged row, in the Review sheet's order
        decisions += 1
        if final[pid] != truth[pid]:
            final[pid] = truth[pid]
            corrections += 1
    rest = mapping.filter(~pl.col("needs_review")).sort("confidence")["source_id"].to_list()
    before = decisions
    decisions, accuracy = _finish(final, truth, rest, decisions)
    return dict(decisions=decisions, corrections=corrections + decisions - before, accuracy=accuracy,
                category_decisions=0)


def category_review(mapping: pl.DataFrame, truth: dict[str, str], accuracy: float = TARGET_ACCURACY) -> dict:
    rows = {r["source_id"]: r for r in mapping.iter_rows(named=True)}
    table = category_table(mapping)
    chosen: list[dict] = []
    for group in table.filter(pl.col("level") == LEVEL_CATEGORY).iter_rows(named=True):
        source = group["source_category"]
        members = [r for r in rows.values() if (r["source_category"] or "") == source]
        pairs = {}
        for r in members:
            pairs.setdefault(r["target_category"] or "", []).append(r)
        options = []
        # (a) the whole category to its most common right category, pairs that mostly belong elsewhere
        label, n = _majority([truth[r["source_id"]] for r in members])
        if 2 * n > len(members):
            picks = [dict(level=LEVEL_CATEGORY, source_category=source, target_category="", decision=label)]
            for target, rs in pairs.items():
                pair_label, m = _majority([truth[r["source_id"]] for r in rs])
                gain = m - sum(truth[r["source_id"]] == label for r in rs)
                if pair_label != label and gain >= 2:
                    picks.append(dict(level=LEVEL_PAIR, source_category=source, target_category=target,
                                      decision=pair_label))
            options.append(picks)
        # (b) pair by pair, where a pair has something to review and mostly one right category
        picks = []
        for target, rs in pairs.items():
            wrong_or_flagged = any(r["needs_review"] or truth[r["source_id"]] != target for r in rs)
            pair_label, m = _majority([truth[r["source_id"]] for r in rs])
            if wrong_or_flagged and 2 * m > len(rs):
                picks.append(dict(level=LEVEL_PAIR, source_category=source, target_category=target,
                                  decision=pair_label))
        options.append(picks)
        options.append([])  # (c) no category decision: rows only
        chosen.extend(min(options, key=lambda p: _cost(p, members, truth)))
    return _apply(chosen, rows, truth, accuracy)


def _covered(picks: list[dict], members: list[dict]) -> dict[str, str]:
    index = decision_index(pl.DataFrame(picks, schema={"level": pl.String, "source_category": pl.String,
                                                         "target_category": pl.String, "decision": pl.String}))
    out = {}
    for r in members:
        d = covering(r["source_category"] or "", r["target_category"] or "", index)
        if d is not None:
            out[r["source_id"]] = d["decision"]
    return out


def _cost(picks: list[dict], members: list[dict], truth: dict[str, str]) -> int:
    """Decisions this source category takes with ``picks``: the picks, one per uncovered flagged
    row, one per wrong row left."""
    covered = _covered(picks, members)
    cost = len(picks)
    for r in members:
        pid = r["source_id"]
        final = covered.get(pid, r["target_category"] or "")
        if (r["needs_review"] and pid not in covered) or final != truth[pid]:
            cost += 1
    return cost


def _apply(chosen: list[dict], rows: dict[str, dict], truth: dict[str, str], target: float = TARGET_ACCURACY) -> dict:
    covered = _covered(chosen, list(rows.values()))
    final = {pid: covered.get(pid, r["target_category"] or "") for pid, r in rows.items()}
    decisions, corrections = len(chosen), 0
    uncovered_flagged = [pid for pid, r in rows.items() if r["needs_review"] and pid not in covered]
    for pid in uncovered_flagged:  # a flagged row nobody decided by category: its own decision
        decisions += 1
        if final[pid] != truth[pid]:
            final[pid] = truth[pid]
            corrections += 1
    order = sorted(rows, key=lambda p: (rows[p]["confidence"] if rows[p]["confidence"] is not None else 0.0))
    before = decisions
    decisions, accuracy = _finish(final, truth, order, decisions, target)
    return dict(decisions=decisions, corrections=corrections + decisions - before, accuracy=accuracy,
                category_decisions=len(chosen))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="sample this many products per set (default: all)")
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to BENCHMARKS.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    lines = ["| set | products | top-1 | flagged | review | decisions | per 1,000 products | category / pair "
             "decisions | corrections | final accuracy | row-by-row / category |",
             "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    migrator = None
    with tempfile.TemporaryDirectory() as tmp:
        for case in (bigbasket_case(Path(tmp), args.limit), instacart_case(Path(tmp), args.limit)):
            started = time.perf_counter()
            migrator = migrator or Migrator.from_settings(case["settings"])
            result = migrator.run(case["settings"])
            mapping = result.mapping.with_columns(pl.col("source_id").cast(pl.String))
            truth = case["truth"]
            top1 = sum(t == truth[p] for p, t in zip(mapping["source_id"], mapping["target_category"])) / mapping.height
            by_row, by_category = row_review(mapping, truth), category_review(mapping, truth)
            ratio = by_row["decisions"] / max(by_category["decisions"], 1)
            for label, r in (("row by row", by_row), ("by category", by_category)):
                lines.append(f"| {case['name']} | {mapping.height} | {top1:.3f} | {int(mapping['needs_review'].sum())} "
                             f"| {label} | {r['decisions']} | {1000 * r['decisions'] / mapping.height:.0f} "
                             f"| {r['category_decisions']} | {r['corrections']} | {r['accuracy']:.3f} "
                             f"| {ratio:.2f}x |")
            print(lines[-2], lines[-1], f"({time.perf_counter() - started:.0f} s)", sep="\n", flush=True)
    notes = ("Decisions a reviewer who knows the answers needs until every flagged row is decided and the final "
             "mapping is >= 99% right (module docstring of bench/review_effort.py: the two strategies). "
             "'corrections': decisions that changed a row's category; 'category / pair decisions': decisions on "
             "the Category decisions sheet. Target: category review >= 3x fewer decisions than row by row.")
    publish("Reviewer effort: row by row against by category (bench/review_effort.py)", "\n".join(lines), notes,
            write=not args.no_write)


if __name__ == "__main__":
    main()
