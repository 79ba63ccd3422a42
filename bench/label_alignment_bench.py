"""Label alignment (``taxmig train --objective labels``): does it transfer to a taxonomy the model never saw?

Trains the bundled base model on one retailer's (product, category path) pairs -- whole paths, and
whole paths plus leaf names (``--leaf-names``) on the same pair budget -- then maps another
retailer's products onto that retailer's own category paths zero-shot (no labelled target
products; the label score alone picks the category), base model and fine-tuned ones in the same run:

1. trained on BigBasket (``product | brand`` -> ``category > sub_category``), mapped onto Instacart:
   every product outside the departments ``missing`` / ``other`` (product name only) onto the 132
   ``department > aisle`` paths with the 19 departments listed as categories too;
2. trained on Instacart (``product name`` -> ``department > aisle``), mapped onto BigBasket: the
   products of the migrate benchmark's held-out 20% (``product | brand``) onto the 99
   ``category > sub_category`` paths (leaves only).

Each mapping is scored two ways: cosine with the whole path ("whole path"), and the level-wise label
score the mapping code uses for a product's own text (``migrate.mapping.labels.CategoryLabels``: the
category's own name + 0.25 x its ancestors' names, "by level"). Paired exact McNemar tests compare
each fine-tuned model's top-1 with the base model's on the same products. Models are written under
a temporary folder and deleted afterwards.

    python bench/label_alignment_bench.py --threads 1                  # appends to BENCHMARKS.md
    python bench/label_alignment_bench.py --max-pairs 1000 --limit 2000 --no-write   # a quick look
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import BIGBASKET, DATA, in_test_split, publish  # noqa: E402
from migrate.core.catalog import PATH_SEPARATOR, TEXT_SEPARATOR  # noqa: E402
from migrate.mapping.labels import CategoryLabels  # noqa: E402
from models import load_encoder, resolve_model  # noqa: E402
from train.finetune import TrainConfig, train_encoder  # noqa: E402
from train.label_alignment import top_accuracy  # noqa: E402
from train.paired import paired_comparison  # noqa: E402

INSTACART = DATA / "instacart"
NO_CATEGORY = ("missing", "other")


def instacart() -> pl.DataFrame:
    """Instacart products with their department and aisle names, departments missing/other left out."""
    products = pl.read_csv(INSTACART / "products.csv", infer_schema=False)
    aisles = pl.read_csv(INSTACART / "aisles.csv", infer_schema=False)
    departments = pl.read_csv(INSTACART / "departments.csv", infer_schema=False)
    return (products.join(aisles, on="aisle_id").join(departments, on="department_id")
            .filter(~pl.col("department").is_in(NO_CATEGORY) & pl.col("product_name").is_not_null())
            .select("product_id", "product_name", "department", "aisle").sort(pl.col("product_id").cast(pl.Int64)))


def bigbasket() -> pl.DataFrame:
    return pl.read_csv(BIGBASKET, infer_schema=False).filter(pl.col("product").is_not_null()).select(
        "index", "product", "brand", "category", "sub_category")


def target_task(name: str, frame: pl.DataFrame, limit: int | None) -> tuple[list[str], list[str], np.ndarray]:
    """(product texts, categories listed, true category index per product) for the zero-shot mapping."""
    if name == "instacart":
        texts = [t.strip() for t in frame["product_name"]]
        paths = [f"{d}{PATH_SEPARATOR}{a}" for d, a in zip(frame["department"], frame["aisle"])]
        categories = sorted(set(paths) | set(frame["department"]))
    else:
        paths = [f"{c.strip()}{PATH_SEPARATOR}{s.strip()}" for c, s in zip(frame["category"], frame["sub_category"])]
        categories = sorted(set(paths))  # every path of the file, not only those of the mapped products
        held = np.array([in_test_split(n) for n in frame["product"]])
        frame = frame.filter(pl.Series(held))
        paths = [p for p, h in zip(paths, held) if h]
        texts = [TEXT_SEPARATOR.join(v.strip() for v in (p, b) if v and v.strip())
                 for p, b in zip(frame["product"], frame["brand"])]
    if limit and len(texts) > limit:
        keep = np.sort(np.random.default_rng(0).choice(len(texts), limit, replace=False))
        texts, paths = [texts[i] for i in keep], [paths[i] for i in keep]
    index = {c: i for i, c in enumerate(categories)}
    return texts, categories, np.array([index[p] for p in paths])


def zero_shot(model, texts: list[str], categories: list[str], truth: np.ndarray) -> dict[str, np.ndarray]:
    """Per product: is the top-1 right / is the truth in the top-3, by whole path and by level."""
    encode = lambda items: model.encode(items, batch_size=64, normalize_embeddings=True,  # noqa: E731
                                        convert_to_numpy=True, show_progress_bar=False)
    queries = encode(texts)
    labels = CategoryLabels(categories)
    labels.fit(encode(labels.names))
    out = {}
    for kind, scores in (("path", queries @ encode(categories).T), ("level", labels.scores(queries))):
        top = np.argsort(-scores, axis=1)[:, :3]
        out[f"{kind}_top1"], out[f"{kind}_top3"] = top[:, 0] == truth, (top == truth[:, None]).any(axis=1)
        assert abs(top_accuracy(scores, truth)[0] - out[f"{kind}_top1"].mean()) < 1e-9
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-pairs", type=int, default=4000, help="training pairs per run (1 epoch)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-eval", type=int, default=1000,
                        help="held-out products of the source's eval split scored during training")
    parser.add_argument("--limit", type=int, help="map a seeded random subset of this many target products")
    parser.add_argument("--threads", type=int, help="torch CPU threads (1 on a shared 2-core machine)")
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to BENCHMARKS.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    frames = {"bigbasket": bigbasket(), "instacart": instacart()}
    columns = {"bigbasket": dict(id="index", text="product,brand", category="category,sub_category"),
               "instacart": dict(id="product_id", text="product_name", category="department,aisle")}
    base, _ = load_encoder(resolve_model(None))
    rows, notes = [], []
    with tempfile.TemporaryDirectory(prefix="label-alignment-") as tmp:
        for source, target in (("bigbasket", "instacart"), ("instacart", "bigbasket")):
            catalog = Path(tmp) / f"{source}.csv"
            frames[source].write_csv(catalog)
            texts, categories, truth = target_task(target, frames[target], args.limit)
            started = time.perf_counter()
            base_hits = zero_shot(base, texts, categories, truth)
            notes.append(f"{source} -> {target}: {len(texts)} products, {len(categories)} categories; "
                         f"base model mapped in {time.perf_counter() - started:.0f} s")
            results = [("base", base_hits, None, None)]
            for variant, leaf_names in (("labels: whole paths", False), ("labels: paths + leaf names", True)):
                out = Path(tmp) / f"{source}-{'leaf' if leaf_names else 'path'}"
                config = TrainConfig(objective="labels", leaf_names=leaf_names, max_pairs=args.max_pairs,
                                     batch_size=args.batch_size, epochs=1, max_seq_length=64, seed=0,
                                     max_eval_pairs=args.max_eval)
                result = train_encoder(catalog, out, config, **columns[source])
                model, _ = load_encoder(resolve_model(str(out)))
                ev = result.metrics["eval"]
                key = ev["primary_metric"]
                results.append((variant, zero_shot(model, texts, categories, truth), (ev["before"][key], ev["after"][key]),
                                result.metrics))
                print(variant, source, "->", target, {k: round(float(v.mean()), 4) for k, v in results[-1][1].items()},
                      flush=True)
            for variant, hits, own, metrics in results:
                tests = {kind: paired_comparison(hits[f"{kind}_top1"], base_hits[f"{kind}_top1"])
                         for kind in ("path", "level")} if own else {}
                rows.append((source, target, variant, *(float(hits[k].mean()) for k in
                                                        ("path_top1", "path_top3", "level_top1", "level_top3")),
                             tests, own, metrics))

    lines = ["| trained on | mapped zero-shot onto | model | whole path top-1 | top-3 | by level top-1 | top-3 | "
             "vs base, top-1 (only this / only base, p) | own held-out path top-1 | training |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for source, target, variant, p1, p3, l1, l3, tests, own, metrics in rows:
        paired = "; ".join(f"{kind}: {t.only_first} / {t.only_second}, p = {t.p_value:.2g}" for kind, t in tests.items())
        held = f"{own[0]:.3f} -> {own[1]:.3f}" if own else ""
        train = (f"{metrics['train_pairs']} pairs, {metrics['steps']} steps, {metrics['train_seconds']:.0f} s"
                 if metrics else "")
        lines.append(f"| {source} | {target} | {variant} | {p1:.3f} | {p3:.3f} | {l1:.3f} | {l3:.3f} | {paired} | "
                     f"{held} | {train} |")
    notes_text = ("Zero-shot: no labelled product of the target taxonomy is used; the label score alone picks the "
                  "category. Each fine-tuned model: `taxmig train --objective labels` (with `--leaf-names` for the "
                  f"second), {args.max_pairs} pairs of the source's train split, 1 epoch, batch {args.batch_size}, "
                  "max_seq_length 64, learning rate 2e-5, seed 0, best checkpoint by the source's own held-out "
                  f"whole-path top-1 (column 'own held-out': base -> fine-tuned, eval split, at most {args.max_eval} "
                  "products). "
                  + "; ".join(notes) + ".")
    publish("label alignment: train on one taxonomy's (product, path) pairs, map zero-shot onto another",
            "\n".join(lines), notes_text, write=not args.no_write)


if __name__ == "__main__":
    main()
