"""Fit the zero-shot confidence calibration on public proxy tasks, and check it on the ones left out.

A taxonomy nobody has labelled gives nothing to calibrate on at run time. The proxy: the same
zero-shot procedure (level-wise labels with migrate's templates and centering, then
self-training and the most specific category, :mod:`migrate.mapping.zeroshot`) mapping products whose
answers are known onto their own taxonomy -- BigBasket onto its two-level paths,
onto its three-level paths (inner nodes listed), Instacart onto its aisles. A logistic regression
on :func:`migrate.mapping.zeroshot.confidence_features` is fitted on all three pooled; its coefficients
are ``migrate.mapping.zeroshot.CALIBRATION``. Each set is also left out once (fitted on the other two) to
show what the confidence promises on a taxonomy it was not fitted on: the expected calibration
error, and whether a threshold chosen for a precision on the fitted sets keeps it on the other.

    python bench/zeroshot_calibration.py             # appends to BENCHMARKS.md
    python bench/zeroshot_calibration.py --limit 3000 --no-write
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import publish  # noqa: E402
from bench.zeroshot_bench import bigbasket_sets, instacart_set, memo_encoder, product_texts  # noqa: E402
from migrate.mapping.calibration import ConfidenceCalibrator, choose_min_confidence, expected_calibration_error  # noqa: E402
from migrate.mapping.labels import zero_shot_labels  # noqa: E402
from migrate.mapping.scoring import ScoringParams  # noqa: E402
from migrate.mapping.zeroshot import confidence_features, listed_ancestors, refine  # noqa: E402
from models import load_encoder, resolve_model  # noqa: E402

PRECISIONS = (0.8, 0.9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, help="a random subset of this many products per set")
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to BENCHMARKS.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    encode = memo_encoder(*load_encoder(resolve_model(None)))
    params = ScoringParams()
    sets = {}
    bigbasket = bigbasket_sets(args.limit, held_out_only=False)
    for bench in (bigbasket[0], bigbasket[1], instacart_set(args.limit)):
        texts = product_texts(bench["source"])
        vectors = encode(texts)
        labels = zero_shot_labels(bench["categories"], vectors, encode, params)
        sims, ids = labels.search(vectors, params.label_candidates)
        probs, top, report = refine(sims, ids, vectors, texts, len(bench["categories"]), params,
                                    ancestors=listed_ancestors(bench["categories"]))
        index_of = {c: i for i, c in enumerate(bench["categories"])}
        truth = np.array([index_of[t] for t in bench["truth"]])
        sets[bench["name"]] = (confidence_features(probs, top, report, sims, ids), top[:, 0] == truth)
        print(bench["name"], len(truth), float(sets[bench["name"]][1].mean()), flush=True)

    lines = ["| fitted on | checked on | products | top-1 | mean confidence | ECE | "
             + " | ".join(f"threshold for {p} (fitted) | unflagged share / precision (checked)" for p in PRECISIONS)
             + " |", "|---|---|---|---|---|---|" + "---|---|" * len(PRECISIONS)]
    for left_out in sets:
        fitted = [name for name in sets if name != left_out]
        features = np.vstack([sets[n][0] for n in fitted])
        correct = np.concatenate([sets[n][1] for n in fitted])
        calibrator = ConfidenceCalibrator().fit(features, correct)
        fitted_conf = calibrator.predict(features)
        check_features, check_correct = sets[left_out]
        conf = calibrator.predict(check_features)
        cells = []
        for precision in PRECISIONS:
            threshold = choose_min_confidence(fitted_conf, correct, np.ones(len(correct), bool), precision)
            if threshold is None:
                cells += ["none reaches it", "every row flagged"]
                continue
            unflagged = conf >= threshold
            share = unflagged.mean()
            cells += [f"{threshold:.3f}", f"{share:.3f} / " +
                      (f"{check_correct[unflagged].mean():.3f}" if unflagged.any() else "n/a")]
        lines.append(f"| {' + '.join(fitted)} | {left_out} | {len(check_correct)} | {check_correct.mean():.3f} | "
                     f"{conf.mean():.3f} | {expected_calibration_error(conf, check_correct):.3f} | "
                     + " | ".join(cells) + " |")
    features = np.vstack([f for f, _ in sets.values()])
    correct = np.concatenate([c for _, c in sets.values()])
    pooled = ConfidenceCalibrator().fit(features, correct)
    coefficients = ", ".join(f"{v:.4f}" for v in pooled.coef[0])
    notes = (f"Bundled base model; BigBasket sets use every product (no split: nothing here is trained on products), "
             f"Instacart leaves out missing/other. Pooled fit (all three sets, {len(correct)} products): "
             f"coefficients ({coefficients}), intercept {pooled.model.intercept_[0]:.4f} -- the values of "
             f"migrate.mapping.zeroshot.CALIBRATION. Features: top probability, log-odds margin / 50, agreement of prior, "
             f"word model and neighbours / 3, label cosine of the chosen category, label top-1 minus top-2.")
    publish("zero-shot confidence: calibration fitted on proxy tasks, each set left out once", "\n".join(lines),
            notes, write=not args.no_write)


if __name__ == "__main__":
    main()
