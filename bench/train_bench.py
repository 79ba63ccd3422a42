"""Benchmark fine-tuning: train on BigBasket's train split, then base vs fine-tuned side by side on
the held-out split (the migrate benchmark's source 20%), with the TF-IDF + linear SVM baseline
in the same run.

Split by normalised product name (``train.splits``, seed 0): test 20% (exactly the migrate
benchmark's source rows), eval 10% (early stopping and checkpoints), train 70%. ``taxmig
evaluate`` maps the test products onto the train + eval products (the migrate benchmark's
target catalog) with each encoder.

    python bench/train_bench.py                            # default recipe, appends to BENCHMARKS.md
    python bench/train_bench.py --loss mnrl --max-pairs 30000 --matryoshka
    python bench/train_bench.py --max-pairs 2000 --no-write   # a quick look
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import BIGBASKET, publish, machine  # noqa: E402
from bench.migrate_bench import tfidf_svm  # noqa: E402
from train.evaluate import evaluate_models  # noqa: E402
from train.finetune import TrainConfig, train_encoder  # noqa: E402
from train.paired import paired_comparison  # noqa: E402
from train.splits import split_labels  # noqa: E402


def svm_baseline(catalog: Path) -> tuple[dict[str, bool], float]:
    """TF-IDF + linear SVM trained on train + eval, scored on test: (right or wrong per test id, seconds)."""
    from migrate.core.catalog import load_catalog

    cat = load_catalog(catalog, role="catalog", category="category,sub_category", category_required=True)
    held = split_labels(cat.texts, seed=0) == "test"
    train_t = [t for t, h in zip(cat.texts, held) if not h]
    train_y = [c for c, h in zip(cat.categories, held) if not h]
    test_t = [t for t, h in zip(cat.texts, held) if h]
    test_y = [c for c, h in zip(cat.categories, held) if h]
    test_ids = [i for i, h in zip(cat.ids, held) if h]
    preds, seconds = tfidf_svm(train_t, train_y, test_t)
    return {i: p == y for i, p, y in zip(test_ids, preds, test_y)}, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loss", default="mnrl", choices=["cosine", "cosent", "mnrl"])
    parser.add_argument("--matryoshka", action="store_true")
    parser.add_argument("--max-pairs", type=int, default=None, help="training pairs (default: the whole pair set)")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--learning-rate", type=float, default=2e-5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--evaluations", type=int, default=4)
    parser.add_argument("--output", default=None, help="model folder (default: a temporary one)")
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to BENCHMARKS.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.output) if args.output else Path(tmp) / "bench-retail"
        config = TrainConfig(loss=args.loss, matryoshka=args.matryoshka, max_pairs=args.max_pairs,
                             epochs=args.epochs, learning_rate=args.learning_rate, batch_size=args.batch_size,
                             evaluations=args.evaluations)
        started = time.perf_counter()
        trained = train_encoder(BIGBASKET, out, config, category="category,sub_category")
        total_train = time.perf_counter() - started
        t0 = time.perf_counter()
        report = evaluate_models(BIGBASKET, model=str(out), baseline=None, output_dir=Path(tmp) / "report",
                                 category="category,sub_category")
        eval_seconds = time.perf_counter() - t0
        metrics = json.loads((report.parent / "metrics.json").read_text())
        predictions = pl.read_csv(report.parent / "predictions.csv", infer_schema=False)
    svm_right, svm_seconds = svm_baseline(BIGBASKET)
    svm_top1 = float(np.mean(list(svm_right.values())))
    right = {m: (predictions[m] == predictions["category"]).to_numpy() for m in ("base", "fine-tuned")}
    svm_rows = np.array([svm_right[i] for i in predictions["id"]])
    paired = {m: paired_comparison(right[m], svm_rows) for m in right}
    base, tuned = metrics["base"], metrics["fine-tuned"]

    def f(v) -> str:
        return "—" if v is None else f"{v:.3f}"

    dims = list(tuned["matryoshka_top1"])
    header = ("| model | top-1 | top-3 | unflagged precision | coverage | pair Pearson | pair Spearman | "
              + " | ".join(f"top-1 @{d}" for d in dims) + " |\n|" + "---|" * (7 + len(dims)))
    lines = [header]
    for name, m in (("base all-MiniLM-L6-v2", base), (f"fine-tuned ({trained.metrics['train_pairs']} "
                                                     f"{'triplets' if args.loss == 'mnrl' else 'pairs'})", tuned)):
        lines.append(f"| {name} | {f(m['migrate_top1'])} | {f(m['migrate_top3'])} | {f(m['unflagged_precision'])} | "
                     f"{f(m['coverage'])} | {f(m['pearson'])} | {f(m['spearman'])} | "
                     + " | ".join(f(m["matryoshka_top1"][d]) for d in dims) + " |")
    lines.append(f"| TF-IDF + linear SVM | {svm_top1:.3f} | — | — | — | — | — | " + " | ".join("—" for _ in dims) + " |")
    table = "\n".join(lines)
    gain = {d: tuned["matryoshka_top1"][d] - base["matryoshka_top1"][d] for d in dims}
    tm = trained.metrics
    notes = (f"Loss {args.loss}{' in MatryoshkaLoss' if args.matryoshka else ''}, lr {args.learning_rate}, batch "
             f"{args.batch_size}, {args.epochs} epoch(s), max_seq_length 64, CPU ({machine()}). Training: "
             f"{tm['steps']} steps in {tm['train_seconds']:.0f} s (pair building {tm['pair_seconds']:.0f} s, "
             f"whole train step incl. model load and periodic evaluation {total_train:.0f} s); best held-out "
             f"Spearman checkpoint {tm['best_metric']}. Evaluation of both models {eval_seconds:.0f} s; TF-IDF + "
             f"SVM {svm_seconds:.0f} s. Splits (by normalised name, seed 0): {tm['splits']}; top-1/top-3 are the "
             f"migrate path on the test split against train + eval as the labelled target. Fine-tuned minus base "
             f"top-1 per Matryoshka size: " + ", ".join(f"{d}: {g * 100:+.1f} pts" for d, g in gain.items()) + ". "
             f"Paired on the same test products (exact McNemar): fine-tuned vs base: only fine-tuned right on "
             f"{metrics['paired']['only_fine_tuned']}, only base on {metrics['paired']['only_base']}, p = "
             f"{metrics['paired']['p_value']:.3g}; " + "; ".join(
                 f"{m} vs the SVM: only {m} right on {c.only_first}, only the SVM on {c.only_second}, p = {c.p_value:.3g}"
                 for m, c in paired.items()) + ".")
    publish("train: BigBasket fine-tuning, base vs fine-tuned", table, notes, write=not args.no_write)


if __name__ == "__main__":
    main()
