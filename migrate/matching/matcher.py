"""Product similarity matching: the same or similar products across two catalogs, or duplicates
inside one (``within``). The run, stage by stage: read the inputs (:mod:`migrate.matching.settings`),
embed and search candidates, score each candidate pair (:mod:`migrate.matching.pair_features`,
:mod:`migrate.matching.scoring`), pick each left product's best, flag (:mod:`migrate.matching.flags`)
and report (:mod:`migrate.matching.report`) into a :class:`~migrate.matching.result.MatchResult`.

For each left product: candidates from FAISS (nearest by encoder cosine, both ways) plus right
products sharing a model number; each candidate pair scored from encoder cosine, rapidfuzz title
similarity and identifier agreement (:mod:`migrate.matching.features`, :mod:`migrate.matching.scoring`);
the best candidate is a match when its score reaches the threshold. ``within`` links every pair
above the threshold and gives each product a ``cluster_id`` (:mod:`migrate.matching.clusters`).

>>> settings = MatchSettings(left="abt.csv", right="buy.csv", labels="train.csv")   # doctest: +SKIP
>>> result = run_match(settings)                                                     # doctest: +SKIP
>>> result.matches.select("left_id", "right_id", "score", "is_match").head(2)       # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from migrate.core.embedding import Embedder
from migrate.core.encoder import load_model
from migrate.core.progress import Progress, display_for, stage_of
from migrate.matching.candidates import search_candidates
from migrate.matching.clusters import cluster_ids
from migrate.matching.features import FEATURES, PairContext, Side
from migrate.matching.flags import add_flags
from migrate.matching.inputs import MatchCatalog, MatchInputs
from migrate.matching.pair_features import PairFeatures, search_pairs
from migrate.matching.report import label_recall, match_facts, match_summary
from migrate.matching.reranker import Reranker, serialise_parts
from migrate.matching.result import MATCH_COLUMNS, N_ALTERNATIVES, MatchResult, ScoredCandidates, match_dtype
from migrate.matching.scoring import (DEFAULT_THRESHOLD, NO_LABEL_FLOOR, MatchThreshold, PairScorer, can_fit,
                                      choose_threshold, default_scorer, fit_scorer, mutual_best, out_of_fold_scores,
                                      threshold_at)
from migrate.matching.settings import MatchSettings, read_match_inputs
from migrate.matching.unsupervised import best_of_each_left, estimate_matches

log = logging.getLogger(__name__)


class Matcher:
    """Holds the encoder (and a re-ranker, once loaded) between runs (tests and the benchmark load
    each model once)."""

    def __init__(self, encoder) -> None:
        self.encoder = encoder  # migrate.core.encoder.Encoder: model, name, fingerprint
        self._rerankers: dict[str, Reranker] = {}

    def reranker(self, settings: MatchSettings) -> Reranker | None:
        """The re-ranker ``settings`` names, loaded once per folder; None without one."""
        if settings.reranker is None:
            return None
        key = str(Path(settings.reranker).resolve())
        if key not in self._rerankers:
            self._rerankers[key] = Reranker.load(settings.reranker, device=settings.encoder.device,
                                                 batch_size=settings.encoder.batch_size)
        return self._rerankers[key]

    @classmethod
    def from_settings(cls, settings: MatchSettings) -> "Matcher":
        return cls(load_model(settings.encoder))

    def context(self, inputs: MatchInputs, *, k: int = 10, batch_size: int = 64,
                progress: "bool | Progress" = False) -> tuple[PairContext, Any, Embedder]:
        """Embed both catalogs and search candidates both ways; returns (context, forward, embedder).
        ``progress``: the run's display (stages "encoding products", "searching candidates")."""
        embedder = Embedder(self.encoder.model, batch_size=batch_size, progress=progress)
        left_texts = inputs.left.texts
        right_texts = [] if inputs.within else inputs.right.texts
        vectors = embedder.encode([*left_texts, *right_texts], label="product texts", stage="encoding products")
        lv = vectors[: len(left_texts)]
        rv = lv if inputs.within else vectors[len(left_texts):]
        with stage_of(progress, "searching candidates", total=len(left_texts) + len(right_texts),
                      unit="products") as bar:
            forward = search_candidates(lv, rv, k=k, within=inputs.within)
            reverse = forward if inputs.within else search_candidates(rv, lv, k=k)
            bar.complete()
        left_side = Side.of(inputs.left, lv)
        right_side = left_side if inputs.within else Side.of(inputs.right, rv)
        return PairContext.build(left_side, right_side, forward, reverse), forward, embedder

    def run(self, settings: MatchSettings, inputs: MatchInputs | None = None) -> MatchResult:
        """Match ``settings.left`` against ``settings.right`` (or within itself); its stages report
        to the progress display opened around it (:func:`~migrate.core.progress.display_for`)."""
        with display_for(settings.progress) as display:
            return self._run(settings, inputs, display)

    def _run(self, settings: MatchSettings, inputs: MatchInputs | None, display: Progress) -> MatchResult:
        started = time.perf_counter()
        when = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        inputs = inputs or _read_shown(settings, display)
        context, forward, embedder = self.context(inputs, k=settings.candidates, batch_size=settings.encoder.batch_size,
                                                  progress=display)
        li, ri = search_pairs(context, forward, inputs.within)
        reranker = self.reranker(settings)
        through_estimate = reranker is not None and settings.reranker_through_estimate  # it reads best pairs only
        # the pairs count on the run's display, not on a re-ranker's bar of its own
        pair_features = PairFeatures(context, inputs, None if through_estimate else reranker, False,
                                     candidates=(li, ri))
        with display.stage("scoring pairs", total=len(li), unit="pairs") as bar:
            features = pair_features(li, ri)
            bar.update(len(li))
        scorer, threshold, label_info = self._scorer_and_threshold(settings, inputs, pair_features)
        scores = scorer.score(features)
        scored = ScoredCandidates(li, ri, scores, features, context)
        mutual = mutual_best(li, ri, scores) if settings.pairs_one_to_one else None
        estimate = None
        if settings.estimates_overlap and len(li):
            probability = None
            if through_estimate:
                with display.stage("re-ranking best pairs", total=len(inputs.left), unit="pairs") as bar:
                    probability = _reranker_on_best_pairs(reranker, inputs, li, ri, scores)
                    bar.update(len(inputs.left))
            estimate = estimate_matches(li, ri, scores, features, mutual, context.left.codes, context.right.codes,
                                        len(inputs.left), reranker=probability, seed=settings.seed)
            if settings.cut_by_estimate:
                mutual = mutual & ((estimate.probabilities >= estimate.cut) | (scores >= DEFAULT_THRESHOLD))
        matches, edges = _best_per_left(scored, inputs, threshold.value, settings, mutual)
        clusters = None
        if inputs.within:
            ids, sizes = cluster_ids(len(inputs.left), *edges)
            matches = matches.with_columns(pl.Series("cluster_id", ids), pl.Series("cluster_size", sizes))
            clusters = _cluster_table(matches)
        weak = DEFAULT_THRESHOLD if mutual is not None and threshold.value < DEFAULT_THRESHOLD else None
        matches = add_flags(matches, threshold.value, settings, inputs.within, weak)
        unmatched = None if inputs.within else _unmatched_right(inputs.right, matches, scored)
        rejects = inputs.rejects()
        if label_info is not None:
            label_info = {**label_info, **label_recall(inputs.labels, inputs.right.ids, forward.ids, matches)}
        if reranker is not None and (problem := reranker.mode_problem(inputs.within)) is not None:
            log.warning("--reranker: %s", problem)
        facts = match_facts(started=when, model=self.encoder.name, fingerprint=self.encoder.fingerprint,
                            inputs=inputs, matches=matches, rejects=rejects, clusters=clusters, threshold=threshold,
                            encode_stats=embedder.stats, seconds=time.perf_counter() - started)
        facts.stage_seconds = display.seconds_by_stage()
        if estimate is not None:
            called = matches.filter(pl.col("is_match"))
            called = set(zip(called["left_id"], called["right_id"]))
            estimate.chosen = np.array([(inputs.left.ids[i], inputs.right.ids[j]) in called
                                        for i, j in zip(li.tolist(), ri.tolist())], dtype=bool)
        summary = match_summary(facts, settings, inputs, matches, unmatched, clusters, scorer, threshold, label_info,
                                reranker, len(li), estimate.summary() if estimate is not None else None)
        return MatchResult(matches, rejects, unmatched, clusters, summary, facts, threshold, scorer, inputs.within,
                           estimate)

    def _scorer_and_threshold(self, settings: MatchSettings, inputs: MatchInputs,
                              features: PairFeatures) -> tuple[PairScorer, MatchThreshold, dict[str, Any] | None]:
        labels, names = inputs.labels, features.names
        if labels is None:
            reranker = features.reranker
            joined = None if reranker is None else reranker.joined(self.encoder.fingerprint, inputs.within)
            if settings.threshold is not None:
                value, how = settings.threshold, "given"
            elif joined is not None:
                value, how = joined[1], "the re-ranker's joined score's (best F1 out-of-fold on its validation pairs)"
            elif reranker is not None:
                value, how = reranker.threshold, "the re-ranker's (best F1 on its validation pairs)"
            elif settings.pairs_one_to_one:
                value, how = NO_LABEL_FLOOR, "default without labelled pairs: one to one, the mutual best at least this"
            else:
                value, how = DEFAULT_THRESHOLD, "default (no labelled pairs)"
            scorer = default_scorer(names) if joined is None else joined[0]
            return scorer, threshold_at(value, source=how), None
        x = features(labels.left, labels.right)
        y = labels.labels.astype(int)
        if can_fit(y):
            held_out = out_of_fold_scores(x, y, labels.left, settings.scorer, seed=settings.seed, names=names)
            scorer = fit_scorer(x, y, settings.scorer, seed=settings.seed, names=names)
            where = f"{len(y)} labelled pairs, out-of-fold (cross-validated)"
            info = {"Labelled pairs": len(y), "Labelled matches": int(y.sum()), "Weights": "fitted on the labelled pairs"}
        else:
            scorer = default_scorer(names)
            held_out = scorer.score(x)
            where = f"{len(y)} labelled pairs"
            info = {"Labelled pairs": len(y), "Labelled matches": int(y.sum()),
                    "Weights": "default (fewer than 10 matches or non-matches to refit them)"}
        if features.reranker is not None and features.reranker.trained_on(settings.labels):
            info["Warning"] = ("the re-ranker was trained on these labelled pairs: its weight and the threshold's "
                               "quality are fitted to answers it learned. Give --labels pairs it did not learn from "
                               "(its validation pairs), or no --labels to use the score train-match joined")
            log.warning("--labels: %s", info["Warning"])
        if settings.threshold is not None:
            threshold = threshold_at(settings.threshold, held_out, y, source=f"given; quality on {where}")
        else:
            threshold = choose_threshold(held_out, y, min_precision=settings.min_precision, source=where)
        log.info("threshold %.3f (%s): precision %.3f, recall %.3f", threshold.value, threshold.source,
                 threshold.precision, threshold.recall)
        return scorer, threshold, info


