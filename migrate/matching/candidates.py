"""Candidate right products for each left product: FAISS nearest neighbours, plus rights that share
a model number with the left (a match the encoder ranks low is still found by its code).

Searches run both ways: a right product's nearest left products give the reverse context the
scorer uses ("is this left the best this right product can find?"). With ``within`` (duplicates
inside one catalog) left and right are the same products and each product's own row is excluded.

>>> import numpy as np
>>> v = np.array([[1, 0], [0.8, 0.6], [0, 1]], dtype=np.float32)
>>> c = search_candidates(v, v, k=2, within=True)
>>> c.ids[0].tolist(), [round(float(s), 2) for s in c.sims[0]]
([1, 2], [0.8, 0.0])
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from migrate.core.index import build_index, search

log = logging.getLogger(__name__)

MAX_CODE_SHARERS = 20
"""A code shared by more right products than this (a series name, "1080p") adds no candidates."""


@dataclass
class Candidates:
    """``ids[i]`` (``-1`` padded) and ``sims[i]``: the nearest products of query ``i``, best first."""

    ids: np.ndarray
    sims: np.ndarray

    @property
    def best(self) -> np.ndarray:
        """Cosine of each query's nearest product (``nan`` where it has none)."""
        return np.where(self.ids[:, 0] >= 0, self.sims[:, 0], np.nan) if self.ids.shape[1] else \
            np.full(len(self.ids), np.nan)


def search_candidates(queries: np.ndarray, indexed: np.ndarray, *, k: int, within: bool = False) -> Candidates:
    """The ``k`` nearest ``indexed`` rows of each query by cosine (unit vectors); ``within`` drops
    each query's own row (query ``i`` is indexed row ``i``)."""
    n_index = len(indexed)
    if n_index == 0 or len(queries) == 0 or (within and n_index < 2):
        return Candidates(np.full((len(queries), max(k, 1)), -1, np.int64), np.zeros((len(queries), max(k, 1)),
                                                                                       np.float32))
    index = build_index(indexed, queries=len(queries))
    want = min(k + (1 if within else 0), n_index)
    sims, ids = search(index, queries, want)
    if within:
        own = ids == np.arange(len(queries))[:, None]
        # drop the own row (or the last column when an exact tie pushed it out of the list)
        drop = np.where(own.any(1), own.argmax(1), want - 1)
        keep = np.ones_like(ids, dtype=bool)
        keep[np.arange(len(ids)), drop] = False
        ids = ids[keep].reshape(len(ids), want - 1)
        sims = sims[keep].reshape(len(ids), want - 1)
    if ids.shape[1] < k:
        pad = k - ids.shape[1]
        ids = np.hstack([ids, np.full((len(ids), pad), -1, np.int64)])
        sims = np.hstack([sims, np.zeros((len(ids), pad), np.float32)])
    return Candidates(ids.astype(np.int64), sims.astype(np.float32))


def code_candidates(left_codes: list[frozenset[str]], right_codes: list[frozenset[str]], *,
                    within: bool = False, max_sharers: int = MAX_CODE_SHARERS) -> list[list[int]]:
    """For each left product, the right products with an identical model code (exact, normalised).

    >>> code_candidates([frozenset({"kdcc669"})], [frozenset(), frozenset({"kdcc669"})])
    [[1]]
    """
    holders: dict[str, list[int]] = {}
    for j, codes in enumerate(right_codes):
        for code in codes:
            holders.setdefault(code, []).append(j)
    out: list[list[int]] = []
    for i, codes in enumerate(left_codes):
        found: dict[int, None] = {}
        for code in codes:
            sharers = holders.get(code, ())
            if len(sharers) <= max_sharers:
                found.update(dict.fromkeys(j for j in sharers if not (within and j == i)))
        out.append(list(found))
    return out


def candidate_pairs(nn_ids: np.ndarray, by_code: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Flat (left, right) candidate pairs: nearest neighbours, then code sharers not already listed."""
    li: list[int] = []
    ri: list[int] = []
    for i, row in enumerate(nn_ids.tolist()):
        seen = dict.fromkeys(j for j in row if j >= 0)
        seen.update(dict.fromkeys(by_code[i]))
        li.extend([i] * len(seen))
        ri.extend(seen)
    return np.asarray(li, np.int64), np.asarray(ri, np.int64)
