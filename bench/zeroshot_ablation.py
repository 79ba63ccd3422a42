"""What each zero-shot lever adds, one at a time, on six product sets and four taxonomies.

Every product of each set, bundled base model, no labelled product; top-1 of the label scores
alone and after self-training (:mod:`migrate.mapping.zeroshot`) as each lever is added:

- **plain names**: each path level embedded as it is (``migrate.mapping.labels.CategoryLabels``);
- **+ centering**: each category's mean score over the products x 0.5 subtracted;
- **+ templates**: names embedded as "{}", "{} products", "category: {}" (mean), i.e. what
  ``migrate`` does on a taxonomy-only run (``migrate.mapping.labels.zero_shot_labels``);
- **+ most specific**: an inner category's probability handed down to its candidate descendants,
  backing off to the inner category where no child holds half of the evidence under it
  (``migrate.mapping.zeroshot.prefer_specific``; changes nothing on a taxonomy without inner nodes).

Sets: BigBasket onto its 99 two-level paths, onto its three-level paths with inner nodes listed
(707), onto its 11 top categories; Instacart onto its aisles with departments listed (151), onto
its 19 departments; Wayfair WANDS queries onto their 188 query classes.

    python bench/zeroshot_ablation.py             # appends to BENCHMARKS.md
    python bench/zeroshot_ablation.py --limit 2000 --no-write
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import publish  # noqa: E402
from bench.zeroshot_bench import (bigbasket_sets, instacart_set, memo_encoder, product_texts,  # noqa: E402
                                  wands_set)
from migrate.mapping.labels import CategoryLabels  # noqa: E402
from migrate.mapping.scoring import ScoringParams  # noqa: E402
from migrate.mapping.zeroshot import listed_ancestors, refine  # noqa: E402
from models import load_encoder, resolve_model  # noqa: E402


def coarse(bench: dict, name: str) -> dict:
    """The same products onto the first level of the set's paths."""
    truth = [t.split(" > ")[0] for t in bench["truth"]]
    return dict(bench, name=name, truth=truth, categories=sorted(set(truth)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, help="a random subset of this many products per set")
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to BENCHMARKS.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    encode = memo_encoder(*load_encoder(resolve_model(None)))
    defaults = ScoringParams()
    bigbasket = bigbasket_sets(args.limit, held_out_only=False)
    instacart = instacart_set(args.limit)
    sets = [bigbasket[0], bigbasket[1], coarse(bigbasket[0], "bigbasket-top"), instacart,
            coarse(instacart, "instacart-departments"), wands_set(args.limit)]
    steps = [("plain names", (), 0.0, False), ("+ centering", (), defaults.zero_shot_label_centering, False),
             ("+ templates (migrate's labels)", defaults.zero_shot_label_templates,
              defaults.zero_shot_label_centering, False),
             ("+ most specific, back-off (migrate)", defaults.zero_shot_label_templates, defaults.zero_shot_label_centering,
              True)]
    lines = ["| set | products | categories | " + " | ".join(f"{s[0]}: labels / self-trained" for s in steps)
             + " | rows backed off (PARENT_BACKOFF) |", "|---|---|---|" + "---|" * (len(steps) + 1)]
    for bench in sets:
        texts = product_texts(bench["source"])
        vectors = encode(texts)
        categories = bench["categories"]
        truth = np.array([categories.index(t) for t in bench["truth"]])
        ancestors = listed_ancestors(categories)
        cells = []
        for _, templates, centering, specific in steps:
            labels = CategoryLabels(categories, defaults.label_ancestor_weight, templates=templates or ("{}",))
            labels.fit(encode(labels.texts)).center(vectors, centering)
            sims, ids = labels.search(vectors, defaults.label_candidates)
            alone = refine(sims, ids, vectors, texts, len(categories), replace(defaults, self_training_rounds=0),
                           ancestors=ancestors if specific else None)[1]
            _, trained, report = refine(sims, ids, vectors, texts, len(categories), defaults,
                                        ancestors=ancestors if specific else None)
            cells.append(f"{(alone[:, 0] == truth).mean():.3f} / {(trained[:, 0] == truth).mean():.3f}")
        cells.append(f"{report.backed_off.mean():.3f}")  # the last step is migrate's
        lines.append(f"| {bench['name']} | {len(truth)} | {len(categories)} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    notes = ("Every product of each set (nothing here is trained on labelled products; BigBasket is not split), "
             "bundled base model, the product text as migrate reads it (product | brand). Left cell: label scores "
             "alone (--self-training-rounds 0); right: self-trained (3 rounds), the default. The most-specific step "
             "runs after self-training, so it leaves the left cell as it was.")
    publish("zero-shot: what each label lever adds", "\n".join(lines), notes, write=not args.no_write)


if __name__ == "__main__":
    main()
