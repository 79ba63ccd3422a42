"""Review in rounds: a simulated reviewer answers what each round asks, and taxmig learns at once.

A reviewer who knows the answers answers the first ``--ask`` rows the workbook asks for (the
Review sheet's ``question`` rows, :attr:`MigrationResult.questions`), round after round; after
each round every undecided product is mapped again with the decisions so far
(:mod:`migrate.mapping.feedback`), exactly as ``taxmig review apply ... --next`` does, from
embeddings cached once. Sets, onto taxonomies in which no product is labelled:

- ``instacart``: Instacart's products onto its ``department > aisle`` paths, the source carrying
  its department (bench/review_effort.py's set);
- ``bigbasket``: BigBasket's held-out 20% onto its three-level paths (inner nodes listed), the
  source carrying its 11 top categories (bench/zeroshot_bench.py's ``bigbasket-3+top``).

Per round: share decided, top-1 of the undecided rows, the unflagged share of the undecided rows
and its precision (against the truth) at ``--target-precision``, seconds of the round's re-map.
Question strategies side by side: **taxmig** (the questions the tool asks) and **random** (the
same number of undecided rows drawn at random); with ``--before``, also **taxmig, before**: the
tool's questions and a mix without the features named in ``--before`` (of
:data:`migrate.mapping.feedback.LEARNERS`), the baseline of a change to the mix in the same run.
Effort: decisions per 1,000 products until the final mapping is 99% right when the reviewer stops
the rounds after round r and finishes by
category as bench/review_effort.py does (every flagged row decided, then wrong rows fixed least
confident first), the best r; today's one-shot category review (round 0) in the same run.

    python bench/review_rounds.py                         # both sets, appends to BENCHMARKS.md
    python bench/review_rounds.py --sets instacart --limit 3000 --no-write
    python bench/review_rounds.py --before spread,linear --seeds 4   # the mix without them beside, 4 seeds
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

from bench.common import publish  # noqa: E402
from bench.review_effort import category_review, instacart_case  # noqa: E402
from bench.zeroshot_bench import bigbasket_sets  # noqa: E402
from migrate.core.embedding_cache import EmbeddingCache  # noqa: E402
from migrate.mapping import feedback as feedback_module  # noqa: E402
from migrate.mapping.feedback import Feedback  # noqa: E402
from migrate.mapping.flags import Thresholds  # noqa: E402
from migrate.mapping.flags import DECIDED  # noqa: E402
from migrate.mapping.pipeline import Migrator, read_inputs  # noqa: E402
from migrate.mapping.settings import MigrationSettings  # noqa: E402


def bigbasket_case(folder: Path, limit: int | None) -> dict:
    case = bigbasket_sets(limit)[2]  # bigbasket-3+top
    source = case["source"].with_columns(pl.col("index").cast(pl.String))
    source_path, taxonomy_path = folder / "bb3_source.csv", folder / "bb3_taxonomy.txt"
    source.write_csv(source_path)
    taxonomy_path.write_text("\n".join(case["categories"]) + "\n", encoding="utf-8")
    settings = MigrationSettings(source=source_path, source_id="index", source_text="product,brand",
                                 source_category="category", target_taxonomy=taxonomy_path, progress=False)
    return dict(name="bigbasket three-level, source: 11 top categories", settings=settings,
                truth=dict(zip(source["index"], case["truth"])))


def evaluate(mapping: pl.DataFrame, truth: dict[str, str]) -> dict:
    """Top-1 of the undecided rows, their unflagged share and its precision."""
    open_rows = mapping.filter(pl.col("flags") != DECIDED)
    right = np.array([truth[p] == t for p, t in zip(open_rows["source_id"], open_rows["target_category"])])
    unflagged = ~open_rows["needs_review"].to_numpy()
    return dict(decided=1 - open_rows.height / mapping.height, top1=float(right.mean()) if len(right) else 1.0,
                unflagged=float(unflagged.mean()) if len(right) else 0.0,
                precision=float(right[unflagged].mean()) if unflagged.any() else float("nan"))


def finish_by_category(mapping: pl.DataFrame, truth: dict[str, str]) -> int:
    """Decisions to finish after the rounds: bench/review_effort.py's category review of the open
    rows (decided rows are right and need nothing), to a mapping 99% right overall."""
    open_rows = mapping.filter(pl.col("flags") != DECIDED)
    if not open_rows.height:
        return 0
    # the open rows must bring the whole mapping to 99%: decided rows are right, so the open rows
    # may miss at most 1% of all rows
    allowed = 0.01 * mapping.height
    return category_review(open_rows, truth, max(0.0, 1.0 - allowed / open_rows.height))["decisions"]


def run_strategy(migrator: Migrator, settings: MigrationSettings, inputs, cache: EmbeddingCache,
                 truth: dict[str, str], *, strategy: str, ask: int, rounds: int, seed: int = 0,
                 without: tuple[str, ...] = ()) -> list[dict]:
    """Round 0 (no decision), then ``rounds`` rounds of ``ask`` answers each; a row per round.
    ``without``: learners of the mix left out for this run (the "before" rows)."""
    learners = feedback_module.LEARNERS
    feedback_module.LEARNERS = tuple(name for name in learners if name not in without)
    try:
        return _rounds(migrator, settings, inputs, cache, truth, strategy=strategy, ask=ask, rounds=rounds, seed=seed)
    finally:
        feedback_module.LEARNERS = learners


def _rounds(migrator: Migrator, settings: MigrationSettings, inputs, cache: EmbeddingCache,
            truth: dict[str, str], *, strategy: str, ask: int, rounds: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    decisions: dict[str, str] = {}
    audited: set[str] = set()
    rows = []
    result = migrator.run(settings, inputs, cache=cache)
    for r in range(rounds + 1):
        mapping = result.mapping
        row = dict(round=r, **evaluate(mapping, truth), asked=len(decisions))
        row["finish"] = finish_by_category(mapping, truth)
        row["effort"] = 1000 * (len(decisions) + row["finish"]) / mapping.height
        rows.append(row)
        print(f"  {strategy} round {r}: decided {row['decided']:.3f} top-1 {row['top1']:.3f} unflagged "
              f"{row['unflagged']:.3f} at {row['precision']:.3f}; to 99% {row['effort']:.0f} per 1,000 "
              f"({row.get('seconds', 0):.1f} s)", flush=True)
        if r == rounds:
            break
        if strategy.startswith("taxmig"):
            questions = result.questions.head(ask)
            asked = questions["source_id"].to_list()
            audited.update(questions.filter(pl.col("audit"))["source_id"].to_list())
        else:  # every answer a random check
            open_ids = [p for p in mapping["source_id"].to_list() if p not in decisions]
            asked = list(rng.choice(open_ids, size=min(ask, len(open_ids)), replace=False))
            audited.update(asked)
        decisions.update({p: truth[p] for p in asked})
        started = time.perf_counter()
        result = migrator.run(settings, inputs, cache=cache,
                              feedback=Feedback(decisions=dict(decisions), weights={}, round=r + 1, ask=ask,
                                                audited=set(audited)))
        rows[-1]["next_seconds"] = time.perf_counter() - started
    return rows


def plot(curves: dict[str, dict[str, list[dict]]], path: Path) -> None:
    """The learning curve: undecided rows' top-1 against the share of products decided, per set and
    question strategy (a small PNG for the README)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    colours = iter(["tab:blue", "tab:orange", "tab:green", "tab:red"])
    for name, by_strategy in curves.items():
        colour = next(colours)
        for strategy, rows in by_strategy.items():
            if strategy not in ("taxmig", "random"):
                continue
            ax.plot([100 * r["decided"] for r in rows], [r["top1"] for r in rows], marker="o", markersize=3,
                    color=colour, linestyle="-" if strategy == "taxmig" else ":",
                    label=f"{name}: {'questions taxmig asks' if strategy == 'taxmig' else 'random questions'}")
    ax.set_xlabel("products decided by the reviewer (%)")
    ax.set_ylabel("top-1 of the undecided rows")
    ax.set_title("Review in rounds: every answer teaches the rest", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    print("wrote", path)


def speed_case(folder: Path, n: int) -> tuple[MigrationSettings, dict[str, str]]:
    """``n`` BigBasket products (real rows, later copies' names perturbed: bench/scale_bench.py)
    onto BigBasket's 99 two-level paths and its 11 top categories (110 categories), the source
    carrying its top category; the truth."""
    from bench.common import BIGBASKET
    from bench.scale_bench import perturbed_catalog

    products = pl.read_csv(perturbed_catalog(n, folder / f"speed{n}.csv"), infer_schema=False)
    real = pl.read_csv(BIGBASKET, infer_schema=False).select("index", "category", "sub_category")
    frame = (products.with_columns(pl.col("id").str.split("-").list.first().alias("index"))
             .join(real, on="index", how="left").filter(pl.col("sub_category").is_not_null()))
    frame.select("id", "product", "brand", "category").write_csv(folder / f"speed{n}_source.csv")
    paths = sorted({f"{c.strip()} > {s.strip()}" for c, s in zip(real["category"], real["sub_category"])
                    if c and s})
    paths = sorted(set(paths) | {p.split(" > ")[0] for p in paths})
    (folder / "speed_taxonomy.txt").write_text("\n".join(paths) + "\n", encoding="utf-8")
    truth = {i: f"{c.strip()} > {s.strip()}" for i, c, s in zip(frame["id"], frame["category"], frame["sub_category"])}
    settings = MigrationSettings(source=folder / f"speed{n}_source.csv", source_id="id", source_text="product,brand",
                                 source_category="category", target_taxonomy=folder / "speed_taxonomy.txt",
                                 progress=False)
    return settings, truth


def answer_questions(workbook: Path, out: Path, truth: dict[str, str]) -> int:
    """The simulated reviewer: every question of the Review sheet answered with the truth."""
    from openpyxl import load_workbook

    wb = load_workbook(workbook)
    ws = wb["Review"]
    head = {c.value: i for i, c in enumerate(ws[1], start=1)}
    answered = 0
    for r in range(2, ws.max_row + 1):
        if not ws.cell(r, head["question"]).value:
            break  # the questions come first
        ws.cell(r, head["decision"]).value = truth[str(ws.cell(r, head["source_id"]).value)]
        answered += 1
    wb.save(out)
    return answered


def speed(sizes: list[int], write: bool) -> None:
    """A round's whole ``review apply --next`` (read and check the answers, learn, map every
    undecided product again from the cached embeddings, write the next workbook and the final
    mapping), timed on ``sizes`` products."""
    from migrate.nightly.reconcile import migrate_into_state
    from migrate.nightly.review import apply_review

    lines = ["| products | categories | first migrate --state s (encodes) | answers | review apply --next s | "
             "texts encoded in it |", "|---:|---:|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for n in sizes:
            settings, truth = speed_case(folder, n)
            started = time.perf_counter()
            migrate_into_state(settings, folder / f"state{n}", folder / f"round0_{n}.xlsx")
            first = time.perf_counter() - started
            answers = answer_questions(folder / f"round0_{n}.xlsx", folder / f"answered0_{n}.xlsx", truth)
            started = time.perf_counter()
            outcome = apply_review(folder / f"answered0_{n}.xlsx", folder / f"state{n}", folder / f"final{n}.csv",
                                   next_workbook=folder / f"round1_{n}.xlsx", progress=False)
            seconds = time.perf_counter() - started
            from migrate.nightly.state import StateStore

            categories = len(Path(settings.target_taxonomy).read_text().splitlines())
            encoded = StateStore.open(folder / f"state{n}").load().meta["run"]["counts"].get("next_round", {})
            lines.append(f"| {n:,} | {categories} | {first:.0f} | {answers} | {seconds:.1f} | "
                         f"{encoded.get('encoded', 'n/a')} |")
            print(lines[-1], outcome.message[:200], flush=True)
    publish("Review in rounds: a round's speed (bench/review_rounds.py --speed)", "\n".join(lines),
            "The first `migrate --state` encodes every text into the state's embedding cache; a round's "
            "`review apply --next` reads them back (no product encoded twice). Wall seconds of the library "
            "calls in this process, model loads included.", write=write)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", default="instacart,bigbasket")
    parser.add_argument("--ask-share", type=float, default=0.025,
                        help="answers per round, a share of the products")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--target-precision", type=float, default=0.95)
    parser.add_argument("--limit", type=int, default=None, help="sample this many products per set")
    parser.add_argument("--no-write", action="store_true",
                        help="print only; do not append to BENCHMARKS.md nor draw docs/review_rounds.png")
    parser.add_argument("--before", default="",
                        help="also run the tool's questions with the mix without these learners, e.g. spread,linear")
    parser.add_argument("--seeds", type=int, default=1,
                        help="with --before: also run the tool's questions with and without those learners under "
                             "this many seeds in all (folds, questions: --seed of migrate), their top-1 in a table")
    parser.add_argument("--speed", default=None,
                        help="instead: time a round's review apply --next on these many products, e.g. 10000,100000")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.speed:
        speed([int(v) for v in args.speed.split(",")], write=not args.no_write)
        return
    lines = ["| set | questions | round | decided | undecided top-1 | unflagged (of undecided) | its precision "
             "| to 99% right: decisions per 1,000 | re-map s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    before_head = f" before (without {args.before}): top-1 at 5% / 10% |" if args.before else ""
    summary = ["| set | products | today's one-shot category review, per 1,000 | rounds then category, per 1,000 "
               "(best stop) | random questions, same | top-1 at round 0 / at 5% (taxmig, random) / at 10% |"
               + before_head, "|---|---:|---:|---:|---:|---|" + ("---|" if args.before else "")]
    seeds_table = ["| set | seed | top-1 at 5% / 10%: taxmig | the same, before (without "
                   f"{args.before}) |", "|---|---:|---|---|"]
    migrator = None
    curves: dict[str, dict[str, list[dict]]] = {}
    makers = {"instacart": instacart_case, "bigbasket": bigbasket_case}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sets.split(","):
            case = makers[name](Path(tmp), args.limit)
            settings = case["settings"]
            settings = replace(settings, thresholds=Thresholds(target_precision=args.target_precision))
            truth = {str(k): v for k, v in case["truth"].items()}
            inputs = read_inputs(settings)
            n = len(inputs.source)
            ask = max(1, round(args.ask_share * n))
            settings = replace(settings, ask=ask)
            migrator = migrator or Migrator.from_settings(settings)
            by_strategy = {}
            with EmbeddingCache(Path(tmp) / f"{name}.sqlite") as cache:
                without = tuple(v for v in args.before.split(",") if v)
                strategies = ("taxmig", "random") + (("taxmig, before",) if without else ())
                for strategy in strategies:
                    by_strategy[strategy] = run_strategy(migrator, settings, inputs, cache, truth, strategy=strategy,
                                                         ask=ask, rounds=args.rounds,
                                                         without=without if strategy == "taxmig, before" else ())
                    for row in by_strategy[strategy]:
                        lines.append(f"| {case['name']} | {strategy} | {row['round']} | {row['decided']:.3f} "
                                     f"| {row['top1']:.3f} | {row['unflagged']:.3f} | {row['precision']:.3f} "
                                     f"| {row['effort']:.0f} | {row.get('next_seconds', float('nan')):.1f} |")
                # seed 0 is the run above; the other seeds once per set, after every strategy has run
                by_seed = {0: (by_strategy["taxmig"], by_strategy.get("taxmig, before"))}
                for seed in range(1, args.seeds if without else 1):
                    seeded = replace(settings, seed=seed)
                    by_seed[seed] = tuple(run_strategy(migrator, seeded, inputs, cache, truth, strategy="taxmig",
                                                       ask=ask, rounds=args.rounds, without=leave_out)
                                          for leave_out in ((), without))
            curves[name] = by_strategy
            tool, rand = by_strategy["taxmig"], by_strategy["random"]
            best = min(tool, key=lambda r: r["effort"])
            best_random = min(rand, key=lambda r: r["effort"])

            def at(rows, share):
                return min(rows, key=lambda r: abs(r["decided"] - share))["top1"]

            if without and args.seeds > 1:
                for seed, (after_rows, before_rows) in by_seed.items():
                    seeds_table.append(f"| {case['name']} | {seed} | {at(after_rows, 0.05):.3f} / "
                                       f"{at(after_rows, 0.10):.3f} | {at(before_rows, 0.05):.3f} / "
                                       f"{at(before_rows, 0.10):.3f} |")
                mean = {k: np.mean([at(pair[i], share) for pair in by_seed.values()])
                        for k, (i, share) in {"a5": (0, 0.05), "a10": (0, 0.10), "b5": (1, 0.05),
                                              "b10": (1, 0.10)}.items()}
                seeds_table.append(f"| {case['name']} | mean | {mean['a5']:.3f} / {mean['a10']:.3f} | "
                                   f"{mean['b5']:.3f} / {mean['b10']:.3f} |")

            before = by_strategy.get("taxmig, before")
            summary.append(f"| {case['name']} | {n} | {tool[0]['effort']:.0f} | {best['effort']:.0f} (round "
                           f"{best['round']}) | {best_random['effort']:.0f} (round {best_random['round']}) | "
                           f"{tool[0]['top1']:.3f} / {at(tool, 0.05):.3f}, {at(rand, 0.05):.3f} / "
                           f"{at(tool, 0.10):.3f} |" + (f" {at(before, 0.05):.3f} / {at(before, 0.10):.3f} |"
                                                       if before else ""))
            print(summary[-1], flush=True)
    notes = (f"{args.rounds} rounds of {args.ask_share:.1%} of the products each; unflagged rows at "
             f"--target-precision {args.target_precision}, the threshold calibrated on the random checks among the "
             "answers, each predicted without its own fold (precision here is against the truth). "
             "'to 99% right': the decisions so far plus those of "
             "bench/review_effort.py's category review of the open rows, until the whole mapping is 99% right; "
             "round 0 of 'taxmig' is today's one-shot category review. 're-map s': the round's "
             "whole `Migrator.run` with the decisions, every text read from the embedding cache."
             + (f" 'taxmig, before': the tool's questions, the mix without {args.before}; the last table: the same "
                f"two under migrate's --seed 0 to {args.seeds - 1} (the folds the mix is fitted on, the questions)."
                if args.before else ""))
    if not args.no_write:
        plot(curves, Path(__file__).resolve().parents[1] / "docs" / "review_rounds.png")
    body = "\n".join(summary) + "\n\n" + "\n".join(lines)
    if len(seeds_table) > 2:
        body += "\n\n" + "\n".join(seeds_table)
    publish("Review in rounds (bench/review_rounds.py)", body, notes, write=not args.no_write)


if __name__ == "__main__":
    main()
