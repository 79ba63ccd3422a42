"""The classifier's character n-grams: what each choice costs in a first run and changes in the mapping.

The labelled-target classifier (``migrate.mapping.classifier``) reads word TF-IDF plus character
n-grams inside word boundaries (``CHAR_NGRAMS``). Its fit costs time in proportion to the
feature matrix's non-zeros, and character n-grams are most of them. Variants, each a whole
in-process migration of the held-out source onto the labelled target (vectors from one embedding
cache, target-side cache off, so only the classifier differs):

* character 3- and 4-grams (taxmig before issue 39's second step);
* character 4-grams;
* character 5-grams.

Sets: BigBasket 80/20 by subcategory (22,085 target products, 99 categories), BigBasket 80/20
by product type (the same products, 426 types: more, finer classes) and Instacart 80/20 by product
name (department > aisle; 7,325 / 1,879).

    python bench/classifier_features.py              # appends to BENCHMARKS.md
    python bench/classifier_features.py --no-write
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.classifier_folds import labelled_sets, run_variants  # noqa: E402
from bench.common import BIGBASKET, in_test_split, publish  # noqa: E402

VARIANTS = (("3- and 4-grams (before)", (3, 4)), ("4-grams (the default)", (4, 4)), ("5-grams", (5, 5)))


def type_set(tmp: Path) -> tuple[dict, dict[str, str]]:
    """BigBasket 80/20 by product type (the split of bench/common.py, products with a type)."""
    import polars as pl

    frame = pl.read_csv(BIGBASKET, infer_schema=False).select("index", "product", "brand", "type") \
        .drop_nulls(["product", "type"])
    test = pl.Series([in_test_split(n) for n in frame["product"]])
    target, source = frame.filter(~test), frame.filter(test)
    folder = tmp / "bigbasket-types"
    folder.mkdir()
    target.write_csv(folder / "target.csv")
    source.select("index", "product", "brand").write_csv(folder / "source.csv")
    return (dict(source=folder / "source.csv", target_catalog=folder / "target.csv", target_category="type"),
            dict(zip(source["index"], source["type"])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import migrate.mapping.classifier as classifier
    from bench.migrate_bench import unflagged_precision

    rows = []
    default = classifier.CHAR_NGRAMS

    def apply(ngrams: tuple[int, int]) -> dict:
        classifier.CHAR_NGRAMS = ngrams
        return {}

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        sets = labelled_sets(tmp)
        sets["BigBasket 80/20 by type"] = type_set(tmp)
        for name, label, hit, unflagged, result, seconds in run_variants(sets, VARIANTS, apply, tmp):
            rows.append(f"| {name} | {label} | {hit.mean():.4f} | {unflagged_precision(hit, unflagged):.4f} | "
                        f"{unflagged.mean():.4f} | {result.thresholds['min_confidence']} | "
                        f"{result.facts.stage_seconds.get('fitting the classifier', 0.0):.1f} | {seconds:.1f} |")
            print(rows[-1], flush=True)
        classifier.CHAR_NGRAMS = default
    table = ("| set | character n-grams | top-1 | unflagged precision | unflagged share | min_confidence | "
             "classifier s | run s |\n|---|---|---:|---:|---:|---:|---:|---:|\n" + "\n".join(rows))
    notes = ("Each row a whole in-process migration of the source onto the labelled target with the default "
             "encoder (fp32 here), target-side cache off; the texts' vectors read from one embedding cache filled "
             "by a first, uncounted run per set. Unflagged precision and share measured on the source's true "
             "categories; min_confidence chosen on leave-one-out for precision 0.97. Classifier seconds: the "
             "features and the folds' fits (a process pool of 2 from 8,000 target products).")
    publish("classifier: character n-grams", table, notes, write=not args.no_write)


if __name__ == "__main__":
    main()
