"""Benchmark `taxmig match` on the standard product-matching benchmarks Abt-Buy and Amazon-Google.

For each benchmark (DeepMatcher's fixed train/valid/test pair splits, ``deepmatcher_format/``),
in one run: test-split F1, precision and recall of

- rapidfuzz only: ``token_set_ratio`` of the titles;
- the hybrid score with the bundled base encoder: without labels -- one to one (a test pair is a
  match when it is a candidate pair, each product's best-scoring candidate, and scores at least
  0.1: what ``taxmig match`` does with no ``--labels``, over all candidates of the two tables) and
  ``--many-to-one`` (default weights, threshold 0.5, each pair on its own) -- and with weights
  fitted on the train split;
- leave-one-benchmark-out: no labels, weights fitted on the *other* benchmark's train split only
  (what the defaults promise on a pair of catalogs they were not fitted on), both pairings; and a
  second table: the one-to-one floor (``NO_LABEL_FLOOR``) tried on the *valid* splits, where it
  was chosen;
- whole tables, as a user runs ``taxmig match tableA.csv tableB.csv`` without labels, one to one
  and ``--many-to-one``, scored against every labelled match of the three splits -- also with the
  partners of 20% of the left products taken out of the right table (seeded), so that those left
  products have nothing to match: any match they get is wrong;
- a cross-encoder re-ranker trained by ``train.cross_encoder`` on the train split (the valid split
  picks the best checkpoint and its threshold): alone, and its probability joined to the base
  hybrid's features (weights fitted on the valid split, out-of-fold threshold), as ``taxmig match
  --reranker DIR [--labels valid.csv]`` does;
- the hybrid score with an encoder fine-tuned by ``train.match`` on the train split
  (OnlineContrastiveLoss; the valid split picks the best checkpoint), logistic and boosted scorers
  whose weights are fitted on the valid split (the encoder has seen the train pairs), as
  ``taxmig match --labels valid.csv`` does;

every threshold chosen on the valid split (best F1; out-of-fold where the weights are fitted on it
too), never on test. The published Ditto figures
are listed as reference. The texts are what ``taxmig match`` embeds by default (Abt-Buy: name +
description; Amazon-Google: title + manufacturer, with manufacturer also the brand column).

    python bench/match_bench.py                        # full run, appends to BENCHMARKS.md
    python bench/match_bench.py --quick --no-write     # smoke test: 120 pairs per split, 1 short epoch
    python bench/match_bench.py --methods base --print-default-weights --no-write
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import DATA, ROOT, append_benchmark  # noqa: E402
from migrate.core.encoder import Encoder  # noqa: E402
from migrate.matching.features import FEATURES, RERANKER_FEATURES  # noqa: E402
from migrate.matching.inputs import MatchInputs, load_labels, load_match_catalog  # noqa: E402
from migrate.matching.matcher import Matcher  # noqa: E402
from migrate.matching.pair_features import search_pairs  # noqa: E402
from migrate.matching.reranker import EPOCHS as RERANKER_EPOCHS  # noqa: E402
from migrate.matching.reranker import LEARNING_RATE as RERANKER_LEARNING_RATE  # noqa: E402
from migrate.matching.reranker import MAX_LENGTH as RERANKER_MAX_LENGTH  # noqa: E402
from migrate.matching.scoring import (DEFAULT_THRESHOLD, JOIN_COLUMNS, JOIN_HYBRID, JOIN_KIND,  # noqa: E402
                                   NO_LABEL_FLOOR, choose_threshold, default_scorer, fit_scorer, join_inputs,
                                   mutual_best, out_of_fold_scores, quality)
from models import load_encoder, resolve_model  # noqa: E402

log = logging.getLogger("match_bench")
BENCHMARKS = {"abt_buy": "Abt-Buy", "amazon_google": "Amazon-Google"}
DITTO_F1 = {"abt_buy": 89.33, "amazon_google": 75.58}
TARGET_F1 = {"abt_buy": 85.0, "amazon_google": 70.0}
SPLITS = ("train", "valid", "test")
METHODS = ("rapidfuzz", "base", "finetuned", "crossencoder")


@dataclass
class Row:
    dataset: str
    method: str
    f1: float
    precision: float
    recall: float
    threshold: float | None
    seconds: float
    note: str = ""


def prepare(name: str, limit: int | None, workdir: Path) -> Path:
    """The benchmark folder; with ``limit``, a copy with ``limit`` pairs per split (seeded sample)
    and only the records they name (a smoke test, not comparable with published figures)."""
    src = DATA / "entity_matching" / "deepmatcher_format" / name
    if not limit:
        return src
    dst = workdir / name
    dst.mkdir(parents=True)
    pairs = {s: pl.read_csv(src / f"{s}.csv", infer_schema=False) for s in SPLITS}
    for s, frame in pairs.items():
        pos = frame.filter(pl.col("label") == "1")
        neg = frame.filter(pl.col("label") != "1")
        n_pos = min(pos.height, max(limit // 3, 2))
        pairs[s] = pl.concat([pos.sample(n_pos, seed=0), neg.sample(min(neg.height, limit - n_pos), seed=0)])
        pairs[s].write_csv(dst / f"{s}.csv")
    for side, col in (("A", "ltable_id"), ("B", "rtable_id")):
        ids = set(pl.concat([p[col] for p in pairs.values()]).to_list())
        table = pl.read_csv(src / f"table{side}.csv", infer_schema=False)
        table.filter(pl.col("id").is_in(list(ids))).write_csv(dst / f"table{side}.csv")
    return dst


def load_inputs(folder: Path):
    left = load_match_catalog(folder / "tableA.csv", role="left")
    right = load_match_catalog(folder / "tableB.csv", role="right")
    labels = {s: load_labels(folder / f"{s}.csv", left, right) for s in SPLITS}
    return MatchInputs(left, right), labels


def evaluate_scores(valid_scores, valid_y, test_scores, test_y) -> tuple[float, float, float, float]:
    """(threshold chosen on valid, test precision, recall, F1)."""
    t = choose_threshold(valid_scores, valid_y, source="valid split")
    p, r, f = quality(test_scores, test_y, t.value)
    return t.value, p, r, f


def rapidfuzz_only(dataset: str, inputs: MatchInputs, labels) -> Row:
    from rapidfuzz import fuzz, utils

    start = time.perf_counter()
    lt = [utils.default_process(t) for t in inputs.left.titles]
    rt = [utils.default_process(t) for t in inputs.right.titles]

    def scores(lab):
        return np.array([fuzz.token_set_ratio(lt[i], rt[j]) / 100 for i, j in zip(lab.left, lab.right)])

    th, p, r, f = evaluate_scores(scores(labels["valid"]), labels["valid"].labels, scores(labels["test"]),
                                  labels["test"].labels)
    return Row(dataset, "rapidfuzz only (title token_set_ratio)", f, p, r, th, time.perf_counter() - start)


def encoder(location: str | None, backend: str = "torch") -> Encoder:
    ref = resolve_model(location)
    model, fp = load_encoder(ref, backend=backend)
    return Encoder(model, ref.name, fp)


def hybrid_features(enc: Encoder, inputs: MatchInputs, labels, k: int) -> dict[str, np.ndarray]:
    """Feature rows of each split's labelled pairs, and under ``"candidates"`` the run's candidate
    pairs as ``taxmig match`` scores them: ``(left, right, features)``."""
    context, forward, _ = Matcher(enc).context(inputs, k=k, batch_size=64, progress=False)
    feats: dict = {s: context.features(labels[s].left, labels[s].right) for s in SPLITS}
    li, ri = search_pairs(context, forward, inputs.within)
    feats["candidates"] = (li, ri, context.features(li, ri))
    return feats


def one_to_one_quality(scorer, feats, pairs, floor: float = NO_LABEL_FLOOR) -> tuple[float, float, float]:
    """(precision, recall, F1) of the labelled ``pairs`` under one-to-one pairing: a pair is a match
    when it is a candidate pair, both products' best-scoring one, scoring at least ``floor``."""
    li, ri, x = feats["candidates"]
    scores = scorer.score(x)
    chosen = mutual_best(li, ri, scores) & (scores >= floor)
    matched = set(zip(li[chosen].tolist(), ri[chosen].tolist()))
    predicted = np.array([(i, j) in matched for i, j in zip(pairs.left.tolist(), pairs.right.tolist())])
    return quality(predicted.astype(float), pairs.labels, 0.5)


