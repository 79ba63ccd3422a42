"""Is one model really better than another on the same products? The exact McNemar test.

Two accuracies measured on the same rows differ by chance less than two independent ones: what
counts is only the rows where exactly one model is right. Under "equally good" those split
50/50; the two-sided exact binomial test on them is McNemar's test (scipy's ``binomtest``).

>>> r = paired_comparison(np.array([True, True, True, False]), np.array([True, False, False, False]))
>>> r.only_first, r.only_second, round(r.p_value, 2)
(2, 0, 0.5)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class PairedComparison:
    """Rows only the first model gets right, rows only the second does, and the two-sided p-value."""

    only_first: int
    only_second: int
    p_value: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def paired_comparison(first_right: np.ndarray, second_right: np.ndarray) -> PairedComparison:
    """Exact McNemar test of two models' per-row correctness (boolean arrays over the same rows)."""
    from scipy.stats import binomtest

    first = np.asarray(first_right, dtype=bool)
    second = np.asarray(second_right, dtype=bool)
    if first.shape != second.shape:
        raise ValueError(f"paired rows differ: {first.shape} vs {second.shape}")
    only_first, only_second = int((first & ~second).sum()), int((~first & second).sum())
    n = only_first + only_second
    return PairedComparison(only_first, only_second, float(binomtest(only_first, n, 0.5).pvalue) if n else 1.0)
