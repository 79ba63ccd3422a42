"""The classifier's fits and the leave-one-out sample of a labelled target: what each costs and what it changes.

Onto a labelled target catalog the first run fits a linear classifier on the target's texts and
gets out-of-fold votes for the calibration sample (``migrate.mapping.classifier``), then scores the
sample leave-one-out to fit the calibration and choose ``min_confidence``
(``migrate.mapping.target_side``). Both cost seconds that do not scale with the source. Variants,
each a whole in-process migration of the held-out source onto the labelled target (vectors from
one embedding cache, so only the target side's work differs):

* 3 folds + a final fit on every target product (taxmig before issue 39: four fits);
* 2 folds + a final fit (three fits);
* 2 folds, the final classifier their two models averaged (two fits, side by side on 2 cores);
* the leave-one-out on a bounded sample of 5,000 target products (3 folds + refit).

Sets: BigBasket 80/20 (22,085 target products, 5,470 source; bench/common.py's split) and
Instacart 80/20 by product name (products onto department > aisle; 7,325 / 1,879).

    python bench/classifier_folds.py                 # appends to BENCHMARKS.md
    python bench/classifier_folds.py --no-write
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import bigbasket_split, in_test_split, instacart_products, publish, write_split  # noqa: E402

VARIANTS = (("3 folds + final fit (before)", 20_000, 3, False), ("2 folds + final fit", 20_000, 2, False),
            ("2 folds averaged (the default)", 20_000, 2, True), ("3 folds + final fit, leave-one-out on 5,000", 5_000, 3, False))


def labelled_sets(tmp: Path) -> dict[str, tuple[dict, dict[str, str]]]:
    """name -> (MigrationSettings fields, truth by source id)."""
    import polars as pl

    target, source = bigbasket_split()
    target_path, source_path = write_split(tmp, target, source)
    sets = {"BigBasket 80/20": (dict(source=source_path, target_catalog=target_path,
                                     target_category="category,sub_category"),
                                dict(zip(source["index"], [f"{c} > {s}" for c, s in
                                                           zip(source["category"], source["sub_category"])])))}
    frame = instacart_products().select(pl.col("product_id").cast(pl.String).alias("index"),
                                        pl.col("product_name").alias("product"), "department", "aisle")
    test = pl.Series([in_test_split(name) for name in frame["product"]])
    target, source = frame.filter(~test), frame.filter(test)
    folder = tmp / "instacart"
    folder.mkdir()
    target.write_csv(folder / "target.csv")
    source.select("index", "product").write_csv(folder / "source.csv")
    sets["Instacart 80/20"] = (dict(source=folder / "source.csv", target_catalog=folder / "target.csv",
                                    target_category="department,aisle"),
                               dict(zip(source["index"], [f"{d} > {a}" for d, a in
                                                          zip(source["department"], source["aisle"])])))
    return sets


def timed_run(migrator, settings, cache, truth: dict[str, str]):
    """One in-process migration: (top-1 hit per row, unflagged per row, the result, wall seconds)."""
    from bench.migrate_bench import evaluate

    started = time.perf_counter()
    result = migrator.run(settings, cache=cache)
    seconds = time.perf_counter() - started
    hit, _, unflagged, _ = evaluate(result.mapping, truth)
    return hit, unflagged, result, seconds


def run_variants(sets: dict, variants, apply, tmp: Path):
    """For each labelled set (:func:`labelled_sets`' shape) and each variant ``(label, *options)``:
    ``apply(*options)`` (it returns extra MigrationSettings fields), then :func:`timed_run` with the
    target-side cache off. Yields (set, label, hit, unflagged, result, seconds). A first, uncounted run
    per set (the first variant's) fills one embedding cache, so only the target side's work differs."""
    from migrate.core.embedding_cache import EmbeddingCache
    from migrate.mapping.pipeline import Migrator
    from migrate.mapping.settings import MigrationSettings

    cache = EmbeddingCache(tmp / "vectors.sqlite")
    migrator = None
    for name, (fields, truth) in sets.items():
        for i, (label, *options) in enumerate((variants[0], *variants)):
            settings = MigrationSettings(**fields, progress=False, target_cache=False, **apply(*options))
            migrator = migrator or Migrator.from_settings(settings)
            hit, unflagged, result, seconds = timed_run(migrator, settings, cache, truth)
            if i:  # the first run of a set encodes its texts into the cache: not compared
                yield name, label, hit, unflagged, result, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import migrate.mapping.classifier as classifier
    import migrate.mapping.target_side as target_side
    from bench.migrate_bench import unflagged_precision

    rows = []
    fit = classifier.fit_with_out_of_fold_votes

    def apply(limit: int, folds: int, averaged: bool) -> dict:
        target_side.fit_with_out_of_fold_votes = functools.partial(fit, folds=folds, final_from_folds=averaged)
        return {"calibration_limit": limit}

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for name, label, hit, unflagged, result, seconds in run_variants(labelled_sets(tmp), VARIANTS, apply, tmp):
            stages = result.facts.stage_seconds
            rows.append(f"| {name} | {label} | {hit.mean():.4f} | {unflagged_precision(hit, unflagged):.4f} | "
                        f"{unflagged.mean():.4f} | {result.thresholds['min_confidence']} | "
                        f"{stages.get('fitting the classifier', 0.0):.1f} | {stages.get('calibrating', 0.0):.1f} | "
                        f"{seconds:.1f} |")
            print(rows[-1], flush=True)
        target_side.fit_with_out_of_fold_votes = fit
    table = ("| set | classifier fits and leave-one-out sample | top-1 | unflagged precision | unflagged share | "
             "min_confidence | classifier s | calibration s | run s |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n"
             + "\n".join(rows))
    notes = ("Each row a whole in-process migration of the source onto the labelled target with the default "
             "encoder, target-side cache off; the texts' vectors read from one embedding cache filled by a first, "
             "uncounted run per set. Unflagged precision and share measured on the source's true categories; "
             "min_confidence chosen on leave-one-out for precision 0.97. The classifier's fits run in a process "
             "pool of 2 from 8,000 target products (BigBasket), in-process below (Instacart).")
    print(table)
    print(notes)
    publish("classifier folds and the leave-one-out sample (issue 39)", table, notes, write=not args.no_write)


if __name__ == "__main__":
    main()