def hybrid_rows(dataset: str, label: str, feats, labels, seconds: float, kinds=("logistic",)) -> list[Row]:
    """``logistic``/``boosting``: weights fitted on train, threshold on valid; ``default``: what
    ``taxmig match`` does without labels (default weights, threshold 0.5)."""
    rows = []
    for kind in kinds:
        start = time.perf_counter()
        if kind == "default":
            p, r, f = one_to_one_quality(default_scorer(), feats, labels["test"])
            rows.append(Row(dataset, f"{label}, no labels (default weights), one to one (mutual best, score >= "
                                     f"{NO_LABEL_FLOOR})", f, p, r, NO_LABEL_FLOOR, seconds + time.perf_counter() - start))
            scores = default_scorer().score(feats["test"])
            th = DEFAULT_THRESHOLD
            p, r, f = quality(scores, labels["test"].labels, th)
            name = f"{label}, no labels (default weights), --many-to-one (threshold {th})"
        else:
            scorer = fit_scorer(feats["train"], labels["train"].labels, kind)
            th, p, r, f = evaluate_scores(scorer.score(feats["valid"]), labels["valid"].labels,
                                          scorer.score(feats["test"]), labels["test"].labels)
            name = label if kind == "logistic" else f"{label}, boosted scorer"
            if kind == "logistic":  # the same weights and threshold, paired one to one (--labels --one-to-one)
                p1, r1, f1 = one_to_one_quality(scorer, feats, labels["test"], th)
                rows.append(Row(dataset, f"{label}, one to one (--one-to-one; mutual best, score >= the valid "
                                         f"threshold)", f1, p1, r1, th, seconds + time.perf_counter() - start))
        rows.append(Row(dataset, name, f, p, r, th, seconds + time.perf_counter() - start))
    return rows


def fitted_on_valid(feats, labels, kind: str, names: tuple[str, ...] = FEATURES) -> tuple[float, float, float, float]:
    """(test precision, recall, F1, threshold) of a ``kind`` scorer over the columns ``names`` fitted
    on the valid split, its threshold from 5-fold out-of-fold scores there (``match --labels``)."""
    y = labels["valid"].labels.astype(int)
    held_out = out_of_fold_scores(feats["valid"], y, labels["valid"].left, kind, names=names)
    t = choose_threshold(held_out, y, source="valid split, out-of-fold")
    scorer = fit_scorer(feats["valid"], y, kind, names=names)
    return (*quality(scorer.score(feats["test"]), labels["test"].labels, t.value), t.value)


def heldout_rows(dataset: str, label: str, feats, labels, seconds: float, kinds=("logistic", "boosting")) -> list[Row]:
    """Weights and threshold from the valid split, as ``taxmig match --labels valid.csv`` does: the
    threshold on 5-fold out-of-fold scores, the weights refitted on all of it. (The fine-tuned encoder
    has seen the train pairs: weights fitted on them would over-trust its cosine.)"""
    rows = []
    for kind in kinds:
        start = time.perf_counter()
        p, r, f, t = fitted_on_valid(feats, labels, kind)
        name = label if kind == "logistic" else f"{label}, boosted scorer"
        rows.append(Row(dataset, name, f, p, r, t, seconds + time.perf_counter() - start))
    return rows


