"""Zero-shot label scores: a whole category path as one sentence vs each path level embedded on its own.

A taxonomy-only migration (no labelled target products) rests on the label score alone. This
maps BigBasket products onto BigBasket's own category paths with the bundled base model and no
labelled products, four ways: two-level paths (category > sub_category, 99) and three-level ones
(> type, 597), each as leaves only and with the inner nodes listed as categories too (as Google's
taxonomy file lists them). ``a`` is ``ScoringParams.label_ancestor_weight``; ``a = 0`` reads the
last level alone. Zero-shot uses no labels, so the 80% target side of the migrate benchmark's
split is a fair place to choose ``a`` (the "dev" columns); the 20% source side is reported beside it.

Then the same with a source category appended to each product text, as ``taxmig migrate`` does
when the source has categories: the level above the target's last one (``category`` for
two-level targets, ``category > sub_category`` for three-level ones) -- a source taxonomy coarser
than the target. This is where the pipeline switches to whole paths.

    python bench/label_bench.py                 # whole file (encodes ~27,500 texts), appends to BENCHMARKS.md
    python bench/label_bench.py --limit 3000 --no-write
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import BIGBASKET, in_test_split, publish  # noqa: E402
from migrate.core.catalog import PATH_SEPARATOR, TEXT_SEPARATOR  # noqa: E402
from migrate.mapping.labels import CategoryLabels  # noqa: E402
from models import load_encoder, resolve_model  # noqa: E402

WEIGHTS = (0.0, 0.25, 0.5, 1.0)
CHOSEN = 0.25  # ScoringParams().label_ancestor_weight, compared with whole paths when a source category is appended
LEVELS = {2: ("category", "sub_category"), 3: ("category", "sub_category", "type")}


def top_hits(scores: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(top-1, top-3) accuracy of score rows against true column indices."""
    top = np.argsort(-scores, axis=1)[:, :3]
    return float((top[:, 0] == truth).mean()), float((top == truth[:, None]).any(axis=1).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, help="use a random subset of this many products")
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to BENCHMARKS.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    frame = pl.read_csv(BIGBASKET, infer_schema=False).filter(
        pl.col("product").is_not_null() & pl.col("type").is_not_null())
    if args.limit:
        frame = frame.sample(n=min(args.limit, frame.height), seed=0)
    texts = [TEXT_SEPARATOR.join(v.strip() for v in (p, b) if v and v.strip())
             for p, b in zip(frame["product"], frame["brand"])]
    held = np.array([in_test_split(n) for n in frame["product"]])
    model, _ = load_encoder(resolve_model(None))
    encode = lambda items: model.encode(items, batch_size=64, normalize_embeddings=True,  # noqa: E731
                                        convert_to_numpy=True, show_progress_bar=False)
    started = time.perf_counter()
    queries = encode(texts)
    seconds = time.perf_counter() - started
    with_context = {level: encode([f"{t}{TEXT_SEPARATOR}{PATH_SEPARATOR.join(v.strip() for v in values)}"
                                   for t, values in zip(texts, zip(*(frame[c].to_list() for c in columns[:-1])))])
                    for level, columns in LEVELS.items()}

    rows = []
    for level, columns in LEVELS.items():
        paths = [PATH_SEPARATOR.join(v.strip() for v in values)
                 for values in zip(*(frame[c].to_list() for c in columns))]
        leaves = sorted(set(paths))
        inner = sorted({PATH_SEPARATOR.join(p.split(PATH_SEPARATOR)[:i]) for p in leaves for i in range(1, level)})
        for listing, categories in (("leaves", leaves), ("leaves + inner nodes", sorted(leaves + inner))):
            index_of = {c: i for i, c in enumerate(categories)}
            truth = np.array([index_of[p] for p in paths])
            path_vectors = encode(categories)
            labels = CategoryLabels(categories)
            labels.fit(encode(labels.names))
            variants = {"whole path": queries @ path_vectors.T}
            for weight in WEIGHTS:
                labels.ancestor_weight = weight
                variants[f"levels, a = {weight}"] = labels.scores(queries)
            labels.ancestor_weight = CHOSEN
            context = PATH_SEPARATOR.join(LEVELS[level][:-1])
            variants[f"+ source {context}: whole path"] = with_context[level] @ path_vectors.T
            variants[f"+ source {context}: levels, a = {CHOSEN}"] = labels.scores(with_context[level])
            for name, scores in variants.items():
                dev, test = top_hits(scores[~held], truth[~held]), top_hits(scores[held], truth[held])
                rows.append((level, listing, len(categories), name, *dev, *test))
                print(rows[-1], flush=True)

    level_rows = [r for r in rows if r[3].startswith("levels")]  # no source category: chooses ``a``
    mean_dev = {name: np.mean([r[4] for r in level_rows if r[3] == name]) for name in dict.fromkeys(r[3] for r in level_rows)}
    chosen = max(mean_dev, key=mean_dev.get)
    lines = ["| levels | categories listed | categories | label text | dev top-1 | dev top-3 | "
             "held-out top-1 | held-out top-3 |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {lv} | {listing} | {n} | {name} | {d1:.3f} | {d3:.3f} | {t1:.3f} | {t3:.3f} |"
              for lv, listing, n, name, d1, d3, t1, t3 in rows]
    means = ", ".join(f"{k}: {v:.3f}" for k, v in mean_dev.items())
    notes = (f"Products: {int((~held).sum())} dev (the migrate benchmark's 80% target side) and {int(held.sum())} "
             f"held-out (its 20% source), text `product | brand`, bundled base model, no labelled products "
             f"(the label score alone picks the category). Mean dev top-1 over the four listings: {means}; "
             f"highest: {chosen}. Rows marked '+ source ...' append that source category path to every product "
             f"text (as migrate does when the source has categories). Encoding the products took {seconds:.0f} s.")
    publish("labels: zero-shot onto BigBasket's own paths, whole path vs per level", "\n".join(lines), notes,
            write=not args.no_write)


if __name__ == "__main__":
    main()
