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

The stages: the catalog as items in category blocks (:mod:`train.pair_items`, with
:class:`PairConfig` and :data:`KINDS`), each kind's draws, mining included (:mod:`train.pair_draws`),
then here: cleaning, triplets, the cap and the tables.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import polars as pl

from migrate.errors import TaxmigError
from train.pair_draws import draw_pairs
from train.pair_items import (ATTEMPTS, ENC, EPOS, KINDS, POS, SIB, WORD_NEG, Items, PairConfig, build_items,
                              check_inputs)

log = logging.getLogger(__name__)

PAIR_COLUMNS = ("sentence1", "sentence2", "score")
TRIPLET_COLUMNS = ("anchor", "positive", "negative")


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
    check_inputs(texts, categories)
    cfg = config
    rng = np.random.default_rng(cfg.seed)
    notes: list[str] = []
    items = build_items(texts, categories, rng, notes)
    a, b, kind, mined = draw_pairs(items, cfg, embed, rng, notes)
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


def _clean_pairs(items: Items, a: np.ndarray, b: np.ndarray, kind: np.ndarray):
    """No self-pairs (same text), no negative between texts that share a category (a text listed
    under two categories), no duplicates in either order (by text); the first kind in KINDS wins.
    Also returns each anchor's hard negatives as drawn (for the triplets)."""
    norm = items.norm
    keep = norm[a] != norm[b]
    negative = (kind != POS) & (kind != EPOS)
    keep[negative] &= ~items.shares_a_leaf(a[negative], b[negative])
    a, b, kind = a[keep], b[keep], kind[keep]
    hard = (kind == ENC) | (kind == WORD_NEG) | (kind == SIB)
    hard_a, hard_b = a[hard], b[hard]
    n_norm = int(norm.max()) + 1
    lo, hi = np.minimum(norm[a], norm[b]), np.maximum(norm[a], norm[b])
    _, first = np.unique(lo * n_norm + hi, return_index=True)
    first.sort()
    return a[first], b[first], kind[first], hard_a, hard_b


def _triplets(items: Items, a: np.ndarray, b: np.ndarray, kind: np.ndarray, hard_a: np.ndarray,
              hard_b: np.ndarray, mined, rng: np.random.Generator):
    """Each positive pair + a hard negative of the anchor (else a random one); the mined triplets
    first. Returns ``(anchors, positives, negatives, number mined)``."""
    pos_sel = kind == POS
    t_a, t_p = a[pos_sel], b[pos_sel]
    t_n = _triplet_negatives(t_a, hard_a, hard_b, items.n, rng, lambda anchor: items.other_leaf(anchor, rng))
    # a negative listed (also) under the anchor's or the positive's category is redrawn at random
    bad = np.flatnonzero(t_n >= 0)
    bad = bad[items.shares_a_leaf(t_a[bad], t_n[bad]) | items.shares_a_leaf(t_p[bad], t_n[bad])]
    t_n[bad] = -1
    for _ in range(ATTEMPTS):
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


def _pair_frame(items: Items, cfg: PairConfig, a: np.ndarray, b: np.ndarray, kind: np.ndarray) -> pl.DataFrame:
    """The pairs table: texts, the score of their relation (same leaf, same parent, other), kind."""
    parent, root = items.parent, items.root
    same_parent = (parent[a] == parent[b]) & (parent[a] != root)
    score = np.where((kind == POS) | (kind == EPOS), float(cfg.score_same_leaf),
                     np.where(same_parent, float(cfg.score_same_parent), float(cfg.score_other)))
    return pl.DataFrame({
        "sentence1": items.column.gather(a), "sentence2": items.column.gather(b),
        "score": pl.Series(score, dtype=pl.Float64),
        "kind": pl.Series(kind).replace_strict(dict(enumerate(KINDS)), return_dtype=pl.String),
    })


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
