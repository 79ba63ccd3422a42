"""Training pairs and triplets from a labelled catalog (issue 3, "Fine-tune the retail encoder").

Every product gets

* ``positive`` pairs: up to ``positives_per_product`` other products of the same leaf category
  (the published retail recipe: 5);
* ``negative`` pairs: ``negatives_per_product`` random products of other leaf categories (3);
* hard negatives, each of a different leaf category:
  ``word_negative`` (shares a word with the product: "Dark Chocolate" vs "Chocolate Creme Body
  Lotion"), ``encoder_negative`` (its nearest neighbours of another leaf under the current
  encoder, only when ``embed`` is given) and ``sibling_negative`` (another leaf under the same
  parent);
* with ``embed``, for every product whose nearest neighbours include another leaf's product (the
  products a neighbour vote can get wrong) an ``encoder_positive``: a product of its own leaf that
  the encoder ranks *behind* that nearest wrong one (or, if none in sight, a random one of its
  leaf outside its neighbours) -- the pair the encoder most needs to learn.

Scores are hierarchy-aware: same leaf ``score_same_leaf``, a different leaf under the same parent
``score_same_parent``, anything else ``score_other`` -- for CosineSimilarityLoss / CoSENTLoss.
The triplets ``(anchor, positive, negative)`` for MultipleNegativesRankingLoss come first from
the encoder-mined pairs -- (product, its encoder positive, its nearest wrong neighbour) -- then
from each positive pair with a hard negative of the anchor (a random other-category product when
it has none); under ``max_pairs`` the mined triplets are kept first: they are the examples a
neighbour vote gets wrong, so a CPU-sized budget goes to them (what they buy: BENCHMARKS.md,
"train: BigBasket fine-tuning, base vs fine-tuned").

>>> texts = ["Dark Chocolate | Amul", "Milk Chocolate | Amul", "White Chocolate | Cadbury",
...          "Chocolate Creme Body Lotion | Nivea", "Aloe Body Lotion | Nivea", "Shampoo | Dove"]
>>> cats = ["Food > Chocolate"] * 3 + ["Beauty > Body Care"] * 2 + ["Beauty > Hair Care"]
>>> ps = build_pairs(texts, cats, PairConfig(seed=1))
>>> ps.counts()["positive"], ps.pairs.columns
(4, ['sentence1', 'sentence2', 'score', 'kind'])
>>> ps.to_dataset("triplets").column_names
['anchor', 'positive', 'negative']

Work and memory are linear in the catalog (numpy over per-category index blocks, an inverted word
index with bounded work per product); the encoder negatives use an exact FAISS inner-product
search, which is quadratic in the catalog.

Pairs are only made among the texts given: call once per split (``train.splits``) so that no
pair crosses splits.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable, Sequence

import numpy as np
import polars as pl

from migrate.core.catalog import PATH_SEPARATOR, normalise_path, normalise_text
from migrate.errors import TaxmigError

log = logging.getLogger(__name__)

KINDS = ("positive", "encoder_positive", "encoder_negative", "word_negative", "sibling_negative", "negative")
"""Pair kinds in priority order: a pair drawn by two kinds is kept once, under the first."""
_POS, _EPOS, _ENC, _WORD, _SIB, _NEG = range(len(KINDS))

PAIR_COLUMNS = ("sentence1", "sentence2", "score")
TRIPLET_COLUMNS = ("anchor", "positive", "negative")

WORD = re.compile(r"[^\W\d_]{3,}")
"""A word for the word negatives: three or more letters (no digits), matched on lower-cased text."""
COMMON_WORD_SHARE = 0.05
"""A word in more than this share of the products (and more than :data:`COMMON_WORD_MIN`) is too
common to make a hard negative."""
COMMON_WORD_MIN = 20
STOP_WORDS = frozenset("""
    and the with for from into onto pack packs set sets pcs piece pieces combo free new each off per
    buy get all any our you your are its was has not but this that these those one two three four
    gms gram grams ltr litre litres liter liters kgs pouch box bottle jar can tin carton refill
    assorted multi mini small medium large big extra value offer save pro plus
    """.split())
_ATTEMPTS = 4  # redraws for a random partner that turned out to carry the anchor's own text
_ENCODER_K = 30  # neighbours searched per product for the encoder-mined pairs (more when asked for more)


def word_tokens(text: str) -> set[str]:
    """The words a product can share with a word negative (stop words removed).

    >>> sorted(word_tokens("Dark Chocolate 55% - Pack of 2 | Amul"))
    ['amul', 'chocolate', 'dark']
    """
    return {w for w in WORD.findall(text.lower()) if w not in STOP_WORDS}


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


@dataclass
class PairSet:
    """The generated training data.

    ``pairs``: sentence1, sentence2, score (Float64), kind (one of :data:`KINDS`), shuffled.
    ``triplets``: anchor, positive, negative. ``notes``: what the caller should know (categories
    with a single product, merged duplicates, products without a hard negative, ...).
    """

    pairs: pl.DataFrame
    triplets: pl.DataFrame
    notes: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Pairs per kind, every kind listed (0 when none)."""
        got = dict(self.pairs.group_by("kind").len().iter_rows()) if self.pairs.height else {}
        return {k: int(got.get(k, 0)) for k in KINDS}

    def to_dataset(self, kind: str = "pairs"):
        """A HuggingFace ``datasets.Dataset`` with the columns sentence-transformers expects:
        ``"pairs"`` -> sentence1, sentence2, score (CosineSimilarityLoss, CoSENTLoss);
        ``"triplets"`` -> anchor, positive, negative (MultipleNegativesRankingLoss)."""
        from datasets import Dataset

        if kind == "pairs":
            frame = self.pairs.select(PAIR_COLUMNS)
        elif kind == "triplets":
            frame = self.triplets.select(TRIPLET_COLUMNS)
        else:
            raise TaxmigError(f"unknown dataset kind {kind!r}", hint="use 'pairs' or 'triplets'")
        import pyarrow as pa

        table = frame.to_arrow()
        schema = pa.schema([pa.field(c, pa.float64() if c == "score" else pa.string()) for c in frame.columns])
        return Dataset(table.cast(schema))


