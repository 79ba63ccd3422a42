"""When the classifier's fits are worth a process pool: ``fit_with_out_of_fold_votes`` (the final
fit and three folds' fits) in worker processes, one per core, against in this process, on
BigBasket samples of growing size (names as texts, subcategories as classes, a 1,000-row
calibration sample). Both ways must give the same votes; the crossover sets
``migrate.mapping.classifier.POOL_FROM``.

    python bench/classifier_pool.py
    python bench/classifier_pool.py --sizes 400,2000 --repeats 1 --no-write
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import BIGBASKET, publish  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="400,2000,5000,7000,10000,15000")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each way, alternating; the best is kept")
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to BENCHMARKS.md")
    args = parser.parse_args()

    import numpy as np
    import polars as pl

    from migrate.mapping.classifier import POOL_FROM, fit_with_out_of_fold_votes

    cores = os.cpu_count() or 1
    frame = pl.read_csv(BIGBASKET, infer_schema=False).drop_nulls(["product", "sub_category"])
    lines = [f"| target products | pool of {cores} processes, s | in this process, s | same votes |",
             "|---|---|---|---|"]
    for n in (int(s) for s in args.sizes.split(",")):
        rows = frame.sample(n, seed=1)
        texts = rows["product"].to_list()
        cats = rows["sub_category"].cast(pl.Categorical).to_physical().to_numpy().astype(np.int64)
        sample = np.arange(0, n, max(1, n // 1000))[:1000]
        groups = np.arange(n)
        best = {cores: float("inf"), 1: float("inf")}
        votes = {}
        for _ in range(args.repeats):
            for workers in (cores, 1):
                started = time.perf_counter()
                _, votes[workers] = fit_with_out_of_fold_votes(texts, cats, sample, groups, top=3, temperature=0.3,
                                                               workers=workers)
                best[workers] = min(best[workers], time.perf_counter() - started)
        same = all(np.array_equal(a, b) for a, b in zip(votes[cores], votes[1]))
        lines.append(f"| {n:,} | {best[cores]:.2f} | {best[1]:.2f} | {'yes' if same else 'NO'} |")
        print(lines[-1], flush=True)
    notes = (f"Best of {args.repeats} alternating runs each. `POOL_FROM` is {POOL_FROM:,}: below it taxmig fits "
             "in its own process.")
    publish("classifier: process pool against in-process fits", "\n".join(lines), notes, write=not args.no_write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
