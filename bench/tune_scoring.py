"""Choose the classifier vote's weight and temperature on the target catalog's leave-one-out run.

The choice uses only what a real run has: leave-one-out accuracy on the labelled target catalog
(BigBasket benchmark split, 80%). The held-out source's top-1 is printed beside it for the record,
not used to choose. Texts are encoded once (an embedding cache in a temporary folder).

    python bench/tune_scoring.py                  # grid 0/0.3/0.5/0.7 x 0.1/0.2/0.3, appends to BENCHMARKS.md
    python bench/tune_scoring.py --limit 3000 --no-write
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import bigbasket_split, publish, write_split  # noqa: E402
from bench.migrate_bench import evaluate, label_of, unflagged_precision  # noqa: E402
from migrate.core.embedding_cache import EmbeddingCache  # noqa: E402
from migrate.mapping.pipeline import Migrator  # noqa: E402
from migrate.mapping.scoring import ScoringParams  # noqa: E402
from migrate.mapping.settings import MigrationSettings  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, help="use a random subset of this many products")
    parser.add_argument("--weights", default="0,0.3,0.5,0.7", help="classifier weights to try")
    parser.add_argument("--temperatures", default="0.1,0.2,0.3", help="classifier temperatures to try")
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to BENCHMARKS.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    weights = [float(w) for w in args.weights.split(",")]
    temperatures = [float(t) for t in args.temperatures.split(",")]
    grid = [(w, t) for w in weights for t in (temperatures if w > 0 else temperatures[:1])]

    target, source = bigbasket_split(args.limit)
    truth = dict(zip(source["index"], label_of(source)))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        target_path, source_path = write_split(Path(tmp), target, source)
        base = MigrationSettings(source=source_path, target_catalog=target_path, progress=False)
        migrator = Migrator.from_settings(base)
        with EmbeddingCache(Path(tmp) / "cache.sqlite") as cache:
            for weight, temperature in grid:
                result = migrator.run(replace(base, scoring=ScoringParams(
                    classifier_weight=weight, classifier_temperature=temperature)), cache=cache)
                s = result.summary_dict()
                right, _, unflagged, _ = evaluate(result.mapping, truth)
                rows.append((weight, temperature if weight > 0 else None, s["Leave-one-out top-1 accuracy"],
                             s["Leave-one-out unflagged share"], right.mean(), unflagged.mean(),
                             unflagged_precision(right, unflagged)))
                print(rows[-1], flush=True)
    best = max(rows, key=lambda r: r[2])
    lines = ["| classifier weight | temperature | LOO top-1 (chooses) | LOO unflagged share | source top-1 | "
             "source unflagged share | source unflagged precision |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {w} | {'—' if t is None else t} | {a:.4f} | {b:.3f} | {c:.4f} | {d:.3f} | {e:.4f} |"
              for w, t, a, b, c, d, e in rows]
    notes = (f"Target {target.height} products (leave-one-out over up to 20,000 of them), source {source.height}. "
             f"Highest leave-one-out top-1: weight {best[0]}, temperature {best[1]}. Every text is encoded "
             "once (embedding cache); run times are not measured here (see the migrate benchmark).")
    publish("tune: classifier vote weight x temperature (leave-one-out on the target)", "\n".join(lines), notes,
            write=not args.no_write)


if __name__ == "__main__":
    main()
