"""The pairs ``match`` scores and their feature rows: each left product's nearest candidates and the
products sharing a model code with it (:func:`search_pairs`), read through :class:`PairFeatures`
(:meth:`~migrate.matching.features.PairContext.features`, plus a re-ranker's columns when there is one)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from migrate.matching.candidates import candidate_pairs, code_candidates
from migrate.matching.features import FEATURES, RERANKER_FEATURES, PairContext
from migrate.matching.inputs import MatchInputs
from migrate.matching.reranker import Reranker, serialise


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
    :meth:`migrate.matching.matcher.Matcher.context`), then the products sharing a model code with it."""
    by_code = code_candidates(context.left.codes, context.right.codes, within=within)
    return candidate_pairs(forward.ids, by_code)
