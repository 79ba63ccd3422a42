"""Onto a taxonomy, a nightly run self-trains its new products among a context, not the whole catalog:
how much accuracy does that cost them, and how much time does it save?

For each zero-shot set of bench/zeroshot_bench.py (every BigBasket product onto its two- and
three-level paths, Instacart onto its aisles; the truth kept aside), 1% of the products (seeded)
(``--share``) are held back as the night's new products. Night 1 maps the other 99% and keeps its scores
(``keep_scores``, as ``taxmig reconcile`` does); night 2 maps all of them with those scores kept,
so only the new 1% are scored, self-trained among a context of ``--contexts`` products
(``migrate.mapping.zeroshot.self_training_context``). Beside it, in the same run: the whole catalog
self-trained again (what ``--rescore-all`` does). Reported per set: the new products' top-1 both
ways, how often the two agree, and the seconds of night 2.

    python bench/zeroshot_incremental.py                  # appends to BENCHMARKS.md
    python bench/zeroshot_incremental.py --contexts 2000,5000 --no-write
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import publish  # noqa: E402
from bench.zeroshot_bench import bigbasket_sets, instacart_set  # noqa: E402
from migrate.core.embedding_cache import EmbeddingCache  # noqa: E402
from migrate.core.encoder import EncoderSettings, load_model  # noqa: E402
from migrate.mapping import pipeline  # noqa: E402
from migrate.mapping.pipeline import Migrator  # noqa: E402
from migrate.mapping.settings import MigrationSettings  # noqa: E402

SHARE = 0.01


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contexts", default=str(pipeline.SELF_TRAINING_CONTEXT),
                        help="comma-separated context sizes to compare (default: the shipped one)")
    parser.add_argument("--share", type=float, default=SHARE, help="share of the products new on night 2")
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to BENCHMARKS.md")
    args = parser.parse_args()
    contexts = [int(c) for c in args.contexts.split(",")]
    migrator = Migrator(load_model(EncoderSettings()))
    # every BigBasket product (27k, the size of bench/reconcile_bench.py's taxonomy night), and Instacart
    sets = [b for b in bigbasket_sets(None, held_out_only=False) if b["name"] != "bigbasket-3+top"] + \
        [instacart_set(None)]
    lines = ["| set | products | new (scored) | context | new top-1, context | new top-1, whole catalog | agree | "
             "night 2 s, context | night 2 s, whole catalog |", "|---|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache = EmbeddingCache(tmp / "cache.sqlite")
        for bench in sets:
            source, truth = bench["source"], np.array(bench["truth"])
            n = source.height
            new = np.sort(np.random.default_rng(0).choice(n, size=max(1, round(n * args.share)), replace=False))
            old = np.setdiff1d(np.arange(n), new)
            order = np.concatenate([old, new])  # a night appends its new products
            taxonomy = tmp / f"{bench['name']}.txt"
            taxonomy.write_text("\n".join(bench["categories"]) + "\n")
            night1, night2 = tmp / f"{bench['name']}-1.csv", tmp / f"{bench['name']}-2.csv"
            source[old].write_csv(night1)
            source[order].write_csv(night2)
            truth_new = truth[new]

            def settings(path: Path) -> MigrationSettings:
                return MigrationSettings(source=path, target_taxonomy=taxonomy, progress=False)

            kept = migrator.run(settings(night1), cache=cache, keep_scores=True).kept_scores
            started = time.perf_counter()
            whole = migrator.run(settings(night2), cache=cache)
            whole_s = time.perf_counter() - started
            whole_new = np.array(whole.mapping["target_category"].to_list()[len(old):])
            for size in contexts:
                pipeline.SELF_TRAINING_CONTEXT = size
                started = time.perf_counter()
                night = migrator.run(settings(night2), cache=cache, kept=kept)
                night_s = time.perf_counter() - started
                kept_count = night.facts.scores_kept
                # a new product with the text of an old one (BigBasket lists some twice) keeps its twin's scores
                assert kept_count >= len(old), (kept_count, len(old))
                context_new = np.array(night.mapping["target_category"].to_list()[len(old):])
                lines.append(f"| {bench['name']} | {n} | {len(new)} ({n - kept_count}) | {size} | {np.mean(context_new == truth_new):.3f} | "
                             f"{np.mean(whole_new == truth_new):.3f} | {np.mean(context_new == whole_new):.3f} | "
                             f"{night_s:.1f} | {whole_s:.1f} |")
                print(lines[-1], flush=True)
    notes = ("The bundled model; the embedding cache warm for both night-2 runs (encoding left out: what is "
             "compared is scoring). 'agree': share of the new products given the same category both ways. "
             f"Every product of BigBasket and of Instacart; {args.share:.0%} held back, seed 0.")
    publish("zero-shot: a night's new products self-trained among a context instead of the whole catalog",
            "\n".join(lines), notes, write=not args.no_write)


if __name__ == "__main__":
    main()