def _best_per_left(scored: ScoredCandidates, inputs: MatchInputs, threshold: float, settings: MatchSettings,
                   mutual: np.ndarray | None = None) -> tuple[pl.DataFrame, tuple[np.ndarray, np.ndarray]]:
    """One row per left product: its best candidate and alternatives; plus the edges >= threshold.
    ``mutual`` (one-to-one pairing): per scored pair, whether it is both products' best; the best
    candidate is then a match only when it is mutual, and a column ``_contested`` says where it
    reached the threshold but was not (read by :func:`~migrate.matching.flags.add_flags`)."""
    left, right = inputs.left, inputs.right
    n = len(left)
    order = np.lexsort((-scored.scores, scored.left))  # by left, best score first
    starts = np.searchsorted(scored.left[order], np.arange(n + 1))
    col = {f: i for i, f in enumerate(FEATURES)}
    data: dict[str, list] = {c: [] for c in MATCH_COLUMNS}
    contested: list[bool] = []
    for i in range(n):
        picks = order[starts[i]:starts[i + 1]]
        best = picks[0] if len(picks) else None
        data["left_row"].append(left.catalog.rows[i])
        data["left_id"].append(left.ids[i])
        data["left_text"].append(left.texts[i])
        if best is None:
            for c in ("right_id", "right_text"):
                data[c].append("")
            for c in ("score", "cosine_similarity", "title_similarity", "code_agreement", "brand_agreement"):
                data[c].append(0.0)
        else:
            j = int(scored.right[best])
            f = scored.features[best]
            data["right_id"].append(right.ids[j])
            data["right_text"].append(right.texts[j])
            data["score"].append(round(float(scored.scores[best]), 4))
            data["cosine_similarity"].append(round(float(f[col["cosine"]]), 4))
            data["title_similarity"].append(round(float(f[col["title_similarity"]]), 4))
            data["code_agreement"].append(float(f[col["code_agreement"]]))
            data["brand_agreement"].append(float(f[col["brand_agreement"]]))
        reaches = best is not None and bool(scored.scores[best] >= threshold)
        mutual_pair = mutual is None or (best is not None and bool(mutual[best]))
        data["is_match"].append(reaches and mutual_pair)
        contested.append(reaches and not mutual_pair)
        for a in range(1, N_ALTERNATIVES + 1):
            alt = picks[a] if len(picks) > a else None
            data[f"alt{a}_right_id"].append(right.ids[int(scored.right[alt])] if alt is not None else "")
            data[f"alt{a}_right_text"].append(right.texts[int(scored.right[alt])] if alt is not None else "")
            data[f"alt{a}_score"].append(round(float(scored.scores[alt]), 4) if alt is not None else None)
        data["needs_review"].append(False)
        data["flags"].append("")
    frame = pl.DataFrame(data, schema={c: match_dtype(c) for c in MATCH_COLUMNS})
    frame = frame.with_columns(pl.Series("_contested", contested, dtype=pl.Boolean))
    above = scored.scores >= threshold
    if mutual is not None:
        above &= mutual
    return frame, (scored.left[above], scored.right[above])