def leave_one_benchmark_out(base_feats: dict[str, tuple[dict[str, np.ndarray], dict]]) -> list[Row]:
    """What the no-labels default promises on a pair of catalogs it was not fitted on: weights fitted
    (logistic) on the train splits of every *other* benchmark, threshold 0.5, F1 on this one's test."""
    rows = []
    for d, (feats, labels) in base_feats.items():
        start = time.perf_counter()
        others = [o for o in base_feats if o != d]
        x = np.vstack([base_feats[o][0]["train"] for o in others])
        y = np.concatenate([base_feats[o][1]["train"].labels for o in others])
        scorer = fit_scorer(x, y, "logistic")
        fitted_on = ", ".join(BENCHMARKS[o] for o in others)
        p, r, f = one_to_one_quality(scorer, feats, labels["test"])
        rows.append(Row(d, f"hybrid, base encoder, no labels, weights fitted on {fitted_on} only (leave-one-benchmark-"
                           f"out), one to one (mutual best, score >= {NO_LABEL_FLOOR})", f, p, r, NO_LABEL_FLOOR,
                        time.perf_counter() - start))
        p, r, f = quality(scorer.score(feats["test"]), labels["test"].labels, DEFAULT_THRESHOLD)
        rows.append(Row(d, f"hybrid, base encoder, no labels, weights fitted on {fitted_on} only (leave-one-benchmark-"
                           f"out), --many-to-one (threshold {DEFAULT_THRESHOLD})", f, p, r, DEFAULT_THRESHOLD,
                        time.perf_counter() - start))
    return rows


FLOORS = (0.0, 0.1, 0.3, 0.5)
"""One-to-one floors compared on the valid splits (leave-one-benchmark-out weights)."""


