"""What training pairs are made of: their settings (:class:`PairConfig`), their kinds, and a labelled
catalog as distinct items in category blocks (:class:`Items`), the first stage of
:func:`train.pairs.build_pairs`.

Products with the same normalised text and category are one item; items are ordered by (parent,
leaf, random), so that each leaf's and each parent's items are one contiguous block and every draw
of :mod:`train.pair_draws` is numpy over those blocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Sequence

import numpy as np
import polars as pl

from migrate.core.catalog import PATH_SEPARATOR, normalise_path, normalise_text
from migrate.errors import TaxmigError

KINDS = ("positive", "encoder_positive", "encoder_negative", "word_negative", "sibling_negative", "negative")
"""Pair kinds in priority order: a pair drawn by two kinds is kept once, under the first."""
POS, EPOS, ENC, WORD_NEG, SIB, NEG = range(len(KINDS))  # each kind's code, as in KINDS

ATTEMPTS = 4  # redraws for a random partner that turned out to carry the anchor's own text


@dataclass(frozen=True)
class PairConfig:
    """How many pairs of each kind per product, their scores, an optional cap and the seed.

    >>> PairConfig(score_same_parent=0.3).score_same_parent
    0.3
    >>> PairConfig(positives_per_product=-1, score_other=2)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    migrate.errors.TaxmigError: bad pair settings: positives_per_product=-1 must be a whole number >= 0; score_other=2 must be between 0 and 1 (fix: ...)
    """

    positives_per_product: int = 5
    negatives_per_product: int = 3
    word_negatives_per_product: int = 1
    encoder_negatives_per_product: int = 1
    sibling_negatives_per_product: int = 1
    score_same_leaf: float = 1.0
    score_same_parent: float = 0.5
    score_other: float = 0.0
    max_pairs: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        for name in ("positives_per_product", "negatives_per_product", "word_negatives_per_product",
                     "encoder_negatives_per_product", "sibling_negatives_per_product"):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                problems.append(f"{name}={value!r} must be a whole number >= 0")
        scores_ok = True
        for name in ("score_same_leaf", "score_same_parent", "score_other"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) \
                    or not 0.0 <= float(value) <= 1.0:
                problems.append(f"{name}={value!r} must be between 0 and 1")
                scores_ok = False
        if scores_ok and not self.score_same_leaf > self.score_other:
            problems.append(f"score_same_leaf={self.score_same_leaf} must be above score_other={self.score_other} "
                            "(otherwise the pairs teach nothing)")
        if self.max_pairs is not None and (not _is_int(self.max_pairs) or self.max_pairs < 1):
            problems.append(f"max_pairs={self.max_pairs!r} must be None or a whole number >= 1")
        if not _is_int(self.seed):
            problems.append(f"seed={self.seed!r} must be a whole number")
        if problems:
            raise TaxmigError("bad pair settings: " + "; ".join(problems),
                              hint="counts are whole numbers >= 0, scores lie in [0, 1] with "
                                   "same leaf > other, e.g. PairConfig() for the defaults")


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def parent_path(path: str) -> str:
    """``"A > B > C"`` -> ``"A > B"``; a top-level category has no parent (``""``)."""
    cut = path.rfind(PATH_SEPARATOR)
    return path[:cut] if cut >= 0 else ""


def block_starts(sorted_codes: np.ndarray, size: int) -> np.ndarray:
    """First position of each code in an array where every code's positions are contiguous."""
    starts = np.zeros(size, dtype=np.int64)
    first = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    starts[sorted_codes[first]] = first
    return starts


