"""Product similarity matching: the same or similar products across two catalogs, or duplicates
inside one (``within``).

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
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from migrate import __version__
from migrate.core.embedding import Embedder
from migrate.core.encoder import EncoderSettings, load_model
from migrate.core.rejects import rejects_table
from migrate.errors import TaxmigError
from migrate.matching.candidates import candidate_pairs, code_candidates, search_candidates
from migrate.matching.clusters import cluster_ids
from migrate.matching.features import FEATURES, RERANKER_FEATURES, PairContext, Side
from migrate.matching.inputs import LabelledPairs, MatchCatalog, load_labels, load_match_catalog
from migrate.matching.reranker import RECORD as RERANKER_RECORD
from migrate.matching.reranker import Reranker, serialise
from migrate.matching.scoring import (DEFAULT_THRESHOLD, NO_LABEL_FLOOR, SCORERS, PairScorer, Threshold, can_fit,
                                   choose_threshold, default_scorer, fit_scorer, mutual_best, out_of_fold_scores,
                                   threshold_at)

log = logging.getLogger(__name__)

FLAG_ORDER = ("BORDERLINE", "AMBIGUOUS", "WEAK_SCORE", "CONTESTED", "CODE_CONFLICT", "LARGE_CLUSTER")
"""- BORDERLINE: the best score is within ``review_margin`` of the threshold;
- AMBIGUOUS (two catalogs): a second candidate also reaches the threshold, within
  :data:`AMBIGUITY_MARGIN` of the best;
- WEAK_SCORE (one-to-one pairing without labelled pairs): a match because each product is the
  other's best candidate, whose score is below :data:`~migrate.matching.scoring.DEFAULT_THRESHOLD`
  -- the score alone would not call it a match (a product with no counterpart pairs with its
  nearest look-alike this way);
- CONTESTED (one-to-one pairing): the best candidate reaches the threshold but is another left
  product's better match, so this one is left unmatched (a duplicate listing on the left?);