def _reranker_on_best_pairs(reranker: Reranker, inputs: MatchInputs, li: np.ndarray, ri: np.ndarray,
                            scores: np.ndarray) -> np.ndarray:
    """Per scored pair, the re-ranker's probability of each left product's best-scoring pair (0 for the
    others, which the no-labels estimate does not read): one cross-encoder read per left product."""
    best = best_of_each_left(li, scores)
    out = np.zeros(len(li), dtype=np.float32)
    left, right = inputs.left, inputs.right

    def record(side: MatchCatalog, k: int) -> str:
        return serialise_parts(side.titles[k], side.brands[k], side.codes[k], side.texts[k])

    out[best] = reranker.score([record(left, i) for i in li[best].tolist()],
                               [record(right, j) for j in ri[best].tolist()])
    return out


def _unmatched_right(right: MatchCatalog, matches: pl.DataFrame, scored: ScoredCandidates) -> pl.DataFrame:
    """Right products that are no left product's match, with the left that scored best with them."""
    matched = set(matches.filter(pl.col("is_match"))["right_id"].to_list())
    best_left: dict[int, tuple[float, int]] = {}
    for i, j, s in zip(scored.left.tolist(), scored.right.tolist(), scored.scores.tolist()):
        if j not in best_left or s > best_left[j][0]:
            best_left[j] = (s, i)
    rows = []
    for j, pid in enumerate(right.ids):
        if pid in matched:
            continue
        s, i = best_left.get(j, (None, None))
        rows.append((right.catalog.rows[j], pid, right.texts[j], "" if i is None else matches["left_id"][i],
                     None if s is None else round(s, 4)))
    return pl.DataFrame(rows, schema={"right_row": pl.Int64, "right_id": pl.String, "right_text": pl.String,
                                      "best_left_id": pl.String, "best_score": pl.Float64}, orient="row")