def _parent(path: str) -> str:
    """``"A > B > C"`` -> ``"A > B"``; a top-level category has no parent (``""``)."""
    cut = path.rfind(PATH_SEPARATOR)
    return path[:cut] if cut >= 0 else ""


def _block_starts(sorted_codes: np.ndarray, size: int) -> np.ndarray:
    """First position of each code in an array where every code's positions are contiguous."""
    starts = np.zeros(size, dtype=np.int64)
    first = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    starts[sorted_codes[first]] = first
    return starts


def _codes(values: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Dense integer codes in order of first appearance, and the distinct values."""
    index: dict[str, int] = {}
    codes = np.fromiter((index.setdefault(v, len(index)) for v in values), dtype=np.int64, count=len(values))
    return codes, list(index)


def _check_inputs(texts: Sequence[str], categories: Sequence[str]) -> None:
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


def build_pairs(texts: Sequence[str], categories: Sequence[str], config: PairConfig = PairConfig(), *,
                embed: Callable[[list[str]], np.ndarray] | None = None) -> PairSet:
    """Training pairs and triplets for the products ``texts`` labelled with category paths.

    ``categories`` are paths ``"A > B > C"``: the leaf is the whole path, the parent the path
    without its last level (a top-level category has no parent, so no siblings). ``embed`` maps a
    list of texts to unit-length float32 vectors (the current encoder); with it, the nearest
    products of another leaf become ``encoder_negative`` pairs, without it that kind is skipped.

    Products with the same normalised text and category are merged (one item); the same text under
    two categories is kept under both but never paired with itself. A category with a single
    product has no positive pair but still serves as a negative (counted in ``notes``).
    Deterministic for ``config.seed``.

    >>> ps = build_pairs(["Dark Chocolate", "Milk Chocolate", "Chocolate Body Lotion", "Aloe Lotion"],
    ...                  ["Food > Sweets", "Food > Sweets", "Beauty > Body", "Beauty > Body"])
    >>> sorted(ps.pairs.filter(pl.col("kind") == "positive")["score"].to_list())
    [1.0, 1.0]
    >>> ps.pairs.filter(pl.col("kind") == "word_negative").height > 0
    True
    """
    _check_inputs(texts, categories)
    cfg = config
    rng = np.random.default_rng(cfg.seed)
    notes: list[str] = []
    items = _items(texts, categories, rng, notes)
    a, b, kind, mined = _draw_pairs(items, cfg, embed, rng, notes)
    a, b, kind, hard_a, hard_b = _clean_pairs(items, a, b, kind)
    t_a, t_p, t_n, n_mined = _triplets(items, a, b, kind, hard_a, hard_b, mined, rng)
    a, b, kind, t_a, t_p, t_n = _cap_and_shuffle(cfg.max_pairs, a, b, kind, t_a, t_p, t_n, n_mined, rng, notes)
    result = PairSet(pairs=_pair_frame(items, cfg, a, b, kind), notes=notes,
                     triplets=pl.DataFrame({"anchor": items.column.gather(t_a), "positive": items.column.gather(t_p),
                                            "negative": items.column.gather(t_n)}))
    log.info("built %d pairs %s and %d triplets from %d products in %d categories", result.pairs.height,
             result.counts(), result.triplets.height, items.n, items.n_leaf)
    for note in notes:
        log.info("pairs: %s", note)
    return result


@dataclass
class _Items:
    """The distinct products (normalised text and leaf) of :func:`build_pairs`, ordered by (parent,
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
        for _ in range(_ATTEMPTS):
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


def _items(texts: Sequence[str], categories: Sequence[str], rng: np.random.Generator, notes: list[str]) -> _Items:
    """Distinct (normalised text, normalised leaf) items in their block order; merges and
    single-product or conflicting categories are said in ``notes``."""
    raw_cat_codes, raw_cats = _codes(categories)
    leaf_names_of_raw = [normalise_path(c) for c in raw_cats]
    leaf_of_row, leaf_names = _codes([leaf_names_of_raw[c] for c in raw_cat_codes])
    norm_of_row, _ = _codes([normalise_text(t) for t in texts])
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
    parent_of_leaf, parent_names = _codes([_parent(p) for p in leaf_names])
    root = parent_names.index("") if "" in parent_names else -1
    leaf0 = leaf_of_row[first_row]
    order = np.lexsort((rng.random(first_row.size), leaf0, parent_of_leaf[leaf0]))
    rows = first_row[order]
    leaf = leaf_of_row[rows]
    norm = norm_of_row[rows]
    parent = parent_of_leaf[leaf]
    # every leaf and parent keeps >= 1 item after merging; their blocks are contiguous
    items = _Items(texts=[texts[r] for r in rows], leaf=leaf, norm=norm, parent=parent, n_leaf=n_leaf, root=root,
                   leaf_start=_block_starts(leaf, n_leaf), leaf_size=np.bincount(leaf, minlength=n_leaf),
                   par_start=_block_starts(parent, len(parent_names)),
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


def _draw_pairs(items: _Items, cfg: PairConfig, embed: Callable[[list[str]], np.ndarray] | None,
                rng: np.random.Generator, notes: list[str]):
    """Every kind's draws, in the order of :data:`KINDS`' precedence: ``(a, b, kind, mined triplets)``."""
    n = items.n
    firsts: list[np.ndarray] = []
    seconds: list[np.ndarray] = []
    kinds: list[np.ndarray] = []

    def add(a: np.ndarray, b: np.ndarray, kind: int) -> None:
        keep = b >= 0
        firsts.append(a[keep])
        seconds.append(b[keep])
        kinds.append(np.full(int(keep.sum()), kind, dtype=np.int8))

    if cfg.positives_per_product:
        add(*_positives(items, cfg.positives_per_product, rng), _POS)
    mined = (np.zeros(0, np.int64),) * 3
    if embed is not None and cfg.encoder_negatives_per_product:
        neg_a, neg_b, pos_a, pos_b, mined = _encoder_mined(items.texts, embed, items.leaf, items.norm,
                                                           cfg.encoder_negatives_per_product, items.own_start,
                                                           items.own_size, items.within, rng)
        add(neg_a, neg_b, _ENC)
        add(pos_a, pos_b, _EPOS)
        notes.append(f"{mined[0].size} of {n} products have a product of another category among their "
                     f"{_ENCODER_K} nearest under the current encoder: mined triplets for them")
    if cfg.word_negatives_per_product:
        a, b, without = _word_negatives(items.texts, items.leaf, items.norm, items.n_leaf,
                                        cfg.word_negatives_per_product, rng)
        add(a, b, _WORD)
        if without:
            notes.append(f"{without} of {n} products share no usable word with a product of another "
                         "category: they have no word negative")
    if cfg.sibling_negatives_per_product:
        add(*_sibling_negatives(items, cfg.sibling_negatives_per_product, rng, notes), _SIB)
    if cfg.negatives_per_product:
        anchors = np.repeat(np.arange(n), cfg.negatives_per_product)
        add(anchors, items.other_leaf(anchors, rng), _NEG)
    a = np.concatenate(firsts) if firsts else np.zeros(0, dtype=np.int64)
    b = np.concatenate(seconds) if seconds else np.zeros(0, dtype=np.int64)
    kind = np.concatenate(kinds) if kinds else np.zeros(0, dtype=np.int8)
    return a, b, kind, mined


def _positives(items: _Items, per_item: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Distinct random offsets inside each item's leaf block (Floyd's sampling, vectorised)."""
    n, own_start, own_size = items.n, items.own_start, items.own_size
    m = own_size - 1  # candidates per item
    chosen = np.full((n, per_item), -1, dtype=np.int64)
    big = m > per_item
    for col in range(per_item):
        j = m - per_item + col
        t = (rng.random(n) * np.maximum(j + 1, 1)).astype(np.int64)
        dup = (chosen[:, :col] == t[:, None]).any(axis=1) if col else np.zeros(n, dtype=bool)
        chosen[:, col] = np.where(big, np.where(dup, j, t), np.where(col < m, col, -1))
    anchors = np.repeat(np.arange(n), per_item)
    off = chosen.ravel()
    partner = np.where(off >= 0, own_start[anchors] + (items.within[anchors] + off + 1) % own_size[anchors], -1)
    return anchors, partner


def _sibling_negatives(items: _Items, per_item: int, rng: np.random.Generator,
                       notes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Items of another leaf under the same parent (none for top-level leaves or only children)."""
    parent, own_start, own_size = items.parent, items.own_start, items.own_size
    own_par_start, own_par_size = items.par_start[parent], items.par_size[parent]
    has_sib = (own_par_size > own_size) & (parent != items.root)
    anchors = np.repeat(np.flatnonzero(has_sib), per_item)
    span = own_par_size[anchors] - own_size[anchors]
    pos = own_par_start[anchors] + (rng.random(anchors.size) * span).astype(np.int64)
    pos = np.where(pos < own_start[anchors], pos, pos + own_size[anchors])
    pos = np.where(items.norm[pos] != items.norm[anchors], pos, -1)
    lonely = items.n_leaf - np.unique(items.leaf[has_sib]).size
    if lonely:
        notes.append(f"{lonely} of {items.n_leaf} categories have no sibling category with products "
                     "under the same parent: their products get no sibling negative")
    return anchors, pos


def _clean_pairs(items: _Items, a: np.ndarray, b: np.ndarray, kind: np.ndarray):
    """No self-pairs (same text), no negative between texts that share a category (a text listed
    under two categories), no duplicates in either order (by text); the first kind in KINDS wins.
    Also returns each anchor's hard negatives as drawn (for the triplets)."""
    norm = items.norm
    keep = norm[a] != norm[b]
    negative = (kind != _POS) & (kind != _EPOS)
    keep[negative] &= ~items.shares_a_leaf(a[negative], b[negative])
    a, b, kind = a[keep], b[keep], kind[keep]
    hard = (kind == _ENC) | (kind == _WORD) | (kind == _SIB)
    hard_a, hard_b = a[hard], b[hard]
    n_norm = int(norm.max()) + 1
    lo, hi = np.minimum(norm[a], norm[b]), np.maximum(norm[a], norm[b])
    _, first = np.unique(lo * n_norm + hi, return_index=True)
    first.sort()
    return a[first], b[first], kind[first], hard_a, hard_b


def _triplets(items: _Items, a: np.ndarray, b: np.ndarray, kind: np.ndarray, hard_a: np.ndarray,
              hard_b: np.ndarray, mined, rng: np.random.Generator):
    """Each positive pair + a hard negative of the anchor (else a random one); the mined triplets
    first. Returns ``(anchors, positives, negatives, number mined)``."""
    pos_sel = kind == _POS
    t_a, t_p = a[pos_sel], b[pos_sel]
    t_n = _triplet_negatives(t_a, hard_a, hard_b, items.n, rng, lambda anchor: items.other_leaf(anchor, rng))
    # a negative listed (also) under the anchor's or the positive's category is redrawn at random
    bad = np.flatnonzero(t_n >= 0)
    bad = bad[items.shares_a_leaf(t_a[bad], t_n[bad]) | items.shares_a_leaf(t_p[bad], t_n[bad])]
    t_n[bad] = -1
    for _ in range(_ATTEMPTS):
        redo = np.flatnonzero(t_n < 0)
        if not redo.size:
            break
        cand = items.other_leaf(t_a[redo], rng)
        good = cand >= 0
        good[good] = (~items.shares_a_leaf(t_a[redo[good]], cand[good])
                      & ~items.shares_a_leaf(t_p[redo[good]], cand[good]))
        t_n[redo[good]] = cand[good]
    ok = t_n >= 0
    t_a, t_p, t_n = t_a[ok], t_p[ok], t_n[ok]
    # a mined triplet whose negative shares a category with the anchor or the positive is dropped
    m_a, m_p, m_n = mined
    if m_a.size:
        good = (items.norm[m_a] != items.norm[m_p]) & ~items.shares_a_leaf(m_a, m_n) & ~items.shares_a_leaf(m_p, m_n)
        m_a, m_p, m_n = m_a[good], m_p[good], m_n[good]
    return np.r_[m_a, t_a], np.r_[m_p, t_p], np.r_[m_n, t_n], m_a.size


def _cap_and_shuffle(max_pairs: int | None, a, b, kind, t_a, t_p, t_n, n_mined: int, rng: np.random.Generator,
                     notes: list[str]):
    """At most ``max_pairs`` pairs (same mix of kinds) and triplets (mined ones first), shuffled."""
    if max_pairs is not None and a.size > max_pairs:
        sel = _capped(kind, max_pairs, rng)
        notes.append(f"max_pairs={max_pairs}: kept {sel.size} of {a.size} pairs, in the same mix of kinds")
        a, b, kind = a[sel], b[sel], kind[sel]
    shuffle = rng.permutation(a.size)
    a, b, kind = a[shuffle], b[shuffle], kind[shuffle]
    if max_pairs is not None and t_a.size > max_pairs:
        first = rng.permutation(n_mined)[:max_pairs]  # mined triplets first, then the others at random
        rest = n_mined + rng.permutation(t_a.size - n_mined)[: max_pairs - first.size]
        sel = np.sort(np.r_[first, rest])
        t_a, t_p, t_n = t_a[sel], t_p[sel], t_n[sel]
    shuffle = rng.permutation(t_a.size)
    return a, b, kind, t_a[shuffle], t_p[shuffle], t_n[shuffle]


def _pair_frame(items: _Items, cfg: PairConfig, a: np.ndarray, b: np.ndarray, kind: np.ndarray) -> pl.DataFrame:
    """The pairs table: texts, the score of their relation (same leaf, same parent, other), kind."""
    parent, root = items.parent, items.root
    same_parent = (parent[a] == parent[b]) & (parent[a] != root)
    score = np.where((kind == _POS) | (kind == _EPOS), float(cfg.score_same_leaf),
                     np.where(same_parent, float(cfg.score_same_parent), float(cfg.score_other)))
    return pl.DataFrame({
        "sentence1": items.column.gather(a), "sentence2": items.column.gather(b),
        "score": pl.Series(score, dtype=pl.Float64),
        "kind": pl.Series(kind).replace_strict(dict(enumerate(KINDS)), return_dtype=pl.String),
    })


def _encoder_mined(item_texts: list[str], embed: Callable[[list[str]], np.ndarray], leaf: np.ndarray,
                   norm: np.ndarray, per_item: int, own_start: np.ndarray, own_size: np.ndarray, within: np.ndarray,
                   rng: np.random.Generator):
    """Encoder-mined pairs (exact inner-product search over the items' embeddings).

    Returns ``(neg_a, neg_b, pos_a, pos_b, (trip_a, trip_p, trip_n))``: up to ``per_item`` nearest
    items of another leaf per item; for each item with such a neighbour, one item of its own leaf
    ranked behind the nearest wrong one (else a random one of its leaf); and the mined triplet
    (item, that positive, the nearest wrong neighbour).
    """
    import faiss

    n = len(item_texts)
    vectors = np.asarray(embed(list(item_texts)))
    if vectors.ndim != 2 or vectors.shape[0] != n:
        raise TaxmigError(f"embed returned an array of shape {vectors.shape} for {n} texts",
                          hint="embed must return one vector per text, shape (len(texts), dim)")
    vectors = np.ascontiguousarray(vectors, dtype=np.float32).copy()
    if not np.isfinite(vectors).all():
        raise TaxmigError("embed returned NaN or infinite values", hint="check the encoder")
    faiss.normalize_L2(vectors)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    k = min(n, max(_ENCODER_K, per_item + 5))
    sims, nn = index.search(vectors, k)
    anchors = np.repeat(np.arange(n), k).reshape(n, k)
    valid = (nn >= 0) & (sims > 0)  # an orthogonal "neighbour" (e.g. of an empty vector) is no hard pair
    safe = np.where(valid, nn, 0)
    distinct = valid & (norm[safe] != norm[anchors])
    other = distinct & (leaf[safe] != leaf[anchors])
    same = distinct & (leaf[safe] == leaf[anchors])
    rank = np.cumsum(other, axis=1)
    take = other & (rank <= per_item)
    neg_a, neg_b = anchors[take], nn[take].astype(np.int64)
    # hard positives: own-leaf neighbours ranked behind the first wrong one
    at_risk = other.any(axis=1)
    first_wrong = np.argmax(other, axis=1)
    behind = same & (np.arange(k)[None, :] > first_wrong[:, None]) & at_risk[:, None]
    has_behind = behind.any(axis=1)
    pos = np.full(n, -1, dtype=np.int64)
    pos[has_behind] = nn[has_behind, np.argmax(behind[has_behind], axis=1)]
    # at-risk items with none in sight: a random item of their own leaf (the encoder put it farther away)
    todo = np.flatnonzero(at_risk & ~has_behind & (own_size > 1))
    for _ in range(_ATTEMPTS):
        if not todo.size:
            break
        offset = 1 + (rng.random(todo.size) * (own_size[todo] - 1)).astype(np.int64)
        cand = own_start[todo] + (within[todo] + offset) % own_size[todo]
        ok = (norm[cand] != norm[todo]) & ~(nn[todo] == cand[:, None]).any(axis=1)  # not among its neighbours
        pos[todo[ok]] = cand[ok]
        todo = todo[~ok]
    trip = np.flatnonzero((pos >= 0) & at_risk)
    nearest_wrong = nn[trip, first_wrong[trip]].astype(np.int64)
    ok = np.flatnonzero(pos >= 0)
    return neg_a, neg_b, ok, pos[ok], (trip, pos[trip], nearest_wrong)


def _word_negatives(item_texts: list[str], leaf: np.ndarray, norm: np.ndarray, n_leaf: int, per_item: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    """``per_item`` items of another leaf sharing a word with each item, drawn exactly.

    Inverted index (word -> items, sorted by leaf): for a word of the item, an item is drawn
    uniformly among those holding the word *outside the item's own leaf*, so every draw succeeds.
    Words in more than :data:`COMMON_WORD_SHARE` of the products are skipped. Work per item is a
    constant number of array operations.
    """
    n = len(item_texts)
    vocab: dict[str, int] = {}
    tok_list: list[int] = []
    lengths = np.zeros(n, dtype=np.int64)
    for i, t in enumerate(item_texts):
        words = sorted(word_tokens(t))  # sorted: set order changes with PYTHONHASHSEED
        lengths[i] = len(words)
        tok_list.extend(vocab.setdefault(w, len(vocab)) for w in words)
    tok = np.asarray(tok_list, dtype=np.int64)
    item = np.repeat(np.arange(n), lengths)
    df = np.bincount(tok, minlength=len(vocab))
    max_df = max(COMMON_WORD_SHARE * n, COMMON_WORD_MIN)
    usable = (df >= 2) & (df <= max_df)
    keep = usable[tok]
    tok, item = tok[keep], item[keep]
    if not tok.size:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), n

    # postings sorted by (word, leaf); block bounds of a word and of (word, leaf)
    key = tok * n_leaf + leaf[item]
    order = np.argsort(key, kind="stable")
    post_key, post_item = key[order], item[order]
    w_start = np.searchsorted(post_key, tok * n_leaf, side="left")
    w_end = np.searchsorted(post_key, (tok + 1) * n_leaf, side="left")
    l_start = np.searchsorted(post_key, key, side="left")
    l_end = np.searchsorted(post_key, key, side="right")
    outside = (w_end - w_start) - (l_end - l_start)  # holders of the word in other leaves

    sel = outside > 0  # (item, word) occurrences that can give a word negative; grouped by item
    item, w_start, l_start, l_len, outside = item[sel], w_start[sel], l_start[sel], (l_end - l_start)[sel], outside[sel]
    per = np.bincount(item, minlength=n)
    first = np.concatenate(([0], np.cumsum(per)[:-1]))
    has = np.flatnonzero(per > 0)
    anchors_out, partners_out = [], []
    for _ in range(per_item):
        occ = first[has] + (rng.random(has.size) * per[has]).astype(np.int64)
        j = (rng.random(has.size) * outside[occ]).astype(np.int64)
        pos = w_start[occ] + j
        pos = np.where(pos < l_start[occ], pos, pos + l_len[occ])
        partner = post_item[pos]
        partner = np.where(norm[partner] != norm[has], partner, -1)
        anchors_out.append(has)
        partners_out.append(partner)
    return np.concatenate(anchors_out), np.concatenate(partners_out), int(n - has.size)


def _triplet_negatives(anchors: np.ndarray, hard_a: np.ndarray, hard_b: np.ndarray, n: int,
                       rng: np.random.Generator, other_leaf: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """A random hard negative of each anchor; a random other-leaf item where the anchor has none."""
    out = np.full(anchors.size, -1, dtype=np.int64)
    if not anchors.size:
        return out
    if hard_a.size:
        ha, hb = hard_a, hard_b
        order = np.argsort(ha, kind="stable")
        ha, hb = ha[order], hb[order]
        count = np.bincount(ha, minlength=n)
        start = np.concatenate(([0], np.cumsum(count)[:-1]))
        c = count[anchors]
        got = c > 0
        pick = start[anchors[got]] + (rng.random(int(got.sum())) * c[got]).astype(np.int64)
        out[got] = hb[pick]
    rest = out < 0
    if rest.any():
        out[rest] = other_leaf(anchors[rest])
    return out


def _capped(kind: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``cap`` pairs, each kind keeping its share (largest remainders), sorted."""
    counts = np.bincount(kind, minlength=len(KINDS)).astype(np.int64)
    exact = counts * cap / counts.sum()
    quota = np.floor(exact).astype(np.int64)
    short = cap - int(quota.sum())
    if short:
        quota[np.argsort(-(exact - quota), kind="stable")[:short]] += 1
    picks = [rng.choice(np.flatnonzero(kind == k), quota[k], replace=False) for k in range(len(KINDS)) if quota[k]]
    return np.sort(np.concatenate(picks))