def floor_table(base_feats: dict[str, tuple[dict, dict]]) -> str:
    """F1 on each benchmark's *valid* pairs, one to one, weights fitted on the other benchmark's
    train split, per floor: the comparison ``NO_LABEL_FLOOR`` was chosen on."""
    lines = ["| floor | " + " | ".join(f"{BENCHMARKS[d]} valid F1" for d in base_feats) + " |",
             "|---|" + "---|" * len(base_feats)]
    scorers = {}
    for d in base_feats:
        others = [o for o in base_feats if o != d]
        scorers[d] = fit_scorer(np.vstack([base_feats[o][0]["train"] for o in others]),
                                np.concatenate([base_feats[o][1]["train"].labels for o in others]), "logistic")
    for floor in FLOORS:
        cells = [f"{100 * one_to_one_quality(scorers[d], feats, labels['valid'], floor)[2]:.1f}"
                 for d, (feats, labels) in base_feats.items()]
        lines.append(f"| {floor:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


WITHOUT_PARTNER = 0.2
"""Share of left products whose labelled partners the orphan run takes out of the right table."""


def whole_table_rows(d: str, enc: Encoder, seed: int = 0) -> list[str]:
    """``taxmig match`` over both whole tables without labels, one to one and many to one, scored
    against every labelled match of the three splits; then again with the partners of
    :data:`WITHOUT_PARTNER` of the left products removed from the right table."""
    from migrate.core.embedding import RememberingModel
    from migrate.matching.settings import MatchSettings

    src = DATA / "entity_matching" / "deepmatcher_format" / d
    pairs = pl.concat([pl.read_csv(src / f"{s}.csv", infer_schema=False) for s in SPLITS])
    gold = pairs.filter(pl.col("label") == "1").select("ltable_id", "rtable_id")
    memo = Encoder(RememberingModel(enc.model), enc.name, enc.fingerprint)  # four runs, one encoding
    lefts = gold["ltable_id"].unique().sort()
    alone = set(lefts.sample(fraction=WITHOUT_PARTNER, seed=seed).to_list())
    removed = set(gold.filter(pl.col("ltable_id").is_in(list(alone)))["rtable_id"])
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        right = pl.read_csv(src / "tableB.csv", infer_schema=False)
        trimmed = Path(tmp) / "tableB.csv"
        right.filter(~pl.col("id").is_in(list(removed))).write_csv(trimmed)
        for scenario, right_path in (("whole tables", src / "tableB.csv"),
                                     (f"{WITHOUT_PARTNER:.0%} of left products without a partner", trimmed)):
            kept = {(a, b) for a, b in gold.iter_rows() if b not in removed or right_path == src / "tableB.csv"}
            for one_to_one in (True, False):
                started = time.perf_counter()
                settings = MatchSettings(left=src / "tableA.csv", right=right_path, one_to_one=one_to_one,
                                         progress=False)
                result = Matcher(memo).run(settings)
                m = result.matches.filter(pl.col("is_match"))
                found = set(zip(m["left_id"], m["right_id"]))
                sure = m.filter(~pl.col("needs_review"))
                sure_pairs = list(zip(sure["left_id"], sure["right_id"]))
                p, r = len(found & kept) / max(len(found), 1), len(found & kept) / max(len(kept), 1)
                f = 2 * p * r / max(p + r, 1e-9)
                up = sum(x in kept for x in sure_pairs) / max(len(sure_pairs), 1)
                out.append(f"| {BENCHMARKS[d]} | {scenario} | {'one to one' if one_to_one else '--many-to-one'} | "
                           f"{100 * f:.1f} | {100 * p:.1f} | {100 * r:.1f} | {len(sure_pairs)} | {100 * up:.1f} | "
                           f"{time.perf_counter() - started:.0f} |")
    return out


REMOVED = (0.0, 0.3, 0.6, 0.9)
"""Shares of the left products with a twin whose twins the no-labels section takes out of the right table."""
FULL_GOLD = {"abt_buy": "d2_abt_buy", "amazon_google": "d3_amazon_google"}


def removal_levels(d: str, tmp: Path, seed: int = 0):
    """Per share of :data:`REMOVED`: (share, the left table, the right table with the twins of that
    share of the left products taken out (seeded), the gold pairs left, the true overlap), on ``d``'s
    full-gold tables; the trimmed tables are written under ``tmp``."""
    src = DATA / "entity_matching" / "full_gold_mapping" / FULL_GOLD[d]
    gold = pl.read_csv(src / "matches.csv", infer_schema=False)
    right = pl.read_csv(src / "tableB.csv", infer_schema=False)
    lefts = gold["tableA_id"].unique().sort()
    n_left = pl.read_csv(src / "tableA.csv", infer_schema=False).height
    for share in REMOVED:
        alone = set(lefts.sample(fraction=share, seed=seed).to_list()) if share else set()
        removed = set(gold.filter(pl.col("tableA_id").is_in(list(alone)))["tableB_id"])
        trimmed = tmp / f"tableB_{share}.csv"
        right.filter(~pl.col("id").is_in(list(removed))).write_csv(trimmed)
        kept = {(a, b) for a, b in gold.iter_rows() if b not in removed}
        yield share, src / "tableA.csv", trimmed, kept, len({a for a, _ in kept}) / n_left


def no_label_rows(d: str, enc: Encoder, seed: int = 0) -> tuple[list[str], list[str]]:
    """``taxmig match tableA tableB`` without labels on the full-gold tables (``full_gold_mapping``),
    the twins of a seeded share (:data:`REMOVED`) of the left products taken out of the right table:
    the old default (mutual best, score >= ``NO_LABEL_FLOOR``) and the estimate's cut
    (``cut_by_estimate``) side by side, F1 / precision / recall against every gold pair left, and
    the estimated overlap against the true one. One encoding per dataset (``RememberingModel``).
    Returns (those rows, :func:`ceiling_row` per removal level)."""
    from migrate.core.embedding import RememberingModel
    from migrate.matching.settings import MatchSettings

    memo = Encoder(RememberingModel(enc.model), enc.name, enc.fingerprint)
    out, ceilings = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for share, left, trimmed, kept, truth in removal_levels(d, Path(tmp), seed):
            for cut in (False, True):
                started = time.perf_counter()
                settings = MatchSettings(left=left, right=trimmed, cut_by_estimate=cut, progress=False)
                result = Matcher(memo).run(settings)
                m = result.matches.filter(pl.col("is_match"))
                found = set(zip(m["left_id"], m["right_id"]))
                p, r = len(found & kept) / max(len(found), 1), len(found & kept) / max(len(kept), 1)
                f = 2 * p * r / max(p + r, 1e-9)
                e = result.estimate
                ep, er = e.quality_of(e.chosen)
                how = "estimate's cut (EM probability >= expected-F1 cut, or score >= 0.5)" if cut else \
                    f"old default (mutual best, score >= {NO_LABEL_FLOOR})"
                out.append(f"| {BENCHMARKS[d]} | {share:.0%} | {how} | {100 * f:.1f} | {100 * p:.1f} | {100 * r:.1f} "
                           f"| {100 * e.overlap:.1f} ({100 * e.low:.0f}-{100 * e.high:.0f}) | {100 * truth:.1f} | "
                           f"{100 * ep:.0f} / {100 * er:.0f} | {time.perf_counter() - started:.0f} |")
                log.info(out[-1])
            ceilings.append(ceiling_row(d, share, memo, settings, kept))
            log.info(ceilings[-1])
    return out, ceilings


CEILING_HEADER = ["| benchmark | twins removed | best F1, run's score, cut chosen on the gold | best F1, boosting on the "
                  "features fitted on the gold (5-fold by left product) | candidate pairs with the same title, not in "
                  "the gold list |", "|---|---|---|---|---|"]


def ceiling_row(d: str, share: float, enc: Encoder, settings, kept: set[tuple[str, str]]) -> str:
    """What the gold labels would allow with the run's own pairs and features (a ceiling no
    label-free method reaches): the best F1 of the mutual best pairs over every cut of the run's score,
    the same with a gradient-boosting scorer fitted on the gold labels out of fold (grouped by left
    product), and how many candidate pairs with the same squashed title the gold list does not hold."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import GroupKFold

    from migrate.matching.features import squash
    from migrate.matching.pair_features import PairFeatures
    from migrate.matching.scoring import default_scorer
    from migrate.matching.settings import read_match_inputs

    inputs = read_match_inputs(settings)
    context, forward, _ = Matcher(enc).context(inputs, k=settings.candidates, batch_size=64, progress=False)
    li, ri = search_pairs(context, forward, inputs.within)
    x = PairFeatures(context, inputs, None, candidates=(li, ri))(li, ri)
    scores = default_scorer().score(x)
    left_ids, right_ids = inputs.left.ids, inputs.right.ids
    y = np.array([(left_ids[i], right_ids[j]) in kept for i, j in zip(li.tolist(), ri.tolist())])

    def best_f1(s: np.ndarray) -> float:
        mutual = mutual_best(li, ri, s)
        hits = np.cumsum(y[mutual][np.argsort(-s[mutual], kind="stable")])  # true pairs among the best n
        called = np.arange(1, len(hits) + 1)
        return float(np.max(2 * hits / (called + len(kept)))) if len(hits) else 0.0

    held_out = np.zeros(len(y))
    for train, test in GroupKFold(5).split(x, y, li):
        model = HistGradientBoostingClassifier(max_iter=200, random_state=0).fit(x[train], y[train])
        held_out[test] = model.predict_proba(x[test])[:, 1]
    left_titles, right_titles = inputs.left.titles, inputs.right.titles
    same = sum(1 for i, j, gold in zip(li.tolist(), ri.tolist(), y.tolist())
               if not gold and squash(left_titles[i]) == squash(right_titles[j]))
    return (f"| {BENCHMARKS[d]} | {share:.0%} | {100 * best_f1(scores):.1f} | {100 * best_f1(held_out):.1f} | "
            f"{same} |")


def fine_tune(folder: Path, out: Path, args) -> tuple[str, float, dict]:
    from train.finetune import TrainConfig
    from train.match import train_match_encoder

    if out.exists():
        shutil.rmtree(out)
    config = TrainConfig(loss=args.loss, epochs=args.epochs, batch_size=args.batch_size,
                         learning_rate=args.learning_rate, max_seq_length=args.max_seq_length,
                         max_pairs=args.max_pairs, evaluations=args.evaluations, seed=0)
    start = time.perf_counter()
    result = train_match_encoder(folder / "tableA.csv", folder / "tableB.csv", folder / "train.csv", out, config,
                                 valid=folder / "valid.csv")
    return str(out), time.perf_counter() - start, result.metrics


def train_reranker(folder: Path, out: Path, args) -> tuple[str, float, dict]:
    from train.cross_encoder import train_cross_encoder
    from train.finetune import TrainConfig

    if out.exists():
        shutil.rmtree(out)
    config = TrainConfig(epochs=args.ce_epochs, batch_size=args.ce_batch_size, learning_rate=args.ce_learning_rate,
                         max_seq_length=args.ce_max_length, max_pairs=args.max_pairs, evaluations=args.evaluations,
                         seed=0)
    start = time.perf_counter()
    result = train_cross_encoder(folder / "tableA.csv", folder / "tableB.csv", folder / "train.csv", out, config,
                                 valid=folder / "valid.csv")
    return str(out), time.perf_counter() - start, result.metrics


def reranker_rows(dataset: str, reranker_dir: str, base_enc: Encoder, inputs: MatchInputs, labels, k: int,
                  train_seconds: float) -> list[Row]:
    """The re-ranker alone (its threshold from valid, as ``train-match`` stored it); joined to the
    base hybrid's features with weights and threshold from the valid split (``match --labels``);
    the joined score ``train-match`` fitted (``match --reranker`` without labels); and beside it the
    same join with one choice changed (:data:`JOIN_HYBRID`, :data:`JOIN_KIND`, the re-ranker's gaps)."""
    from migrate.matching.pair_features import PairFeatures, search_pairs
    from migrate.matching.reranker import Reranker

    t0 = time.perf_counter()
    reranker = Reranker.load(reranker_dir)
    context, forward, _ = Matcher(base_enc).context(inputs, k=k, batch_size=64, progress=False)
    pair_features = PairFeatures(context, inputs, reranker, candidates=search_pairs(context, forward, inputs.within))
    feats = {s: pair_features(labels[s].left, labels[s].right) for s in ("valid", "test")}
    seconds = train_seconds + time.perf_counter() - t0
    ce = pair_features.names.index(RERANKER_FEATURES[0])
    alone = feats["test"][:, ce]
    p, r, f = quality(alone, labels["test"].labels, reranker.threshold)
    rows = [Row(dataset, "cross-encoder re-ranker alone (MiniLM-L6; threshold from valid)", f, p, r,
                reranker.threshold, seconds)]
    for kind in ("logistic", "boosting"):
        p, r, f, t = fitted_on_valid(feats, labels, kind, pair_features.names)
        rows.append(Row(dataset, f"hybrid (base encoder) + cross-encoder re-ranker, {kind} weights fitted on valid "
                                 f"(match --labels valid.csv --scorer {kind})", f, p, r, t,
                        time.perf_counter() - t0 + train_seconds))
    joined = reranker.joined(base_enc.fingerprint, inputs.within)
    if joined is None:
        return rows
    scorer, value = joined
    p, r, f = quality(scorer.score(feats["test"]), labels["test"].labels, value)
    rows.append(Row(dataset, f"hybrid (base encoder) + cross-encoder re-ranker, joined as train-match fitted it (match "
                             f"--reranker, no labels; hybrid {JOIN_HYBRID} on train, {JOIN_KIND} join on valid)",
                    f, p, r, value, time.perf_counter() - t0 + train_seconds))
    # the same join with one choice changed: what JOIN_HYBRID, JOIN_KIND and the gaps were chosen against
    base_train = context.features(labels["train"].left, labels["train"].right)
    variants = (("logistic hybrid on train", "logistic", JOIN_KIND, JOIN_COLUMNS),
                ("logistic join on valid", JOIN_HYBRID, "logistic", JOIN_COLUMNS),
                ("logistic join of the two logits, no re-ranker gaps", JOIN_HYBRID, "logistic", JOIN_COLUMNS[:2]))
    for what, hybrid_kind, join_kind, columns in variants:
        hybrid = fit_scorer(base_train, labels["train"].labels, hybrid_kind)
        stack = {s: join_inputs(hybrid, feats[s])[:, :len(columns)] for s in ("valid", "test")}
        p, r, f, t = fitted_on_valid(stack, labels, join_kind, columns)
        rows.append(Row(dataset, f"the same join, {what} (comparison)", f, p, r, t,
                        time.perf_counter() - t0 + train_seconds))
    return rows


def table(rows: list[Row], datasets: list[str]) -> str:
    lines = ["| benchmark | method | test F1 | precision | recall | threshold (valid) | seconds |",
             "|---|---|---|---|---|---|---|"]
    for d in datasets:
        for r in (x for x in rows if x.dataset == d):
            th = f"{r.threshold:.3f}" if r.threshold is not None else "—"
            lines.append(f"| {BENCHMARKS[d]} | {r.method} | {100 * r.f1:.2f} | {100 * r.precision:.2f} | "
                         f"{100 * r.recall:.2f} | {th} | {r.seconds:.0f} |")
        lines.append(f"| {BENCHMARKS[d]} | Ditto (published, RoBERTa cross-encoder; reference) | {DITTO_F1[d]:.2f} "
                     f"| — | — | — | — |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="abt_buy,amazon_google")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma separated: {', '.join(METHODS)}")
    parser.add_argument("--limit", type=int, default=None, help="pairs per split (a smoke test)")
    parser.add_argument("--quick", action="store_true", help="--limit 120, 1 epoch on at most 64 pairs")
    parser.add_argument("--candidates", type=int, default=10)
    parser.add_argument("--loss", default="online_contrastive")
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=3e-5)
    parser.add_argument("--max-seq-length", type=int, default=64)
    parser.add_argument("--max-pairs", type=int, default=None)
    parser.add_argument("--evaluations", type=int, default=8)
    parser.add_argument("--ce-epochs", type=float, default=RERANKER_EPOCHS, help="cross-encoder epochs")
    parser.add_argument("--ce-batch-size", type=int, default=16)
    parser.add_argument("--ce-learning-rate", type=float, default=RERANKER_LEARNING_RATE)
    parser.add_argument("--ce-max-length", type=int, default=RERANKER_MAX_LENGTH, help="cross-encoder tokens per pair")
    parser.add_argument("--models-dir", type=Path, default=ROOT / "out" / "match_bench_models")
    parser.add_argument("--print-default-weights", action="store_true",
                        help="fit the no-labels default weights on both train splits (base model) and print them")
    parser.add_argument("--no-write", action="store_true", help="do not append to BENCHMARKS.md")
    parser.add_argument("--other-reranker-only", action="store_true",
                        help="only the 'whole tables, no labels, a re-ranker trained on the other benchmark' section "
                             "(issue 38 item 4); trains the two re-rankers unless --rerankers names them")
    parser.add_argument("--rerankers", default=None,
                        help="with --other-reranker-only: re-rankers already trained by train-match --cross-encoder "
                             "on the DeepMatcher train/valid splits, as abt_buy=DIR,amazon_google=DIR")
    parser.add_argument("--no-labels-only", action="store_true",
                        help="only the 'whole tables, no labels' section (issue 38): full-gold tables, 0/30/60/90%% "
                             "of the twins removed, old default against the estimate's cut")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("sentence_transformers", "transformers", "faiss", "httpx", "migrate", "train", "models"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.quick:
        args.limit = args.limit or 120
        args.epochs = args.ce_epochs = 1.0
        args.max_pairs = args.max_pairs or 64
        args.evaluations = 2
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [d for d in datasets if d not in BENCHMARKS] + [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown dataset or method: {unknown}")

    if args.no_labels_only:
        return no_labels_main(args, datasets)
    if args.other_reranker_only:
        return other_reranker_main(args, datasets)
    rows: list[Row] = []
    notes: list[str] = []
    pooled: list[tuple[np.ndarray, np.ndarray]] = []
    base_feats: dict[str, tuple[dict[str, np.ndarray], dict]] = {}
    started = time.perf_counter()
    base = encoder(None) if {"base", "crossencoder"} & set(methods) or args.print_default_weights else None
    with tempfile.TemporaryDirectory() as tmp:
        for d in datasets:
            folder = prepare(d, args.limit, Path(tmp))
            inputs, labels = load_inputs(folder)
            log.info("%s: %d x %d records; pairs %s", d, len(inputs.left), len(inputs.right),
                     {s: (len(labels[s]), labels[s].n_matches) for s in SPLITS})
            if "rapidfuzz" in methods:
                rows.append(rapidfuzz_only(d, inputs, labels))
                log.info("%s rapidfuzz: F1 %.4f", d, rows[-1].f1)
            if base is not None and ("base" in methods or args.print_default_weights):
                t0 = time.perf_counter()
                feats = hybrid_features(base, inputs, labels, args.candidates)
                pooled.append((feats["train"], labels["train"].labels))
                base_feats[d] = (feats, labels)
                if "base" in methods:
                    rows += hybrid_rows(d, "hybrid, base encoder", feats, labels, time.perf_counter() - t0,
                                        kinds=("default", "logistic", "boosting"))
                    log.info("%s base hybrid: F1 %.4f", d, rows[-1].f1)
            if "finetuned" in methods:
                out, train_seconds, metrics = fine_tune(folder, args.models_dir / f"match-{d}", args)
                t0 = time.perf_counter()
                feats = hybrid_features(encoder(out), inputs, labels, args.candidates)
                seconds = train_seconds + time.perf_counter() - t0
                rows += heldout_rows(d, f"hybrid, fine-tuned encoder ({args.loss})", feats, labels, seconds)
                key = metrics["eval"]["primary_metric"]
                notes.append(f"{BENCHMARKS[d]} fine-tuning: {metrics['steps']} steps on {metrics['train_pairs']} "
                             f"pairs in {metrics['train_seconds']:.0f} s; valid {key} "
                             f"{metrics['eval']['before'][key]:.4f} -> {metrics['eval']['after'][key]:.4f}.")
                log.info("%s fine-tuned hybrid: F1 %.4f (boosted %.4f)", d, rows[-2].f1, rows[-1].f1)
            if "crossencoder" in methods:
                out, train_seconds, metrics = train_reranker(folder, args.models_dir / f"rerank-{d}", args)
                rows += reranker_rows(d, out, base, inputs, labels, args.candidates, train_seconds)
                key = metrics["eval"]["primary_metric"]
                notes.append(f"{BENCHMARKS[d]} cross-encoder: {metrics['steps']} steps on {metrics['train_pairs']} "
                             f"pairs in {metrics['train_seconds']:.0f} s; valid {key} "
                             f"{metrics['eval']['before'][key]:.4f} -> {metrics['eval']['after'][key]:.4f}.")
                log.info("%s cross-encoder: %s", d, ", ".join(f"{r.f1:.4f}" for r in rows if r.dataset == d))
    extra = ""
    if "base" in methods and len(base_feats) > 1:
        rows += leave_one_benchmark_out(base_feats)
        extra += ("\n\nThe one-to-one floor on the valid splits, weights fitted on the other benchmark (how "
                  "`NO_LABEL_FLOOR` was chosen):\n\n" + floor_table(base_feats))
    if "base" in methods and not args.limit:
        tables = ["| benchmark | tables | pairing | F1 | precision | recall | unflagged matches | unflagged precision "
                  "| seconds |", "|---|---|---|---|---|---|---|---|---|"]
        for d in datasets:
            tables += whole_table_rows(d, base)
        extra += ("\n\n`taxmig match` over the whole tables without labels (default weights), against every "
                  "labelled match of the three splits (a true match the benchmark never labelled counts as wrong "
                  "for both pairings); in the second scenario the right products paired with a seeded "
                  f"{WITHOUT_PARTNER:.0%} of the left products are taken out:\n\n" + "\n".join(tables))
    total = time.perf_counter() - started
    md = table(rows, datasets) + extra
    print(md)
    print(f"\ntotal {total:.0f} s")
    if args.print_default_weights and pooled:
        x = np.vstack([p[0] for p in pooled])
        y = np.concatenate([p[1] for p in pooled])
        scorer = fit_scorer(x, y, "logistic")
        print("DEFAULT_WEIGHTS =", {f: round(scorer.weights[f], 2) for f in FEATURES})
        print("DEFAULT_INTERCEPT =", round(scorer.intercept, 2))
    if not args.no_write:
        scope = f"{args.limit} pairs per split (smoke test)" if args.limit else "full test splits"
        settings = (f"Candidates {args.candidates}; fine-tuning: {args.loss}, {args.epochs:g} epochs, batch "
                    f"{args.batch_size}, lr {args.learning_rate:g}, max_seq_length {args.max_seq_length}, best "
                    f"checkpoint by valid average precision. Cross-encoder: BinaryCrossEntropyLoss, "
                    f"{args.ce_epochs:g} epochs, batch {args.ce_batch_size}, lr {args.ce_learning_rate:g}, "
                    f"{args.ce_max_length} tokens per pair.")
        text = (f"Scope: {scope}. Thresholds chosen on the valid split (best F1); F1/precision/recall on the test "
                f"split, in %. Scorer weights fitted on the train split (base encoder) or, out-of-fold, on the valid "
                f"split (fine-tuned encoder, which has seen the train pairs). The no-labels rows use "
                f"the default weights, which were fitted on these two train splits (never on test): optimistic for "
                f"other catalogs; the leave-one-benchmark-out rows are not. One to one: a test pair counts as matched "
                f"when it is among the run's candidate pairs (both tables, no labels), each product's best-scoring "
                f"one, with score >= {NO_LABEL_FLOOR}; many to one: its own score >= {DEFAULT_THRESHOLD}. Seconds: the step's own time (fine-tuned "
                f"rows include training). Total run time {total / 60:.1f} min. {settings} Targets: fine-tuned F1 >= "
                f"{TARGET_F1['abt_buy']:.0f} (Abt-Buy), >= {TARGET_F1['amazon_google']:.0f} (Amazon-Google). "
                + " ".join(notes))
        path = append_benchmark("match: Abt-Buy and Amazon-Google (DeepMatcher splits)", md, text)
        print(f"appended to {path}")
    return 0


NO_LABELS_HEADER = ["| benchmark | twins removed | decision | F1 | precision | recall | estimated overlap (90% interval) "
                    "| true overlap | estimated precision / recall | seconds |", "|---|---|---|---|---|---|---|---|---|---|"]


def no_labels_main(args, datasets: list[str]) -> int:
    """The 'whole tables, no labels' section alone (``--no-labels-only``)."""
    started = time.perf_counter()
    base = encoder(None)
    lines, ceilings = list(NO_LABELS_HEADER), list(CEILING_HEADER)
    for d in datasets:
        rows, ceiling = no_label_rows(d, base)
        lines += rows
        ceilings += ceiling
    total = time.perf_counter() - started
    md = "\n".join(lines) + "\n\nWhat the gold labels would allow with the same pairs and features (ceilings, not " \
        "label-free figures):\n\n" + "\n".join(ceilings)
    print(md)
    print(f"\ntotal {total:.0f} s")
    if not args.no_write:
        text = ("`taxmig match tableA.csv tableB.csv` without labels on the full-gold tables "
                "(`full_gold_mapping/`: every true pair listed), the twins of a seeded share of the left products "
                "taken out of the right table (seed 0); F1 / precision / recall in % against every gold pair left. "
                "Old default: one to one, mutual best with score >= "
                f"{NO_LABEL_FLOOR}. Estimate's cut (`MatchSettings.cut_by_estimate`): of those, the pairs whose "
                "Fellegi-Sunter probability (`migrate/matching/unsupervised.py`, EM on each left product's best "
                "pair) reaches the expected-F1 cut, or whose score reaches 0.5. Estimated overlap: the EM's share of "
                "left products with a twin, bootstrap interval over left products (50 resamples); estimated "
                "precision / recall: the EM's expectation for the run's matches. One encoding per dataset, reused "
                f"across removal levels. Total {total / 60:.1f} min.")
        path = append_benchmark("match: whole tables, no labels (issue 38)", md, text)
        print(f"appended to {path}")
    return 0


OTHER_RERANKER_HEADER = ["| tables | re-ranker trained on | twins removed | decision | F1 | precision | recall | "
                         "estimated overlap | true overlap | pairs the re-ranker read | seconds |",
                         "|---|---|---|---|---|---|---|---|---|---|---|"]


@contextlib.contextmanager
def reranker_read_once():
    """Inside the block a re-ranker reads each (folder, left record, right record) once across runs
    (the removal levels and decisions share most candidate pairs; the cross-encoder is most of a run)."""
    from migrate.matching.reranker import Reranker

    original, memory, asked = Reranker.score, {}, [0]

    def score(self, left, right, *, progress=False):
        pairs = [(str(self.path), a, b) for a, b in zip(left, right)]
        asked[0] += len(pairs)
        new = list(dict.fromkeys(p for p in pairs if p not in memory))
        if new:
            memory.update(zip(new, original(self, [a for _, a, _ in new], [b for _, _, b in new]).tolist()))
        return np.array([memory[p] for p in pairs], dtype=np.float32)

    Reranker.score = score
    try:
        yield asked
    finally:
        Reranker.score = original


def other_reranker_rows(d: str, reranker_dir: str, trained_on: str, enc: Encoder, seed: int = 0) -> list[str]:
    """``taxmig match tableA tableB`` without labels on ``d``'s full-gold tables (twins of :data:`REMOVED`
    of the left products taken out, as :func:`no_label_rows`), without a re-ranker (the default, and
    ``--cut-by-estimate``) and with ``--reranker`` trained on the other benchmark: as taxmig uses it on
    tables it was not trained on (a comparison of the no-labels estimate, which cuts the matches),
    and as it was used before (the joined score train-match fitted, many to one at its threshold)."""
    from migrate.core.embedding import RememberingModel
    from migrate.matching.settings import MatchSettings

    matcher = Matcher(Encoder(RememberingModel(enc.model), enc.name, enc.fingerprint))
    out = []
    with tempfile.TemporaryDirectory() as tmp, reranker_read_once() as asked:
        for share, left, trimmed, kept, truth in removal_levels(d, Path(tmp), seed):
            runs = (("no re-ranker: mutual best >= 0.1 (default)", {}),
                    ("no re-ranker, --cut-by-estimate", {"cut_by_estimate": True}),
                    ("--reranker (now): the estimate reads it, the matches are the default's",
                     {"reranker": reranker_dir}),
                    ("--reranker --cut-by-estimate (now)", {"reranker": reranker_dir, "cut_by_estimate": True}),
                    ("--reranker (before): the joined score train-match fitted, many to one",
                     {"reranker": reranker_dir, "_joined": True}))
            for how, options in runs:
                started, asked[0] = time.perf_counter(), 0
                settings = MatchSettings(left=left, right=trimmed, progress=False,
                                         **{k: v for k, v in options.items() if not k.startswith("_")})
                if options.get("_joined"):  # what --reranker did on any tables before it joined the estimate
                    settings.__dict__["reranker_through_estimate"] = False
                result = matcher.run(settings)
                m = result.matches.filter(pl.col("is_match"))
                found = set(zip(m["left_id"], m["right_id"]))
                p, r = len(found & kept) / max(len(found), 1), len(found & kept) / max(len(kept), 1)
                f = 2 * p * r / max(p + r, 1e-9)
                e = result.estimate
                est = "—" if e is None else f"{100 * e.overlap:.1f} ({100 * e.low:.0f}-{100 * e.high:.0f})"
                out.append(f"| {BENCHMARKS[d]} | {'—' if 'reranker' not in options else BENCHMARKS[trained_on]} | "
                           f"{share:.0%} | {how} | {100 * f:.1f} | {100 * p:.1f} | {100 * r:.1f} | {est} | "
                           f"{100 * truth:.1f} | {asked[0]:,} | {time.perf_counter() - started:.0f} |")
                log.info(out[-1])
    return out


def other_reranker_main(args, datasets: list[str]) -> int:
    """The 'whole tables, no labels, a re-ranker trained on the other benchmark' section alone."""
    started = time.perf_counter()
    given = dict(item.split("=", 1) for item in args.rerankers.split(",")) if args.rerankers else {}
    dirs, trained = {}, []
    for d in BENCHMARKS:
        if d in given:
            dirs[d] = given[d]
        else:
            dirs[d], seconds, _ = train_reranker(DATA / "entity_matching" / "deepmatcher_format" / d,
                                                 args.models_dir / f"rerank-{d}", args)
            trained.append(f"{BENCHMARKS[d]} {seconds:.0f} s")
    base = encoder(None)
    lines = list(OTHER_RERANKER_HEADER)
    for d in datasets:
        other = next(o for o in BENCHMARKS if o != d)
        lines += other_reranker_rows(d, dirs[other], other, base)
    total = time.perf_counter() - started
    md = "\n".join(lines)
    print(md)
    print(f"\ntotal {total:.0f} s")
    if not args.no_write:
        records = {d: json.loads((Path(dirs[d]) / "reranker.json").read_text()) for d in BENCHMARKS}
        how = "; ".join(f"{BENCHMARKS[d]}: {r.get('config', {}).get('epochs')} epochs, threshold "
                        f"{r.get('threshold', 0):.3f}" for d, r in records.items())
        text = ("`taxmig match tableA.csv tableB.csv` without labels on the full-gold tables, the twins of a seeded "
                "share of the left products taken out of the right table (seed 0), as in \"match: whole tables, no "
                "labels (issue 38)\"; F1 / precision / recall in % against every gold pair left. The re-ranker: "
                "`taxmig train-match tableA.csv tableB.csv --pairs train.csv --valid valid.csv --cross-encoder` on "
                f"the *other* benchmark's DeepMatcher splits ({how}"
                + (f"; trained in this run: {', '.join(trained)}" if trained else "; trained before this run, "
                   f"folders {args.rerankers}") +
                "), so these tables are ones it never saw. Now: the hybrid's default score pairs one to one as "
                "without a re-ranker; the re-ranker reads each left product's best pair and its probability is one "
                "more comparison of the Fellegi-Sunter estimate (levels `RERANKER_CUTS`); with --cut-by-estimate a "
                "mutual best pair is a match when its estimated probability reaches the expected-F1 cut or its "
                "score 0.5. Before: the joined score train-match fitted on the other benchmark's pairs, every "
                "candidate pair read, each left product's best at the joined threshold. Estimated overlap: the EM's "
                "share of left products with a twin (90% bootstrap interval). Pairs the re-ranker read: asked by "
                "the run (each pair is read once across the rows, so seconds include reads only in the first row "
                f"that asks a pair). Total {total / 60:.1f} min.")
        path = append_benchmark("match: whole tables, no labels, a re-ranker trained on the other benchmark", md,
                                text)
        print(f"appended to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
