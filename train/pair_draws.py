"""Each kind of training pair, drawn over the items of :mod:`train.pair_items` (the second stage of
:func:`train.pairs.build_pairs`): positives inside a leaf, random negatives of other leaves, and
the hard negatives -- a shared word (an inverted word index), a sibling leaf under the same parent,
and the current encoder's nearest products of another leaf, mined with the hard positives and
triplets they give.
"""

from __future__ import annotations

import re
from typing import Callable

import numpy as np

from migrate.errors import TaxmigError
from train.pair_items import ATTEMPTS, ENC, EPOS, NEG, POS, SIB, WORD_NEG, Items, PairConfig

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
ENCODER_K = 30  # neighbours searched per product for the encoder-mined pairs (more when asked for more)


def word_tokens(text: str) -> set[str]:
    """The words a product can share with a word negative (stop words removed).

    >>> sorted(word_tokens("Dark Chocolate 55% - Pack of 2 | Amul"))
    ['amul', 'chocolate', 'dark']
    """
    return {w for w in WORD.findall(text.lower()) if w not in STOP_WORDS}


def draw_pairs(items: Items, cfg: PairConfig, embed: Callable[[list[str]], np.ndarray] | None,
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
        add(*_positives(items, cfg.positives_per_product, rng), POS)
    mined = (np.zeros(0, np.int64),) * 3
    if embed is not None and cfg.encoder_negatives_per_product:
        neg_a, neg_b, pos_a, pos_b, mined = _encoder_mined(items.texts, embed, items.leaf, items.norm,
                                                           cfg.encoder_negatives_per_product, items.own_start,
                                                           items.own_size, items.within, rng)
        add(neg_a, neg_b, ENC)
        add(pos_a, pos_b, EPOS)
        notes.append(f"{mined[0].size} of {n} products have a product of another category among their "
                     f"{ENCODER_K} nearest under the current encoder: mined triplets for them")
    if cfg.word_negatives_per_product:
        a, b, without = _word_negatives(items.texts, items.leaf, items.norm, items.n_leaf,
                                        cfg.word_negatives_per_product, rng)
        add(a, b, WORD_NEG)
        if without:
            notes.append(f"{without} of {n} products share no usable word with a product of another "
                         "category: they have no word negative")
    if cfg.sibling_negatives_per_product:
        add(*_sibling_negatives(items, cfg.sibling_negatives_per_product, rng, notes), SIB)
    if cfg.negatives_per_product:
        anchors = np.repeat(np.arange(n), cfg.negatives_per_product)
        add(anchors, items.other_leaf(anchors, rng), NEG)
    a = np.concatenate(firsts) if firsts else np.zeros(0, dtype=np.int64)
    b = np.concatenate(seconds) if seconds else np.zeros(0, dtype=np.int64)
    kind = np.concatenate(kinds) if kinds else np.zeros(0, dtype=np.int8)
    return a, b, kind, mined


def _positives(items: Items, per_item: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
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


def _sibling_negatives(items: Items, per_item: int, rng: np.random.Generator,
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
    k = min(n, max(ENCODER_K, per_item + 5))
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
    for _ in range(ATTEMPTS):
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
