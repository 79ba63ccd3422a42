"""What the matcher knows about a (left, right) pair: encoder cosine, rapidfuzz title similarity,
agreement of model numbers, numbers and brands, and how each compares with the best the two
products can find elsewhere (a pair that is both products' best is far likelier the same item).

:data:`FEATURES`, in order:

- ``cosine``: encoder cosine of the two product texts;
- ``cosine_gap_left`` / ``cosine_gap_right``: cosine minus the best cosine the left (right) product
  reaches with any product of the other side (0 when this is its nearest, else negative);
- ``title_similarity``: rapidfuzz ``token_set_ratio`` of the titles (first text column), 0-1;
- ``title_partial``: rapidfuzz ``partial_ratio`` of the titles, 0-1;
- ``title_gap_left`` / ``title_gap_right``: title similarity minus the best the left (right)
  product reaches among its nearest candidates (0 or negative);
- ``code_agreement``: 1 when a model number of one side (a title word with letters and digits, or
  a code column) appears in the other's title or codes, 0 when both have model numbers and none
  agree, 0.5 when unknown;
- ``number_agreement``: Jaccard overlap of the numbers in the titles (0.5 when a side has none);
- ``brand_agreement``: 1 when the brands agree (or one side's brand is in the other's title),
  0 when both sides name different brands, 0.5 when unknown.

With a cross-encoder re-ranker (``match --reranker``), :data:`RERANKER_FEATURES` follow:

- ``cross_encoder``: the re-ranker's probability that the two are the same product;
- ``cross_encoder_gap_left`` / ``cross_encoder_gap_right``: that probability minus the best the
  left (right) product reaches among the candidate pairs ``match`` scores (0 or negative), as the
  cosine and title gaps do for theirs.

>>> sorted(model_codes("sony np-fh100 infolithium battery pack npfh100"))
['npfh100']
>>> code_agreement(frozenset({"kdcc669"}), "kenwoodkdcc669", frozenset(), "kenwoodkdcc669carcdchanger")
1.0
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from rapidfuzz import fuzz, utils

from migrate.matching.candidates import Candidates
from migrate.matching.inputs import MatchCatalog

FEATURES = ("cosine", "cosine_gap_left", "cosine_gap_right", "title_similarity", "title_partial",
            "title_gap_left", "title_gap_right", "code_agreement", "number_agreement", "brand_agreement")
RERANKER_FEATURES = ("cross_encoder", "cross_encoder_gap_left", "cross_encoder_gap_right")
"""The columns a re-ranker adds after :data:`FEATURES` (``migrate.matching.pair_features.PairFeatures``):
its probability and the probability's gaps to each product's best. What the gaps add to the joined score:
BENCHMARKS.md, "match: Abt-Buy and Amazon-Google (DeepMatcher splits)", the re-ranker's comparison rows."""
UNKNOWN = 0.5
MIN_CODE = 4
_NOT_ALNUM = re.compile(r"[^a-z0-9]")
_DIGIT = re.compile(r"\d")
_LETTER = re.compile(r"[a-z]")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def squash(text: str) -> str:
    """Lower case, letters and digits only: ``"PS-LX350H"`` -> ``"pslx350h"``."""
    return _NOT_ALNUM.sub("", text.lower())


def model_codes(title: str, extra: Sequence[str] = ()) -> frozenset[str]:
    """Model-number-like words of ``title`` (4+ characters with letters and digits, squashed) and
    the squashed values of code columns (``extra``, any 3+ characters)."""
    words = {squash(w) for w in title.split()}
    codes = {w for w in words if len(w) >= MIN_CODE and _DIGIT.search(w) and _LETTER.search(w)}
    codes.update(c for c in (squash(v) for v in extra) if len(c) >= 3)
    return frozenset(codes)


def numbers(title: str) -> frozenset[str]:
    """``"office 2007 6.0 3-user"`` -> ``{"2007", "6.0", "3"}``."""
    return frozenset(_NUMBER.findall(title))


def code_agreement(codes_a: frozenset[str], squashed_a: str, codes_b: frozenset[str], squashed_b: str) -> float:
    """1 if a code of one side is in the other's squashed title+codes, 0 if both have codes that
    disagree, else :data:`UNKNOWN`."""
    if any(c in squashed_b for c in codes_a) or any(c in squashed_a for c in codes_b):
        return 1.0
    return 0.0 if codes_a and codes_b else UNKNOWN


def number_agreement(a: frozenset[str], b: frozenset[str]) -> float:
    """Jaccard overlap of two number sets; :data:`UNKNOWN` when either is empty."""
    return len(a & b) / len(a | b) if a and b else UNKNOWN


