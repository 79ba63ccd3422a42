"""The self-training knobs, one at a time, and what to do with a source category (migrate/mapping/zeroshot.py).

Every product of BigBasket (onto its two-level paths, and onto its three-level paths with inner
nodes listed) and of Instacart (onto its aisles), bundled base model, no labelled product: top-1
with the defaults and with each knob changed alone. Then BigBasket onto the three-level paths with
a source category appended to the embedded text (its top category, or category > sub_category),
whole-path labels as ``migrate`` uses them then: the word model on the products' own words or on
the words with the category appended, and the explicit source-category prior on or off. And the
floor of the neighbours' vote on random subsets of 400 and 1,500 products and on all of them.

    python bench/zeroshot_grid.py                 # appends to BENCHMARKS.md
    python bench/zeroshot_grid.py --limit 3000 --no-write
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
from bench.zeroshot_bench import bigbasket_sets, instacart_set, memo_encoder, product_texts  # noqa: E402
from migrate.mapping import zeroshot  # noqa: E402
from migrate.mapping.labels import zero_shot_labels  # noqa: E402
from migrate.mapping.scoring import ScoringParams, top_columns  # noqa: E402
from migrate.mapping.zeroshot import refine  # noqa: E402
from models import load_encoder, resolve_model  # noqa: E402

KNOBS = [dict(), dict(self_training_word_weight=0.3), dict(self_training_word_weight=1.0),
         dict(self_training_seed_share=0.3), dict(self_training_seed_share=0.7), dict(self_training_rounds=5),
         dict(self_training_label_temperature=0.02), dict(self_training_label_temperature=0.05),
         dict(self_training_neighbours=20), dict(vote_temperature=0.1), dict(self_training_rounds=0)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, help="a random subset of this many products per set")
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to BENCHMARKS.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    encode = memo_encoder(*load_encoder(resolve_model(None)))
    bigbasket = bigbasket_sets(args.limit, held_out_only=False)
    sets = {}
    for bench in (bigbasket[0], bigbasket[1], instacart_set(args.limit)):
        texts = product_texts(bench["source"])
        vectors = encode(texts)
        labels = zero_shot_labels(bench["categories"], vectors, encode)
        sims, ids = labels.search(vectors, ScoringParams().label_candidates)
        truth = np.array([bench["categories"].index(t) for t in bench["truth"]])
        sets[bench["name"]] = (sims, ids, vectors, texts, len(bench["categories"]), truth)
    lines = ["| change from the defaults | " + " | ".join(f"{n} top-1" for n in sets) + " |",
             "|---|" + "---|" * len(sets)]
    for knob in KNOBS:
        params = replace(ScoringParams(), **knob)
        cells = []
        for sims, ids, vectors, texts, n_categories, truth in sets.values():
            _, top, _ = refine(sims, ids, vectors, texts, n_categories, params)
            cells.append(f"{(top[:, 0] == truth).mean():.3f}")
        name = ", ".join(f"{k} = {v}" for k, v in knob.items()) or "defaults"
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)

    lines += ["", "| neighbours' vote floor | products per set | " + " | ".join(f"{n} labels -> self-trained"
                                                                          for n in sets) + " |",
              "|---|---|" + "---|" * len(sets)]
    rng = np.random.default_rng(0)
    for size in (400, 1500, None):
        picks = {name: (np.arange(len(v[5])) if size is None or size >= len(v[5])
                        else rng.choice(len(v[5]), size, replace=False)) for name, v in sets.items()}
        for floor in (1e-9, zeroshot.VOTE_FLOOR):
            saved, zeroshot.VOTE_FLOOR = zeroshot.VOTE_FLOOR, floor
            cells = []
            for name, (sims, ids, vectors, texts, n_categories, truth) in sets.items():
                rows = picks[name]
                _, top, _ = refine(sims[rows], ids[rows], vectors[rows], [texts[i] for i in rows], n_categories)
                cells.append(f"{(ids[rows, 0] == truth[rows]).mean():.3f} -> {(top[:, 0] == truth[rows]).mean():.3f}")
            zeroshot.VOTE_FLOOR = saved
            lines.append(f"| {floor:g} | {size or 'all'} | " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)

    three = bigbasket[1]
    source, categories = three["source"], three["categories"]
    texts = product_texts(source)
    truth = np.array([categories.index(t) for t in three["truth"]])
    paths = encode(categories)
    levels = [p.split(" > ") for p in three["truth"]]
    lines += ["", "| source category appended | word model reads | source-category prior | top-1 | first level |",
              "|---|---|---|---|---|"]
    for name, depth in (("top category", 1), ("category > sub_category", 2)):
        context = [" > ".join(parts[:depth]) for parts in levels]
        with_context = [f"{t} | {c}" for t, c in zip(texts, context)]
        vectors = encode(with_context)
        ids, sims = top_columns(vectors @ paths.T, ScoringParams().label_candidates)
        groups = np.unique(context, return_inverse=True)[1]
        for words_name, words in (("labels alone", None), ("own words", texts), ("words + category", with_context)):
            for weight in ((0.0,) if words is None else (0.0, 0.5)):
                params = replace(ScoringParams(), self_training_source_weight=weight,
                                 self_training_rounds=0 if words is None else ScoringParams().self_training_rounds)
                _, top, _ = refine(sims, ids, vectors, words or texts, len(categories), params, groups)
                first = np.mean([categories[a].split(" > ")[0] == categories[b].split(" > ")[0]
                                 for a, b in zip(top[:, 0], truth)])
                lines.append(f"| {name} | {words_name} | {weight} | {(top[:, 0] == truth).mean():.3f} | {first:.3f} |")
                print(lines[-1], flush=True)
    notes = ("Every product of each set (no split: nothing is trained on labelled products), bundled base model. "
             "Second table: whole-path label scores of the text with the source category appended (what migrate "
             "does when the source has categories), then self-training as configured.")
    publish("zero-shot: self-training knobs and the source category", "\n".join(lines), notes,
            write=not args.no_write)


if __name__ == "__main__":
    main()
