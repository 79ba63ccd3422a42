"""Same mappings before and after a change: write the mappings of fixed runs, then compare two sets.

A refactor must not move a row. This writes, for one checkout, the mapping of four runs that cover
every mapping path -- BigBasket 80/20 onto its labelled catalog (the source carrying its 11 top
categories), Instacart onto its aisles and BigBasket onto its three-level paths with no labelled
product (self-training), and Instacart's first review round learning from 200 decisions -- as
Parquet files, and compares two such folders column by column:

    git worktree add /tmp/before <commit>            # the code before the change
    PYTHONPATH=/tmp/before python bench/same_mappings.py write /tmp/same/before
    python bench/same_mappings.py write /tmp/same/after
    python bench/same_mappings.py compare /tmp/same/before /tmp/same/after --names <commit> HEAD --write

(About 15 minutes a checkout on 2 cores: every product is encoded.) Data: ``../shared/data``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import polars as pl

RUNS = ("bb_labelled", "instacart_zero", "instacart_zero_round1", "bb3_zero")
DECISIONS = 200      # answers of the review round (the first questions, in asking order)
RANDOM_CHECKS = 20   # of which the last are counted as random checks


def write(out: Path) -> None:
    """Run every case with the code on ``sys.path`` and write ``out/<run>.parquet``."""
    from bench.review_effort import bigbasket_case, instacart_case
    from bench.review_rounds import bigbasket_case as bigbasket_three_level
    from migrate.mapping.feedback import Feedback
    from migrate.mapping.pipeline import Migrator

    out.mkdir(parents=True, exist_ok=True)
    inputs = out / "inputs"
    inputs.mkdir(exist_ok=True)
    migrator = None
    for name, make in (("bb_labelled", bigbasket_case), ("instacart_zero", instacart_case),
                       ("bb3_zero", bigbasket_three_level)):
        case = make(inputs, None)
        migrator = migrator or Migrator.from_settings(case["settings"])
        result = migrator.run(case["settings"])
        result.mapping.write_parquet(out / f"{name}.parquet")
        if name == "instacart_zero":
            truth = {str(k): v for k, v in case["truth"].items()}
            asked = result.questions["source_id"].to_list()[:DECISIONS]
            feedback = Feedback(decisions={p: truth[p] for p in asked}, weights={}, round=1,
                                audited=set(asked[DECISIONS - RANDOM_CHECKS:]))
            migrator.run(case["settings"], feedback=feedback).mapping.write_parquet(out / f"{name}_round1.parquet")
        print(f"{name}: {result.mapping.height} rows", flush=True)


def compare(before: Path, after: Path, names: tuple[str, str], write: bool) -> bool:
    """Whether the two mappings of every run are equal (every column, every row): a table, printed
    and with ``write`` appended to BENCHMARKS.md; True if all are."""
    from bench.common import publish

    lines = [f"| run | rows ({names[0]}) | rows ({names[1]}) | mapping |", "|---|---:|---:|---|"]
    same = True
    for name in RUNS:
        a, b = pl.read_parquet(before / f"{name}.parquet"), pl.read_parquet(after / f"{name}.parquet")
        equal = a.equals(b)
        differing = [] if equal or a.columns != b.columns or a.height != b.height else \
            [c for c in a.columns if not a[c].equals(b[c])]
        lines.append(f"| {name} | {a.height} | {b.height} | "
                     f"{'identical' if equal else 'DIFFERENT ' + ', '.join(differing)} |")
        same &= equal
    notes = (f"Each folder written by `python bench/same_mappings.py write DIR` with the code of {names[0]} and "
             f"of {names[1]} on the path (module docstring); 'identical': every column of every row equal "
             "(polars DataFrame.equals), confidences included.")
    publish(f"Same mappings: {names[0]} against {names[1]} (bench/same_mappings.py)", "\n".join(lines), notes,
            write=write)
    return same


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("write").add_argument("out", type=Path)
    both = sub.add_parser("compare")
    both.add_argument("before", type=Path)
    both.add_argument("after", type=Path)
    both.add_argument("--names", nargs=2, default=("before", "after"), help="what the two folders hold")
    both.add_argument("--write", action="store_true", help="append the table to BENCHMARKS.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    sys.path.append(str(Path(__file__).resolve().parents[1]))  # PYTHONPATH (the checkout to run) comes first
    if args.command == "write":
        write(args.out)
    else:
        sys.exit(0 if compare(args.before, args.after, tuple(args.names), args.write) else 1)


if __name__ == "__main__":
    main()
