"""Flags that send a row to a person, and the thresholds behind them.

- ``NO_MATCH``: nothing in the target is close (nearest target product, or best label, below a cosine).
- ``LOW_CONFIDENCE``: calibrated confidence below ``min_confidence``. By default that threshold is
  chosen per run: the lowest at which the leave-one-out rows left unflagged reach
  ``target_precision`` with 95% confidence (Wilson lower bound). Without calibration data (a taxonomy file only) the raw top score below
  ``min_raw_score``.
- ``LOW_MARGIN``: top-1 minus top-2 score below ``min_margin``.
- ``SOURCE_SPLIT``: the row's source category scatters and this row went to a target that holds
  under ``split_min_share`` of that source category's products (a stray).
- ``LEXICAL_CONFLICT``: the source category's name is near-identical (rapidfuzz) to a target
  category other than the one chosen (and not its parent or child).
- ``PARENT_BACKOFF`` (taxonomy only): the suggestion is an inner category because the evidence
  named it more than any of its children and no child held half of the evidence among them
  (:func:`migrate.mapping.zeroshot.prefer_specific`); the likeliest children follow as alternatives.
  Accept the broader category, or write a child in ``decision``.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

import numpy as np
from rapidfuzz import fuzz, process, utils

DECIDED = "DECIDED"
"""The flags of a row a person decided in an earlier round (its category is the decision)."""
FLAG_ORDER = ("NO_MATCH", "LOW_CONFIDENCE", "LOW_MARGIN", "SOURCE_SPLIT", "LEXICAL_CONFLICT", "PARENT_BACKOFF")


@dataclass(frozen=True)
class Thresholds:
    """The thresholds that flag a row for review; the defaults are chosen on the BigBasket benchmark.
    Measured: BENCHMARKS.md, "migrate: BigBasket 80/20, base model" (``python bench/migrate_bench.py``)."""

    min_confidence: float | None = None  # None: chosen per run on leave-one-out (target_precision)
    target_precision: float = 0.97
    min_raw_score: float = 0.5
    min_margin: float = 0.1
    min_similarity: float = 0.45
    min_label_similarity: float = 0.2
    split_min_share: float = 0.1
    split_min_products: int = 5
    lexical_min_ratio: float = 95.0

    def as_dict(self) -> dict[str, float | None]:
        return asdict(self)


def _leaf(path: str) -> str:
    name = path.rsplit(" > ", 1)[-1]
    return re.sub(r"\s*&\s*", " and ", name)


def _related(a: str, b: str) -> bool:
    """True if one path is the other or an ancestor of it."""
    return a == b or a.startswith(b + " > ") or b.startswith(a + " > ")


def lexical_targets(source_categories: Sequence[str], target_categories: Sequence[str],
                    min_ratio: float) -> dict[str, str]:
    """Source category -> the target category whose leaf name is near-identical to its leaf name."""
    leaves = [_leaf(t) for t in target_categories]
    found: dict[str, str] = {}
    for source in set(source_categories):
        if not source:
            continue
        hit = process.extractOne(_leaf(source), leaves, scorer=fuzz.ratio, processor=utils.default_process,
                                 score_cutoff=min_ratio)
        if hit:
            found[source] = target_categories[hit[2]]
    return found


@dataclass
class SourceContext:
    """What the per-row flags need to know about the whole source: how each source category's
    products spread over the targets (SOURCE_SPLIT) and which target each source category's name
    matches (LEXICAL_CONFLICT). Built from the rows, or from counts gathered elsewhere (the Ray
    engine counts over its workers' output)."""

    groups: dict[str, Counter]
    lexical: dict[str, str]

    @classmethod
    def from_counts(cls, pair_counts: Mapping[tuple[str, str], int], all_targets: Sequence[str],
                    thresholds: Thresholds) -> "SourceContext":
        """``pair_counts``: rows per (source category, chosen target category)."""
        groups: dict[str, Counter] = defaultdict(Counter)
        for (src, tgt), count in pair_counts.items():
            if src:
                groups[src][tgt] += count
        return cls(dict(groups), lexical_targets(list(groups), all_targets, thresholds.lexical_min_ratio))

    @classmethod
    def from_rows(cls, source_categories: Sequence[str], target_categories: Sequence[str],
                  all_targets: Sequence[str], thresholds: Thresholds) -> "SourceContext":
        return cls.from_counts(Counter(zip(source_categories, target_categories)), all_targets, thresholds)


def compute_flags(*, confidence: np.ndarray, margin: np.ndarray, nearest_sim: np.ndarray,
                  label_sim: np.ndarray, has_products: bool, calibrated: bool, source_categories: Sequence[str],
                  target_categories: Sequence[str], all_targets: Sequence[str],
                  thresholds: Thresholds, backed_off: np.ndarray | None = None,
                  context: SourceContext | None = None) -> list[list[str]]:
    """One list of flag names per row (``backed_off``: rows whose suggestion is a broader category
    because its children could not be told apart, :func:`migrate.mapping.zeroshot.prefer_specific`;
    ``context``: the whole source's, when these rows are only part of it)."""
    n = len(confidence)
    flags: list[list[str]] = [[] for _ in range(n)]
    if has_products:
        far = np.nan_to_num(nearest_sim, nan=-1.0) < thresholds.min_similarity
    else:
        far = label_sim < thresholds.min_label_similarity
    if context is None:
        context = SourceContext.from_rows(source_categories, target_categories, all_targets, thresholds)
    groups, lexical = context.groups, context.lexical
    min_confidence = thresholds.min_confidence if calibrated and thresholds.min_confidence is not None \
        else thresholds.min_raw_score
    # the threshold tests as whole arrays first, then Python lists: numpy scalars row by row were a
    # night's hot spot
    far_rows = np.asarray(far).tolist()
    low_confidence = (np.asarray(confidence) < min_confidence).tolist()
    low_margin = (np.asarray(margin) < thresholds.min_margin).tolist()
    backed = np.asarray(backed_off).tolist() if backed_off is not None else [False] * n
    totals = {src: sum(counts.values()) for src, counts in groups.items()}
    for i in range(n):
        row = flags[i]
        if far_rows[i]:
            row.append("NO_MATCH")
        if low_confidence[i]:
            row.append("LOW_CONFIDENCE")
        if low_margin[i]:
            row.append("LOW_MARGIN")
        src, tgt = source_categories[i], target_categories[i]
        if src:
            counts = groups.get(src, Counter())
            total = totals.get(src, 0)
            if total >= thresholds.split_min_products and len(counts) > 1 \
                    and counts[tgt] / total < thresholds.split_min_share:
                row.append("SOURCE_SPLIT")
            hit = lexical.get(src)
            if hit and not _related(hit, tgt):
                row.append("LEXICAL_CONFLICT")
        if backed[i]:
            row.append("PARENT_BACKOFF")
    return flags
