"""The facts and the Summary of a match run: what a reviewer reads first, what was read, how the
pairs were scored and paired, and what came out (rendered by :func:`migrate.core.report.summary_rows`)."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

import numpy as np
import polars as pl

from migrate.core.report import Row, RunFacts, summary_rows
from migrate.matching.flags import FLAG_ORDER
from migrate.matching.inputs import LabelledPairs, MatchInputs
from migrate.matching.reranker import Reranker
from migrate.matching.scoring import DEFAULT_THRESHOLD, MatchThreshold, PairScorer
from migrate.matching.settings import MatchSettings


def match_facts(*, started: dt.datetime, model: str, fingerprint: str, inputs: MatchInputs, matches: pl.DataFrame,
                rejects: pl.DataFrame, clusters: pl.DataFrame | None, threshold: MatchThreshold,
                encode_stats: dict[str, float], seconds: float) -> RunFacts:
    """The facts of a match run: ``matches`` is the flagged matches table, ``rejects`` the run's
    rejects (:meth:`~migrate.matching.inputs.MatchInputs.rejects`), ``encode_stats`` the embedder's
    counts (encoded, seconds; ``match`` reads no embedding cache)."""
    needs_review = int(matches["needs_review"].sum())
    return RunFacts("match", started=started, model=model, fingerprint=fingerprint,
                    rows=inputs.left.catalog.n_records, mapped=matches.height,
                    rejected=rejects.filter(pl.col("file") != "labels").height,  # catalog rows, not label rows
                    needs_review=needs_review, unflagged=matches.height - needs_review,
                    matches=int(matches["is_match"].sum()), clusters=0 if clusters is None else clusters.height,
                    thresholds=threshold.as_dict(), encoded=int(encode_stats["encoded"]),
                    encode_seconds=float(encode_stats["seconds"]), seconds=seconds)


def match_summary(facts: RunFacts, settings: MatchSettings, inputs: MatchInputs, matches: pl.DataFrame,
                  unmatched: pl.DataFrame | None, clusters: pl.DataFrame | None, scorer: PairScorer,
                  threshold: MatchThreshold, label_info: dict[str, Any] | None, reranker: Reranker | None,
                  n_pairs: int, estimate: dict[str, Any] | None = None) -> list[Row]:
    """The Summary sheet's rows (and the JSON summary's): ``label_info`` holds the rows about the
    labelled pairs (None without them), ``n_pairs`` the candidate pairs scored, ``estimate`` the rows
    of the no-labels estimate (:meth:`~migrate.matching.unsupervised.OverlapEstimate.summary`)."""
    flag_counts = Counter(f for fl in matches["flags"].to_list() for f in fl.split(",") if f)
    left, right, within = inputs.left, inputs.right, inputs.within
    glance: dict[str, Any] = {
        "Matches safe to accept (no flag)": int((matches["is_match"] & ~matches["needs_review"]).sum()),
        "Rows to review (flagged; Review sheet)": facts.needs_review,
        "Matches in all": facts.matches,
        "Left rows with no match": int((~matches["is_match"]).sum()),
        "How good the threshold is": (
            f"on the labelled pairs (out of fold): precision {threshold.precision:.3f}, recall "
            f"{threshold.recall:.3f}" if threshold.precision is not None else
            _estimated_quality(estimate) if estimate else
            "not measured: no labelled pairs (--labels gives a fitted threshold and its precision)"),
    }
    if estimate:
        glance["Left products with a twin (estimated, no labels)"] = estimate["Estimated overlap (no labels)"]
    read: list[Row] = [
        ("Mode", "duplicates within one catalog" if within else "two catalogs"),
        ("Left file" if not within else "Catalog", str(left.path)),
        ("Left rows" if not within else "Catalog rows", facts.rows),
        ("Left rows matched against", facts.mapped),
        ("Left rows rejected", len(left.catalog.rejects)),
        ("Left columns", left.describe()),
    ]
    if not within:
        read += [("Right file", str(right.path)), ("Right rows", right.catalog.n_records),
                 ("Right products used", len(right)), ("Right rows rejected", len(right.catalog.rejects)),
                 ("Right columns", right.describe())]
    for side, cat in (("left", left), ("right", right)) if not within else (("catalog", left),):
        if cat.code_ignored:
            read.append((f"Code columns ignored ({side})", "; ".join(cat.code_ignored) + ": mostly empty or constant, "
                         "a code that says nothing about the product"))
    if label_info is not None:
        read += [("Labels file", str(inputs.labels.path)), ("Labels rows", inputs.labels.n_records),
                 ("Labelled rows unusable", len(inputs.labels.rejects))]
    method: list[Row] = [
        ("Candidates per product", f"{settings.candidates} nearest by cosine (FAISS), plus shared model numbers"),
        ("Candidate pairs scored", n_pairs),
        ("Score", scorer.describe()),
    ]
    if reranker is not None:
        method.append(("Re-ranker", reranker.describe(facts.fingerprint, within, settings.reranker_through_estimate)))
        if (problem := reranker.mode_problem(within)) is not None:
            method.append(("Re-ranker warning", problem))
    method += [
        ("Threshold", threshold.as_dict()),
        ("Pairing", "duplicates: every pair reaching the threshold joins a cluster" if within else
         "one to one: a pair is a match only when each product is the other's best candidate (--many-to-one: "
         "the best candidate of each left product)" if settings.pairs_one_to_one else
         "the best candidate of each left product (several may match one right product; --one-to-one pairs "
         "them one to one)"),
        *(label_info or {}).items(),
        *(estimate or {}).items(),
    ]
    if settings.cut_by_estimate and estimate:
        cut = estimate["Expected-F1 cut (no labels)"]["probability"]
        method.append(("Cut by the estimate (--cut-by-estimate)",
                       f"a mutual best pair is a match only when its estimated match probability reaches {cut:.3f} "
                       f"(the expected-F1 cut) or its score reaches {DEFAULT_THRESHOLD}"))
    outcome: list[Row] = [
        ("Matches", facts.matches),
        ("No match", int((~matches["is_match"]).sum())),
        ("Rows needing review", facts.needs_review),
        ("Review margin", settings.review_margin),
        ("Flag counts", {f: int(flag_counts.get(f, 0)) for f in FLAG_ORDER if within or f != "LARGE_CLUSTER"}),
    ]
    if unmatched is not None:
        outcome.append(("Right products no left product matched", unmatched.height))
    if clusters is not None:
        outcome += [("Duplicate clusters (2+ products)", facts.clusters),
                    ("Products in duplicate clusters", int(clusters["size"].sum()) if clusters.height else 0),
                    ("Largest cluster", int(clusters["size"].max()) if clusters.height else 1)]
    return summary_rows(facts, glance=glance, inputs=read, method=method, outcome=outcome)


def _estimated_quality(estimate: dict[str, Any]) -> str:
    quality = estimate.get("Estimated precision / recall of the matches (no labels)")
    if quality is None:
        return "not measured: no labelled pairs"
    return (f"estimated without labels: precision about {quality['precision']:.2f}, recall about "
            f"{quality['recall']:.2f} (--labels measures it)")


def label_recall(labels: LabelledPairs, right_ids: list[str], nn_ids: np.ndarray,
                 matches: pl.DataFrame) -> dict[str, Any]:
    """How many labelled matches the run finds: among the nearest candidates, as the left's best
    candidate, and as a match."""
    pos = labels.labels == 1
    pairs = list(zip(labels.left[pos].tolist(), labels.right[pos].tolist()))
    if not pairs:
        return {}
    best = matches["right_id"].to_list()
    matched = matches["is_match"].to_list()
    near = [r in set(nn_ids[i].tolist()) for i, r in pairs]
    top = [best[i] == right_ids[r] for i, r in pairs]
    return {"Labelled matches among the nearest candidates": round(float(np.mean(near)), 4),
            "Labelled matches found as the best candidate": round(float(np.mean(top)), 4),
            "Labelled matches found and matched": round(float(np.mean([t and matched[i] for t, (i, _) in
                                                                       zip(top, pairs)])), 4)}
