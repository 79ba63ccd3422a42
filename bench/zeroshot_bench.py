"""Zero-shot benchmark: a catalog onto a taxonomy in which no product is labelled, plain baseline beside.

Each set maps real products onto real category paths whose answers are known but never given to
the method (the source files carry no category column unless the set says so):

- ``bigbasket-2``: BigBasket's held-out 20% (the migrate benchmark's source, split by normalised
  name) onto BigBasket's 99 two-level paths ``category > sub_category``, leaves only;
- ``bigbasket-3``: the same products onto the three-level ``category > sub_category > type`` paths,
  with every inner node listed as a category too (as Google's file lists them);
- ``bigbasket-3+top``: the same, the source carrying BigBasket's 11 top categories as its own
  (coarser) category, appended to the text as ``migrate`` does by default;
- ``instacart``: Instacart's products (``missing``/``other`` left out) onto its 132
  ``department > aisle`` paths with the 19 departments listed too. Nothing was tuned on it;
- ``wands``: Wayfair's 474 WANDS search queries onto their 188 flat query classes (furniture).

Methods, one run: **plain** -- embed each product and each whole path with the same encoder,
take the nearest path; **labels** -- ``taxmig migrate --self-training-rounds 0`` (level-wise label
scores alone); **taxmig** -- ``taxmig migrate`` as it runs out of the box (self-training); where
the source has a category, also taxmig with the source-category prior (``self_training_source_weight``
0.5, off by default). Per
row: top-1, top-3, first-level accuracy, unflagged share and its precision, ECE of the
confidence, seconds. Texts are encoded once per set through an embedding cache; the speed row
times an uncached ``taxmig`` run against the raw encode of the same texts.

    python bench/zeroshot_bench.py                    # appends to BENCHMARKS.md
    python bench/zeroshot_bench.py --limit 2000 --no-write
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import BIGBASKET, DATA, in_test_split, instacart_products, publish  # noqa: E402
from migrate.core.catalog import PATH_SEPARATOR  # noqa: E402
from migrate.core.embedding import Embedder  # noqa: E402
from migrate.core.embedding_cache import EmbeddingCache  # noqa: E402
from migrate.core.encoder import Encoder  # noqa: E402
from migrate.mapping.calibration import expected_calibration_error  # noqa: E402
from migrate.mapping.pipeline import Migrator
from migrate.mapping.scoring import ScoringParams  # noqa: E402
from migrate.mapping.settings import MigrationSettings  # noqa: E402
from models import load_encoder, resolve_model  # noqa: E402


def product_texts(source: pl.DataFrame) -> list[str]:
    """``product | brand`` (the product alone without a brand column), as migrate reads the files."""
    brands = source["brand"] if "brand" in source.columns else [None] * source.height
    return [f"{p} | {b.strip()}" if b and b.strip() else p for p, b in zip(source["product"], brands)]


def memo_encoder(model, fingerprint: str):
    """``encode(texts)`` through migrate's Embedder with an in-memory cache: a text is encoded once
    per run however many sets or variants ask for it."""
    embedder = Embedder(model, progress=False, cache=EmbeddingCache(":memory:"), cache_key=fingerprint)
    return lambda texts: embedder.encode(list(texts))


def with_inner_nodes(paths: list[str]) -> list[str]:
    """The distinct paths plus every ancestor of each, as a taxonomy file lists them."""
    out = set(paths)
    for p in paths:
        levels = p.split(PATH_SEPARATOR)
        out.update(PATH_SEPARATOR.join(levels[:i]) for i in range(1, len(levels)))
    return sorted(out)


def bigbasket_sets(limit: int | None, held_out_only: bool = True) -> list[dict]:
    """The BigBasket sets: its held-out 20% (or every product) and the truth kept aside."""
    frame = pl.read_csv(BIGBASKET, infer_schema=False).filter(
        pl.col("product").is_not_null() & pl.col("type").is_not_null())
    if held_out_only:
        frame = frame.filter(pl.Series([in_test_split(n) for n in frame["product"]]))
    if limit:
        frame = frame.sample(n=min(limit, frame.height), seed=0)
    strip = lambda col: [v.strip() for v in frame[col]]  # noqa: E731
    c1, c2, c3 = strip("category"), strip("sub_category"), strip("type")
    two = [f"{a} > {b}" for a, b in zip(c1, c2)]
    three = [f"{a} > {b} > {c}" for a, b, c in zip(c1, c2, c3)]
    source = pl.DataFrame({"index": frame["index"], "product": frame["product"], "brand": frame["brand"]})
    all_two = pl.read_csv(BIGBASKET, infer_schema=False).filter(pl.col("sub_category").is_not_null())
    two_paths = sorted({f"{a.strip()} > {b.strip()}" for a, b in zip(all_two["category"], all_two["sub_category"])})
    all_three = all_two.filter(pl.col("type").is_not_null())
    three_paths = with_inner_nodes([f"{a.strip()} > {b.strip()} > {c.strip()}" for a, b, c in
                                    zip(all_three["category"], all_three["sub_category"], all_three["type"])])
    return [
        dict(name="bigbasket-2", source=source, truth=two, categories=two_paths, source_category=None),
        dict(name="bigbasket-3", source=source, truth=three, categories=three_paths, source_category=None),
        dict(name="bigbasket-3+top", source=source.with_columns(pl.Series("category", c1)), truth=three,
             categories=three_paths, source_category="category"),
    ]


def instacart_set(limit: int | None) -> dict:
    frame = instacart_products(limit)
    truth = [f"{d} > {a}" for d, a in zip(frame["department"], frame["aisle"])]
    source = pl.DataFrame({"id": frame["product_id"], "product": frame["product_name"]})
    return dict(name="instacart", source=source, truth=truth, categories=with_inner_nodes(truth),
                source_category=None)


def wands_set(limit: int | None) -> dict:
    """Wayfair's WANDS search queries onto their 188 flat query classes (furniture and decor, not
    grocery; short noisy texts). Nothing was tuned on it."""
    frame = pl.read_csv(DATA / "wands" / "query.csv", separator="\t").filter(pl.col("query_class").is_not_null())
    if limit:
        frame = frame.sample(n=min(limit, frame.height), seed=0)
    truth = frame["query_class"].to_list()
    return dict(name="wands", source=pl.DataFrame({"id": frame["query_id"], "product": frame["query"]}),
                truth=truth, categories=sorted(set(truth)), source_category=None)


def score_rows(name: str, method: str, predicted: list[str], alternatives: list[list[str]], truth: list[str],
               confidence: np.ndarray | None, unflagged: np.ndarray | None, seconds: float) -> tuple:
    right = np.array([p == t for p, t in zip(predicted, truth)])
    top3 = np.array([t in alts for alts, t in zip(alternatives, truth)])
    first = np.array([p.split(PATH_SEPARATOR)[0] == t.split(PATH_SEPARATOR)[0] for p, t in zip(predicted, truth)])
    share = precision = ece = float("nan")
    if unflagged is not None:
        share = float(unflagged.mean())
        precision = float(right[unflagged].mean()) if unflagged.any() else float("nan")
    if confidence is not None:
        ece = expected_calibration_error(confidence, right)
    return (name, method, len(truth), right.mean(), top3.mean(), first.mean(), share, precision, ece, seconds)


def plain_baseline(encode, texts: list[str], categories: list[str]) -> tuple[list[str], list[list[str]], float]:
    started = time.perf_counter()
    sims = encode(texts) @ encode(categories).T
    top = np.argsort(-sims, axis=1)[:, :3]
    names = np.asarray(categories, dtype=object)
    return list(names[top[:, 0]]), [list(names[row]) for row in top], time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, help="a random subset of this many products per set")
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to BENCHMARKS.md")
    parser.add_argument("--speed-only", action="store_true", help="only the uncached speed measurement")
    parser.add_argument("--model", default=None, help="encoder (default: the bundled base model), e.g. a folder "
                                                      "written by 'taxmig train --objective labels'")
    parser.add_argument("--sets", default=None, help="comma-separated set names to run (default: all)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    ref = resolve_model(args.model)
    model, fingerprint = load_encoder(ref)
    migrator = Migrator(Encoder(model, ref.name, fingerprint))
    rows, speed = [], ""
    with tempfile.TemporaryDirectory() as tmp:
        cache = EmbeddingCache(Path(tmp) / "cache.sqlite")
        chosen = set(args.sets.split(",")) if args.sets else None
        for bench in ([] if args.speed_only else [*bigbasket_sets(args.limit), instacart_set(args.limit),
                                                   wands_set(args.limit)]):
            if chosen is not None and bench["name"] not in chosen:
                continue
            source_path, taxonomy_path = Path(tmp) / f"{bench['name']}.csv", Path(tmp) / f"{bench['name']}.txt"
            bench["source"].write_csv(source_path)
            taxonomy_path.write_text("\n".join(bench["categories"]) + "\n")
            texts_model = None
            methods = [("labels (no self-training)", replace(ScoringParams(), self_training_rounds=0)),
                       ("taxmig", ScoringParams())]
            if bench["source_category"]:
                methods.append(("taxmig + source-category prior 0.5",
                                replace(ScoringParams(), self_training_source_weight=0.5)))
            for method, scoring in methods:
                rounds = scoring.self_training_rounds
                settings = MigrationSettings(source=source_path, target_taxonomy=taxonomy_path,
                                             source_category=bench["source_category"], progress=False,
                                             scoring=scoring)
                started = time.perf_counter()
                result = migrator.run(settings, cache=cache)
                seconds = time.perf_counter() - started
                mapping = result.mapping.sort("source_row")
                alts = [list(r) for r in zip(mapping["target_category"], mapping["alt1_category"],
                                             mapping["alt2_category"])]
                rows.append(score_rows(bench["name"], method, mapping["target_category"].to_list(), alts,
                                       bench["truth"], mapping["confidence"].to_numpy(),
                                       ~mapping["needs_review"].to_numpy(), seconds))
                print(rows[-1], flush=True)
                texts_model = [t for t in mapping["source_text"]]
            predicted, alts, seconds = plain_baseline(memo_encoder(model, fingerprint), texts_model,
                                                      bench["categories"])
            rows.append(score_rows(bench["name"], "plain (nearest whole path)", predicted, alts, bench["truth"],
                                   None, None, seconds))
            print(rows[-1], flush=True)
        if chosen is not None:
            speed = "Speed not measured (--sets)."
        # speed: an uncached run of the default method against the raw encode of the same texts
        if chosen is None or args.speed_only:
            bench = instacart_set(args.limit)
            source_path, taxonomy_path = Path(tmp) / "speed.csv", Path(tmp) / "speed.txt"
            bench["source"].write_csv(source_path)
            taxonomy_path.write_text("\n".join(bench["categories"]) + "\n")
            n = bench["source"].height
            ratios = []
            for _ in range(2):  # twice, alternating: timings on 2 shared cores are noisy
                started = time.perf_counter()
                model.encode(bench["source"]["product"].to_list(), batch_size=64, normalize_embeddings=True,
                             convert_to_numpy=True, show_progress_bar=False)
                raw = time.perf_counter() - started
                started = time.perf_counter()
                migrator.run(MigrationSettings(source=source_path, target_taxonomy=taxonomy_path, progress=False))
                full = time.perf_counter() - started
                ratios.append((n / raw, n / full))
            speed = "Speed (instacart, uncached, two alternating runs): " + "; ".join(
                f"raw encode {r:.0f} products/s, `taxmig migrate` end to end {f:.0f} products/s = {f / r:.2f}x"
                for r, f in ratios) + "."
            print(speed)
            if args.speed_only:
                publish("zero-shot: speed of a self-trained run against the raw encode", "", speed,
                        write=not args.no_write)
                return

    lines = ["| set | method | products | top-1 | top-3 | first level | unflagged share | unflagged precision "
             "| ECE | seconds |", "|---|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda v: "n/a" if isinstance(v, float) and np.isnan(v) else f"{v:.3f}"  # noqa: E731
    lines += [f"| {s} | {m} | {n} | {t1:.3f} | {t3:.3f} | {fl:.3f} | {fmt(sh)} | {fmt(pr)} | {fmt(ece)} | {sec:.1f} |"
              for s, m, n, t1, t3, fl, sh, pr, ece, sec in rows]
    notes = (f"Model: {ref.name}; no labelled product of the target used. Sets as in the script's docstring. The first taxmig "
             f"row of a set includes encoding; later rows read the texts from the embedding cache it filled (the "
             f"plain baseline's seconds include its own encode). {speed} Unflagged: a self-trained run flags every "
             f"row unless --min-confidence is given (see the zero-shot calibration table for why).")
    publish("zero-shot: a catalog onto a taxonomy nobody labelled", "\n".join(lines), notes,
            write=not args.no_write)


if __name__ == "__main__":
    main()