def brand_agreement(brand_a: str, title_a: str, brand_b: str, title_b: str) -> float:
    """Brands compared with rapidfuzz (``"aspyr"`` ~ ``"aspyr media inc"``); with one brand only,
    1 when it is a phrase of the other title. Inputs are rapidfuzz-processed (lower case, no punctuation)."""
    if brand_a and brand_b:
        return 1.0 if fuzz.token_set_ratio(brand_a, brand_b) >= 90 else 0.0
    if brand_a or brand_b:
        brand, title = (brand_a, title_b) if brand_a else (brand_b, title_a)
        return 1.0 if f" {brand} " in f" {title} " else UNKNOWN
    return UNKNOWN


@dataclass
class Side:
    """One catalog prepared for pair features: unit vectors, processed titles, codes, numbers, brands."""

    vectors: np.ndarray
    titles: list[str]
    codes: list[frozenset[str]]
    squashed: list[str]
    numbers: list[frozenset[str]]
    brands: list[str]

    @classmethod
    def of(cls, catalog: MatchCatalog, vectors: np.ndarray) -> "Side":
        titles = [utils.default_process(t) for t in catalog.titles]
        return cls(vectors=np.ascontiguousarray(vectors, dtype=np.float32), titles=titles,
                   codes=[model_codes(t, c) for t, c in zip(catalog.titles, catalog.codes)],
                   squashed=[squash(t + " " + " ".join(c)) for t, c in zip(catalog.titles, catalog.codes)],
                   numbers=[numbers(t) for t in catalog.titles],
                   brands=[utils.default_process(b) for b in catalog.brands])

    def __len__(self) -> int:
        return len(self.titles)


def _best_title(titles_q: list[str], titles_c: list[str], cands: Candidates) -> np.ndarray:
    """For each query, the best ``token_set_ratio`` (0-1) among its candidates (``nan`` when none)."""
    out = np.full(len(titles_q), np.nan, np.float32)
    for i, row in enumerate(cands.ids):
        scores = [fuzz.token_set_ratio(titles_q[i], titles_c[j]) for j in row if j >= 0]
        if scores:
            out[i] = max(scores) / 100.0
    return out


@dataclass
class PairContext:
    """Everything pair features need: both sides and each product's best cosine and title score."""

    left: Side
    right: Side
    best_cos_left: np.ndarray
    best_cos_right: np.ndarray
    best_title_left: np.ndarray
    best_title_right: np.ndarray

    @classmethod
    def build(cls, left: Side, right: Side, forward: Candidates, reverse: Candidates) -> "PairContext":
        """``forward``: each left's nearest rights; ``reverse``: each right's nearest lefts."""
        return cls(left, right, forward.best, reverse.best,
                   _best_title(left.titles, right.titles, forward), _best_title(right.titles, left.titles, reverse))

    def features(self, li: np.ndarray, ri: np.ndarray) -> np.ndarray:
        """Feature matrix (len(li), len(FEATURES)) of the pairs (li[n], ri[n])."""
        li = np.asarray(li, dtype=np.int64)
        ri = np.asarray(ri, dtype=np.int64)
        out = np.zeros((len(li), len(FEATURES)), dtype=np.float32)
        if not len(li):
            return out
        L, R = self.left, self.right
        cos = np.einsum("ij,ij->i", L.vectors[li], R.vectors[ri])
        out[:, 0] = cos
        out[:, 1] = cos - np.fmax(np.nan_to_num(self.best_cos_left[li], nan=-1.0), cos)
        out[:, 2] = cos - np.fmax(np.nan_to_num(self.best_cos_right[ri], nan=-1.0), cos)
        for n, (i, j) in enumerate(zip(li.tolist(), ri.tolist())):
            ta, tb = L.titles[i], R.titles[j]
            title = fuzz.token_set_ratio(ta, tb) / 100.0
            out[n, 3] = title
            out[n, 4] = fuzz.partial_ratio(ta, tb) / 100.0
            best_l, best_r = self.best_title_left[i], self.best_title_right[j]
            out[n, 5] = title - (max(best_l, title) if best_l == best_l else title)
            out[n, 6] = title - (max(best_r, title) if best_r == best_r else title)
            out[n, 7] = code_agreement(L.codes[i], L.squashed[i], R.codes[j], R.squashed[j])
            out[n, 8] = number_agreement(L.numbers[i], R.numbers[j])
            out[n, 9] = brand_agreement(L.brands[i], ta, R.brands[j], tb)
        return out
