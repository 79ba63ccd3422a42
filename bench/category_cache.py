"""A taxonomy embedded once: products onto Google's taxonomy, a first and a second run.

Runs ``taxmig migrate`` as a user does (a fresh process each, so the wall time holds imports and
the model load) on the first N BigBasket products onto Google's 5,595 categories, twice, with an
empty user cache (``TAXMIG_CACHE_DIR``) at the start: the first run encodes every category text
(three phrasings of each path), the second reads them from the category cache. Beside them, the
first run's cost with one phrasing per path (``ScoringParams.zero_shot_label_templates=("{}",)``,
in-process), and the top-1 against the truth is not measured here (Google has no BigBasket truth):
whether three phrasings pay is the zero-shot bench's question (BENCHMARKS.md, "zero-shot levers").

    python bench/category_cache.py              # 300 products, appends to BENCHMARKS.md
    python bench/category_cache.py --products 1000 --no-write
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import DATA, publish  # noqa: E402

TAXONOMY = DATA / "google_product_taxonomy" / "taxonomy-with-ids.en-US.txt"


def cli_run(source: Path, out: Path, cache: Path) -> dict:
    """One ``taxmig migrate`` in a fresh process: wall seconds and the run's facts."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "migrate.cli", "migrate", str(source), "--target-taxonomy", str(TAXONOMY),
                    "-o", str(out), "-q"], check=True, env={**os.environ, "TAXMIG_CACHE_DIR": str(cache)},
                   cwd=Path(__file__).resolve().parents[1])
    wall = time.perf_counter() - started
    facts = json.loads(out.with_name(out.stem + ".summary.json").read_text())["facts"]
    return {"wall": wall, **facts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--products", type=int, default=300)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import polars as pl

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source = folder / "source.csv"
        pl.read_csv(DATA / "bigbasket" / "products.csv", infer_schema=False, n_rows=args.products).write_csv(source)
        cache = folder / "cache"
        first = cli_run(source, folder / "first.csv", cache)
        second = cli_run(source, folder / "second.csv", cache)
        same = pl.read_csv(folder / "first.csv")["target_category"].equals(
            pl.read_csv(folder / "second.csv")["target_category"])
        from migrate.mapping.pipeline import Migrator
        from migrate.mapping.scoring import ScoringParams
        from migrate.mapping.settings import MigrationSettings

        base = MigrationSettings(source=source, target_taxonomy=TAXONOMY, progress=False, category_cache=False)
        migrator = Migrator.from_settings(base)
        runs = {}
        for label, templates in (("three phrasings (default)", ScoringParams().zero_shot_label_templates),
                                 ("one phrasing", ("{}",))):
            settings = replace(base, scoring=replace(base.scoring, zero_shot_label_templates=templates))
            result = migrator.run(settings)
            runs[label] = result.facts
    lines = ["| run | wall s (fresh process) | run s | texts encoded | read from the category cache |",
             "|---|---:|---:|---:|---:|",
             f"| first `taxmig migrate` (empty cache) | {first['wall']:.1f} | {first['seconds']:.1f} | "
             f"{first['encoded']:,} | {first['cached']:,} |",
             f"| second `taxmig migrate` | {second['wall']:.1f} | {second['seconds']:.1f} | {second['encoded']:,} | "
             f"{second['cached']:,} |"]
    for label, facts in runs.items():
        lines.append(f"| in-process, no cache, {label} | -- | {facts.seconds:.1f} | {facts.encoded:,} | -- |")
    notes = (f"{args.products} BigBasket products onto Google's taxonomy (5,595 paths); the same categories in both "
             f"CLI runs: {same}. Wall: the whole command in a fresh process (imports, model load, writing the CSV). "
             "In-process rows: the model already loaded, no category cache (encode cost of the category texts).")
    publish("A taxonomy embedded once: the category cache (bench/category_cache.py)", "\n".join(lines), notes,
            write=not args.no_write)


if __name__ == "__main__":
    main()