- CODE_CONFLICT: a match whose model numbers disagree (a variant: colour, size, region?);
- LARGE_CLUSTER (``within``): the product's cluster is larger than ``max_cluster_size`` (chained
  matches?)."""
AMBIGUITY_MARGIN = 0.05
N_ALTERNATIVES = 2
MATCH_COLUMNS = [
    "left_row", "left_id", "left_text", "right_id", "right_text", "score", "is_match", "needs_review", "flags",
    "cosine_similarity", "title_similarity", "code_agreement", "brand_agreement",
    "alt1_right_id", "alt1_right_text", "alt1_score", "alt2_right_id", "alt2_right_text", "alt2_score",
]
CLUSTER_COLUMNS = ["cluster_id", "cluster_size"]
UNMATCHED_COLUMNS = ["right_row", "right_id", "right_text", "best_left_id", "best_score"]
CLUSTER_SHEET_COLUMNS = ["cluster_id", "size", "ids", "texts"]


@dataclass
class MatchSettings:
    """Inputs and knobs of :func:`run_match`; :meth:`validate` reports every problem at once."""

    left: str | Path
    right: str | Path | None = None
    within: bool = False
    labels: str | Path | None = None
    left_id: str | None = None
    left_text: str | None = None
    left_brand: str | None = None
    left_code: str | None = None
    right_id: str | None = None
    right_text: str | None = None
    right_brand: str | None = None
    right_code: str | None = None
    encoder: EncoderSettings = field(default_factory=EncoderSettings)
    encoding: str = "utf-8"
    candidates: int = 10
    threshold: float | None = None
    min_precision: float | None = None
    scorer: str = "logistic"
    review_margin: float = 0.1
    max_cluster_size: int = 10
    reranker: str | Path | None = None
    """A folder from ``taxmig train-match --cross-encoder``: its probability joins the features."""
    one_to_one: bool | None = None
    """A pair is a match only when each product is the other's best candidate (and the score reaches
    the threshold). None: one to one for two catalogs without labelled pairs or a re-ranker, whose
    scores are uncalibrated (:data:`~migrate.matching.scoring.NO_LABEL_FLOOR`); False: the best
    candidate of each left product (several left products may match one right product)."""
    progress: bool = True
    seed: int = 0

    def validate(self) -> "MatchSettings":
        problems: list[str] = self.encoder.problems()
        for label, value in (("", self.left), ("", self.right), ("labels ", self.labels)):
            if value is not None and not Path(value).is_file():
                problems.append(f"{label}{value}: file not found")
        if self.within and self.right is not None:
            problems.append("--within matches one catalog: give LEFT only")
        if not self.within and self.right is None:
            problems.append("no RIGHT catalog: give LEFT RIGHT, or --within to find duplicates in LEFT")
        if not 1 <= self.candidates <= 200:
            problems.append("--candidates must be between 1 and 200")
        if self.threshold is not None and not 0 <= self.threshold <= 1:
            problems.append("--threshold must be between 0 and 1")
        if self.min_precision is not None and not 0 < self.min_precision <= 1:
            problems.append("--min-precision must be in (0, 1]")
        if self.min_precision is not None and self.labels is None:
            problems.append("--min-precision needs --labels (labelled pairs to measure precision on)")
        if self.scorer not in SCORERS:
            problems.append(f"--scorer must be one of {', '.join(SCORERS)}")
        if not 0 <= self.review_margin < 1:
            problems.append("--review-margin must be in [0, 1)")
        if self.within and self.one_to_one:
            problems.append("--one-to-one pairs two catalogs: not with --within")
        if self.max_cluster_size < 2:
            problems.append("--max-cluster-size must be at least 2")
        if self.reranker is not None and not (Path(self.reranker) / RERANKER_RECORD).is_file():
            problems.append(f"--reranker {self.reranker}: not a re-ranker folder (no {RERANKER_RECORD}; "
                            f"taxmig train-match --cross-encoder writes one)")
        if problems:
            raise TaxmigError("; ".join(problems), hint="see taxmig match --help")
        return self

    @property
    def pairs_one_to_one(self) -> bool:
        """Whether matches pair one to one (:attr:`one_to_one`, or its default)."""
        if self.one_to_one is not None:
            return self.one_to_one
        return not self.within and self.labels is None and self.reranker is None


@dataclass
class MatchInputs:
    """Both catalogs (the same object twice with ``within``) and the labelled pairs, read and checked."""

    left: MatchCatalog
    right: MatchCatalog
    labels: LabelledPairs | None = None
    within: bool = False


def read_match_inputs(settings: MatchSettings) -> MatchInputs:
    """Read and check every input file; bad input fails here, before the model is loaded."""
    settings.validate()
    left = load_match_catalog(settings.left, role="left", id=settings.left_id, text=settings.left_text,
                              brand=settings.left_brand, code=settings.left_code, encoding=settings.encoding)
    _need_rows(left)
    if settings.within:
        right = left
    else:
        right = load_match_catalog(settings.right, role="right", id=settings.right_id, text=settings.right_text,
                                   brand=settings.right_brand, code=settings.right_code, encoding=settings.encoding)
        _need_rows(right)
    labels = None
    if settings.labels is not None:
        labels = load_labels(settings.labels, left, right, encoding=settings.encoding, within=settings.within)
    return MatchInputs(left, right, labels, settings.within)


def _need_rows(cat: MatchCatalog) -> None:
    if len(cat) == 0:
        examples = "; ".join(f"row {r.row}: {r.reason}" for r in cat.catalog.rejects[:3])
        raise TaxmigError(f"{cat.path}: none of its {cat.catalog.n_records} rows can be matched ({examples})",
                          hint="fix those rows, or name the right columns with --left-id/--left-text "
                               "(--right-id/--right-text)")


@dataclass
class MatchResult:
    """What a match run produces, independent of the file format.

    - ``matches``: one row per usable left product (:data:`MATCH_COLUMNS`, plus
      :data:`CLUSTER_COLUMNS` with ``within``), in file order;
    - ``rejects``: every input row not matched (left, right and labels files) with the reason;
    - ``unmatched_right``: right products no left product matched (two catalogs);
    - ``clusters``: duplicate clusters of 2+ products (``within``);
    - ``summary``: ordered (label, value) pairs for the Summary sheet and the JSON sidecar.
    """

    matches: pl.DataFrame
    rejects: pl.DataFrame
    unmatched_right: pl.DataFrame | None
    clusters: pl.DataFrame | None
    summary: list[tuple[str, Any]]
    threshold: Threshold
    scorer: PairScorer
    within: bool = False

    def review(self) -> pl.DataFrame:
        """Flagged rows, the closest to the threshold first."""
        return (self.matches.filter(pl.col("needs_review"))
                .with_columns((pl.col("score") - self.threshold.value).abs().alias("_d")).sort("_d").drop("_d"))

    def summary_dict(self) -> dict[str, Any]:
        return dict(self.summary)

    @property
    def run_id(self) -> str:
        return str(self.summary_dict().get("Run id", ""))


@dataclass
class ScoredCandidates:
    """All scored candidate pairs of a run (flat arrays), and the pair context they came from."""

    left: np.ndarray
    right: np.ndarray
    scores: np.ndarray
    features: np.ndarray
    context: PairContext = field(repr=False)


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
                progress: bool = False) -> tuple[PairContext, Any, Embedder]:
        """Embed both catalogs and search candidates both ways; returns (context, forward, embedder)."""
        embedder = Embedder(self.encoder.model, batch_size=batch_size, progress=progress)
        left_texts = inputs.left.texts
        right_texts = [] if inputs.within else inputs.right.texts
        vectors = embedder.encode([*left_texts, *right_texts], label="product texts")
        lv = vectors[: len(left_texts)]
        rv = lv if inputs.within else vectors[len(left_texts):]
        forward = search_candidates(lv, rv, k=k, within=inputs.within)
        reverse = forward if inputs.within else search_candidates(rv, lv, k=k)
        left_side = Side.of(inputs.left, lv)
        right_side = left_side if inputs.within else Side.of(inputs.right, rv)
        return PairContext.build(left_side, right_side, forward, reverse), forward, embedder

    def run(self, settings: MatchSettings, inputs: MatchInputs | None = None) -> MatchResult:
        """Match ``settings.left`` against ``settings.right`` (or within itself)."""
        started = time.perf_counter()
        when = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        inputs = inputs or read_match_inputs(settings)
        context, forward, embedder = self.context(inputs, k=settings.candidates, batch_size=settings.encoder.batch_size,
                                                  progress=settings.progress)
        li, ri = search_pairs(context, forward, inputs.within)
        pair_features = PairFeatures(context, inputs, self.reranker(settings), settings.progress, candidates=(li, ri))
        features = pair_features(li, ri)
        scorer, threshold, label_info = self._scorer_and_threshold(settings, inputs, pair_features)
        scores = scorer.score(features)
        scored = ScoredCandidates(li, ri, scores, features, context)
        mutual = mutual_best(li, ri, scores) if settings.pairs_one_to_one else None
        matches, edges = _best_per_left(scored, inputs, threshold.value, settings, mutual)
        clusters = None
        if inputs.within:
            ids, sizes = cluster_ids(len(inputs.left), *edges)
            matches = matches.with_columns(pl.Series("cluster_id", ids), pl.Series("cluster_size", sizes))
            clusters = _cluster_table(matches)
        weak = DEFAULT_THRESHOLD if mutual is not None and threshold.value < DEFAULT_THRESHOLD else None
        matches = _add_flags(matches, threshold.value, settings, inputs.within, weak)
        unmatched = None if inputs.within else _unmatched_right(inputs.right, matches, scored)
        rejects = _rejects_frame(inputs)
        if label_info is not None:
            label_info.update(_label_recall(inputs.labels, inputs.right.ids, forward.ids, matches))
        summary = self._summary(settings, inputs, when, matches, unmatched, clusters, scorer, threshold, label_info,
                                embedder, len(li), time.perf_counter() - started)
        return MatchResult(matches, rejects, unmatched, clusters, summary, threshold, scorer, inputs.within)

    def _scorer_and_threshold(self, settings: MatchSettings, inputs: MatchInputs,
                              features: "PairFeatures") -> tuple[PairScorer, Threshold, dict[str, Any] | None]:
        labels, names = inputs.labels, features.names
        if labels is None:
            reranker = features.reranker
            joined = None if reranker is None else reranker.joined(self.encoder.fingerprint, inputs.within)
            if settings.threshold is not None:
                value, how = settings.threshold, "given"
            elif joined is not None:
                value, how = joined[1], "the re-ranker's joined score's (best F1 out-of-fold on its validation pairs)"
            elif features.reranker is not None:
                value, how = features.reranker.threshold, "the re-ranker's (best F1 on its validation pairs)"
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

    def _summary(self, settings: MatchSettings, inputs: MatchInputs, when, matches: pl.DataFrame,
                 unmatched: pl.DataFrame | None, clusters: pl.DataFrame | None, scorer: PairScorer,
                 threshold: Threshold, label_info: dict | None, embedder: Embedder, n_pairs: int,
                 seconds: float) -> list[tuple[str, Any]]:
        flag_counts = Counter(f for fl in matches["flags"].to_list() for f in fl.split(",") if f)
        left, right = inputs.left, inputs.right
        glance: dict[str, Any] = {
            "Matches safe to accept (no flag)": int((matches["is_match"] & ~matches["needs_review"]).sum()),
            "Rows to review (flagged; Review sheet)": int(matches["needs_review"].sum()),
            "Matches in all": int(matches["is_match"].sum()),
            "Left rows with no match": int((~matches["is_match"]).sum()),
            "How good the threshold is": (
                f"on the labelled pairs (out of fold): precision {threshold.precision:.3f}, recall "
                f"{threshold.recall:.3f}" if threshold.precision is not None else
                "not measured: no labelled pairs (--labels gives a fitted threshold and its precision)"),
        }
        rows: list[tuple[str, Any]] = [
            ("At a glance", glance),
            ("Run id", uuid.uuid4().hex[:12]),
            ("Run time (UTC)", when.isoformat()),
            ("taxmig version", __version__),
            ("Mode", "duplicates within one catalog" if inputs.within else "two catalogs"),
            ("Left file" if not inputs.within else "Catalog", str(left.path)),
            ("Left rows" if not inputs.within else "Catalog rows", left.catalog.n_records),
            ("Left rows matched against", matches.height),
            ("Left rows rejected", len(left.catalog.rejects)),
            ("Left columns", left.describe()),
        ]
        if not inputs.within:
            rows += [("Right file", str(right.path)), ("Right rows", right.catalog.n_records),
                     ("Right products used", len(right)), ("Right rows rejected", len(right.catalog.rejects)),
                     ("Right columns", right.describe())]
        rows += [
            ("Model", self.encoder.name),
            ("Model fingerprint", self.encoder.fingerprint),
            ("Candidates per product", f"{settings.candidates} nearest by cosine (FAISS), plus shared model numbers"),
            ("Candidate pairs scored", n_pairs),
            ("Score", scorer.describe()),
            ("Threshold", threshold.as_dict()),
            ("Pairing", "duplicates: every pair reaching the threshold joins a cluster" if inputs.within else
             "one to one: a pair is a match only when each product is the other's best candidate (--many-to-one: "
             "the best candidate of each left product)" if settings.pairs_one_to_one else
             "the best candidate of each left product (several may match one right product; --one-to-one pairs "
             "them one to one)"),
        ]
        reranker = self.reranker(settings)
        if reranker is not None:
            rows.insert(len(rows) - 2, ("Re-ranker", reranker.describe(self.encoder.fingerprint, inputs.within)))
            if (problem := reranker.mode_problem(inputs.within)) is not None:
                rows.insert(len(rows) - 2, ("Re-ranker warning", problem))
                log.warning("--reranker: %s", problem)
        if label_info is not None:
            rows += [("Labels file", str(inputs.labels.path)), ("Labels rows", inputs.labels.n_records),
                     ("Labelled rows unusable", len(inputs.labels.rejects)), *label_info.items()]
        rows += [
            ("Matches", int(matches["is_match"].sum())),
            ("No match", int((~matches["is_match"]).sum())),
            ("Rows needing review", int(matches["needs_review"].sum())),
            ("Review margin", settings.review_margin),
            ("Flag counts", {f: int(flag_counts.get(f, 0)) for f in FLAG_ORDER
                             if inputs.within or f != "LARGE_CLUSTER"}),
        ]
        if unmatched is not None:
            rows.append(("Right products no left product matched", unmatched.height))
        if clusters is not None:
            rows += [("Duplicate clusters (2+ products)", clusters.height),
                     ("Products in duplicate clusters", int(clusters["size"].sum()) if clusters.height else 0),
                     ("Largest cluster", int(clusters["size"].max()) if clusters.height else 1)]
        rows += [("Texts encoded (distinct)", embedder.stats["encoded"]),
                 ("Encode seconds", round(embedder.stats["seconds"], 2)),
                 ("Run seconds", round(seconds, 2))]
        return rows


@dataclass
class PairFeatures:
    """The feature rows of (left, right) pairs: :meth:`PairContext.features`, then, with a re-ranker,
    :data:`~migrate.matching.features.RERANKER_FEATURES`: its probability and the probability's gaps
    to the best each product reaches among ``candidates`` (the pairs ``match`` scores,
    :func:`search_pairs`; needed with a re-ranker)."""

    context: PairContext
    inputs: MatchInputs
    reranker: Reranker | None = None
    progress: bool = False
    candidates: tuple[np.ndarray, np.ndarray] | None = None

    def __post_init__(self) -> None:
        self._read: dict[tuple[str, str], float] = {}  # read once: labelled pairs are often candidates too,
        # and products with the same record (a catalog's duplicates) are one pair
        self._best: tuple[np.ndarray, np.ndarray] | None = None
        if self.reranker is not None:
            if self.candidates is None:
                raise ValueError("PairFeatures with a re-ranker needs the candidate pairs (its gaps' context)")
            self.left_records = serialise(self.inputs.left)
            self.right_records = self.left_records if self.inputs.within else serialise(self.inputs.right)

    @property
    def names(self) -> tuple[str, ...]:
        return FEATURES if self.reranker is None else (*FEATURES, *RERANKER_FEATURES)

    def probabilities(self, li: np.ndarray, ri: np.ndarray) -> np.ndarray:
        """The re-ranker's probability of each pair (each distinct pair of records read once)."""
        pairs = [(self.left_records[i], self.right_records[j]) for i, j in zip(np.asarray(li).tolist(),
                                                                                np.asarray(ri).tolist())]
        new = list(dict.fromkeys(p for p in pairs if p not in self._read))
        scores = self.reranker.score([a for a, _ in new], [b for _, b in new], progress=self.progress)
        self._read.update(zip(new, scores.tolist()))
        return np.array([self._read[p] for p in pairs], dtype=np.float32)

    def remember(self, li: np.ndarray, ri: np.ndarray, probabilities: np.ndarray) -> None:
        """Take the re-ranker's probabilities of these pairs as already read (train-match has them)."""
        for i, j, p in zip(np.asarray(li).tolist(), np.asarray(ri).tolist(), np.asarray(probabilities).tolist()):
            self._read[(self.left_records[i], self.right_records[j])] = float(p)

    def best(self) -> tuple[np.ndarray, np.ndarray]:
        """Each left and each right product's best re-ranker probability among the candidate pairs (0
        when it is in none); within one catalog a product's best on either side."""
        if self._best is None:
            li, ri = self.candidates
            p = self.probabilities(li, ri)
            best_left = np.zeros(len(self.inputs.left), dtype=np.float32)
            best_right = best_left.copy() if self.inputs.within else np.zeros(len(self.inputs.right), np.float32)
            np.maximum.at(best_left, li, p)
            np.maximum.at(best_right, ri, p)
            if self.inputs.within:
                best_left = best_right = np.maximum(best_left, best_right)
            self._best = (best_left, best_right)
        return self._best

    def __call__(self, li: np.ndarray, ri: np.ndarray) -> np.ndarray:
        features = self.context.features(li, ri)
        if self.reranker is None:
            return features
        li, ri = np.asarray(li, dtype=np.int64), np.asarray(ri, dtype=np.int64)
        best_left, best_right = self.best()
        p = self.probabilities(li, ri)
        gap_left = p - np.maximum(best_left[li], p)
        gap_right = p - np.maximum(best_right[ri], p)
        return np.hstack([features, np.column_stack([p, gap_left, gap_right]).astype(features.dtype)])