def _cluster_table(matches: pl.DataFrame) -> pl.DataFrame:
    """Clusters of 2+ products: id, size, member ids and texts (file order), largest first."""
    multi = matches.filter(pl.col("cluster_size") > 1)
    if multi.height == 0:
        return pl.DataFrame(schema={"cluster_id": pl.Int64, "size": pl.Int64, "ids": pl.String, "texts": pl.String})
    return (multi.group_by("cluster_id", maintain_order=True)
            .agg(pl.len().cast(pl.Int64).alias("size"), pl.col("left_id").str.join("; ").alias("ids"),
                 pl.col("left_text").str.join(" || ").alias("texts"))
            .sort(["size", "cluster_id"], descending=[True, False]))



def _read_shown(settings: MatchSettings, display: Progress) -> MatchInputs:
    """:func:`~migrate.matching.settings.read_match_inputs` as the run's "reading" stage (rows of both catalogs)."""
    with display.stage("reading", unit="rows") as stage:
        inputs = read_match_inputs(settings)
        stage.update(len(inputs.left.texts) + (0 if inputs.within else len(inputs.right.texts)))
    return inputs


def run_match(settings: MatchSettings, matcher: Matcher | None = None) -> MatchResult:
    """Read the inputs, load the model (unless a ``matcher`` is given) and run one match."""
    with display_for(settings.progress) as display:
        inputs = _read_shown(settings, display)
        if matcher is None:
            with display.stage("loading the model", total=1, unit="model") as stage:
                matcher = Matcher.from_settings(settings)
                stage.update(1)
        return matcher.run(settings, inputs)