def codes(values: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Dense integer codes in order of first appearance, and the distinct values."""
    index: dict[str, int] = {}
    codes = np.fromiter((index.setdefault(v, len(index)) for v in values), dtype=np.int64, count=len(values))
    return codes, list(index)


def check_inputs(texts: Sequence[str], categories: Sequence[str]) -> None:
    if len(texts) != len(categories):
        raise TaxmigError(f"{len(texts)} texts but {len(categories)} categories",
                          hint="pass one category path per product text, in the same order")
    if len(texts) == 0:
        raise TaxmigError("no products to build training pairs from",
                          hint="pass the labelled catalog's texts and categories (one split at a time)")
    problems = []
    for what, values in (("text", texts), ("category", categories)):
        blank = [i for i, v in enumerate(values) if not isinstance(v, str) or not v.strip()]
        if blank:
            problems.append(f"{len(blank)} products have an empty {what} (first at position {blank[0]})")
    if problems:
        raise TaxmigError("; ".join(problems),
                          hint="drop the products without a name or category before building pairs")


@dataclass
class Items:
    """The distinct products (normalised text and leaf) of :func:`train.pairs.build_pairs`, ordered by (parent,
    leaf, random) so that each leaf's and each parent's items are one contiguous block; an item is
    its position in this order."""

    texts: list[str]
    leaf: np.ndarray        # leaf code per item
    norm: np.ndarray        # normalised-text code per item
    parent: np.ndarray      # parent code per item
    n_leaf: int
    root: int               # the code of "no parent" (-1 when every leaf has one)
    leaf_start: np.ndarray  # first item of each leaf
    leaf_size: np.ndarray
    par_start: np.ndarray   # first item of each parent
    par_size: np.ndarray

    @property
    def n(self) -> int:
        return len(self.texts)

    @cached_property
    def column(self) -> pl.Series:
        return pl.Series("text", self.texts, dtype=pl.String)

    @cached_property
    def own_start(self) -> np.ndarray:
        return self.leaf_start[self.leaf]

    @cached_property
    def own_size(self) -> np.ndarray:
        return self.leaf_size[self.leaf]

    @cached_property
    def within(self) -> np.ndarray:
        """Each item's offset inside its leaf block."""
        return np.arange(self.n) - self.own_start

    def other_leaf(self, anchor: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A uniformly random item of another leaf per anchor (-1 where only own-text copies came up)."""
        out = np.full(anchor.size, -1, dtype=np.int64)
        todo = np.arange(anchor.size)
        for _ in range(ATTEMPTS):
            a = anchor[todo]
            j = (rng.random(a.size) * (self.n - self.own_size[a])).astype(np.int64)
            cand = np.where(j < self.own_start[a], j, j + self.own_size[a])
            ok = self.norm[cand] != self.norm[a]
            out[todo[ok]] = cand[ok]
            todo = todo[~ok]
            if not todo.size:
                break
        return out

    @cached_property
    def _labelled(self) -> np.ndarray:
        return np.unique(self.norm * self.n_leaf + self.leaf)

    @cached_property
    def _multi(self) -> np.ndarray:
        """Per text code: listed under several leaves (rare)."""
        return np.bincount(self.norm, minlength=int(self.norm.max()) + 1) > 1

    @cached_property
    def _leaves_of(self) -> dict[int, set[int]]:
        leaves_of: dict[int, set[int]] = {int(t): set() for t in np.flatnonzero(self._multi)}
        for i in np.flatnonzero(self._multi[self.norm]):
            leaves_of[int(self.norm[i])].add(int(self.leaf[i]))
        return leaves_of

    def shares_a_leaf(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Whether the texts of items x and y are listed under a common leaf (any of their copies)."""
        norm, leaf, n_leaf, multi = self.norm, self.leaf, self.n_leaf, self._multi
        out = np.isin(norm[x] * n_leaf + leaf[y], self._labelled) | np.isin(norm[y] * n_leaf + leaf[x], self._labelled)
        for i in np.flatnonzero(~out & multi[norm[x]] & multi[norm[y]]):
            out[i] = bool(self._leaves_of[int(norm[x[i]])] & self._leaves_of[int(norm[y[i]])])
        return out


def build_items(texts: Sequence[str], categories: Sequence[str], rng: np.random.Generator, notes: list[str]) -> Items:
    """Distinct (normalised text, normalised leaf) items in their block order; merges and
    single-product or conflicting categories are said in ``notes``."""
    raw_cat_codes, raw_cats = codes(categories)
    leaf_names_of_raw = [normalise_path(c) for c in raw_cats]
    leaf_of_row, leaf_names = codes([leaf_names_of_raw[c] for c in raw_cat_codes])
    norm_of_row, _ = codes([normalise_text(t) for t in texts])
    n_leaf = len(leaf_names)
    if "" in leaf_names:
        raise TaxmigError(f"{sum(1 for c in leaf_of_row if leaf_names[c] == '')} products have a category path "
                          "with no level (e.g. ' > ')", hint="give every product a category path such as 'A > B'")
    if n_leaf < 2:
        raise TaxmigError(f"all {len(texts)} products are in one category ({leaf_names[0]!r}): a catalog with "
                          "one subcategory cannot teach the encoder to separate categories",
                          hint="train on a catalog labelled with at least two categories")
    item_key = norm_of_row * n_leaf + leaf_of_row
    _, first_row = np.unique(item_key, return_index=True)
    first_row.sort()  # items in order of first appearance: independent of hashing, stable
    merged = len(texts) - first_row.size
    if merged:
        notes.append(f"{merged} repeated listings (same normalised text and category) were merged into one item each")
    parent_of_leaf, parent_names = codes([parent_path(p) for p in leaf_names])
    root = parent_names.index("") if "" in parent_names else -1
    leaf0 = leaf_of_row[first_row]
    order = np.lexsort((rng.random(first_row.size), leaf0, parent_of_leaf[leaf0]))
    rows = first_row[order]
    leaf = leaf_of_row[rows]
    norm = norm_of_row[rows]
    parent = parent_of_leaf[leaf]
    # every leaf and parent keeps >= 1 item after merging; their blocks are contiguous
    items = Items(texts=[texts[r] for r in rows], leaf=leaf, norm=norm, parent=parent, n_leaf=n_leaf, root=root,
                   leaf_start=block_starts(leaf, n_leaf), leaf_size=np.bincount(leaf, minlength=n_leaf),
                   par_start=block_starts(parent, len(parent_names)),
                   par_size=np.bincount(parent, minlength=len(parent_names)))
    single = int((items.leaf_size == 1).sum())
    if single:
        notes.append(f"{single} of {n_leaf} categories have a single product: they get no positive "
                     "pairs but still serve as negatives")
    conflicts = items.n - np.unique(norm).size
    if conflicts:
        notes.append(f"{conflicts} product texts appear under more than one category (conflicting labels); "
                     "such copies are never paired with each other, nor used as negatives across a shared category")
    return items