def search_pairs(context: PairContext, forward: Any, within: bool) -> tuple[np.ndarray, np.ndarray]:
    """The (left, right) pairs ``match`` scores: each left product's nearest candidates (``forward``,
    :meth:`Matcher.context`), then the products sharing a model code with it."""
    by_code = code_candidates(context.left.codes, context.right.codes, within=within)
    return candidate_pairs(forward.ids, by_code)


def _best_per_left(scored: ScoredCandidates, inputs: MatchInputs, threshold: float, settings: MatchSettings,
                   mutual: np.ndarray | None = None) -> tuple[pl.DataFrame, tuple[np.ndarray, np.ndarray]]:
    """One row per left product: its best candidate and alternatives; plus the edges >= threshold.
    ``mutual`` (one-to-one pairing): per scored pair, whether it is both products' best; the best
    candidate is then a match only when it is mutual, and a column ``_contested`` says where it
    reached the threshold but was not (read by :func:`_add_flags`)."""
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
    frame = pl.DataFrame(data, schema={c: _dtype(c) for c in MATCH_COLUMNS})
    frame = frame.with_columns(pl.Series("_contested", contested, dtype=pl.Boolean))
    above = scored.scores >= threshold
    if mutual is not None:
        above &= mutual
    return frame, (scored.left[above], scored.right[above])


def _dtype(column: str) -> pl.DataType:
    if column == "left_row":
        return pl.Int64
    if column in ("is_match", "needs_review"):
        return pl.Boolean
    if column in ("score", "cosine_similarity", "title_similarity", "code_agreement", "brand_agreement") \
            or column.endswith("_score"):
        return pl.Float64
    return pl.String


def _add_flags(matches: pl.DataFrame, threshold: float, settings: MatchSettings, within: bool,
               weak_below: float | None = None) -> pl.DataFrame:
    """Fill ``flags`` (comma separated, :data:`FLAG_ORDER`) and ``needs_review``; cluster columns
    move next to ``is_match``. ``weak_below``: matches scoring below it are WEAK_SCORE."""
    score = pl.col("score")
    has = pl.col("right_id") != ""
    conditions = {
        "BORDERLINE": has & ((score - threshold).abs() < settings.review_margin),
        "AMBIGUOUS": (pl.lit(not within) & pl.col("alt1_score").is_not_null()
                      & (pl.col("alt1_score") >= threshold) & (score - pl.col("alt1_score") < AMBIGUITY_MARGIN)),
        "WEAK_SCORE": pl.lit(weak_below is not None) & pl.col("is_match") & (score < (weak_below or 0.0)),
        "CONTESTED": pl.col("_contested"),
        "CODE_CONFLICT": pl.col("is_match") & (pl.col("code_agreement") == 0.0),
    }
    if within:
        conditions["LARGE_CLUSTER"] = pl.col("cluster_size") > settings.max_cluster_size
    flags = pl.concat_str([pl.when(cond.fill_null(False)).then(pl.lit(name + ",")).otherwise(pl.lit(""))
                           for name, cond in conditions.items()]).str.strip_chars_end(",")
    out = (matches.with_columns(flags.alias("flags")).with_columns((pl.col("flags") != "").alias("needs_review"))
           .drop("_contested"))
    if within:
        cols = [c for c in MATCH_COLUMNS if c not in CLUSTER_COLUMNS]
        at = cols.index("is_match") + 1
        out = out.select(cols[:at] + CLUSTER_COLUMNS + cols[at:])
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


def _rejects_frame(inputs: MatchInputs) -> pl.DataFrame:
    files = [("left", inputs.left.catalog.rejects)]
    if not inputs.within:
        files.append(("right", inputs.right.catalog.rejects))
    if inputs.labels is not None:
        files.append(("labels", inputs.labels.rejects))
    return rejects_table(files)


def _label_recall(labels: LabelledPairs, right_ids: list[str], nn_ids: np.ndarray,
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


def run_match(settings: MatchSettings, matcher: Matcher | None = None) -> MatchResult:
    """Read the inputs, load the model (unless a ``matcher`` is given) and run one match."""
    inputs = read_match_inputs(settings)
    matcher = matcher or Matcher.from_settings(settings)
    return matcher.run(settings, inputs)
