"""The paired comparison behind `taxmig evaluate` and the benchmarks: exact McNemar on discordant rows."""

from __future__ import annotations

import numpy as np
import pytest

from train.paired import paired_comparison


def test_counts_only_the_rows_where_exactly_one_model_is_right():
    first = np.array([True] * 50 + [True] * 10 + [False] * 3 + [False] * 7)
    second = np.array([True] * 50 + [False] * 10 + [True] * 3 + [False] * 7)
    r = paired_comparison(first, second)
    assert (r.only_first, r.only_second) == (10, 3)
    # two-sided exact binomial: 2 * P(X <= 3), X ~ Bin(13, 0.5) = 2 * 378 / 8192
    assert r.p_value == pytest.approx(2 * 378 / 8192)


def test_one_sided_wins_and_ties():
    assert paired_comparison(np.ones(10, bool), np.zeros(10, bool)).p_value == pytest.approx(2 * 0.5 ** 10)
    same = paired_comparison(np.array([True, False]), np.array([True, False]))
    assert (same.only_first, same.only_second, same.p_value) == (0, 0, 1.0)
    assert paired_comparison(np.array([True, False]), np.array([False, True])).p_value == 1.0


def test_rows_must_pair_up():
    with pytest.raises(ValueError, match="paired rows differ"):
        paired_comparison(np.ones(3, bool), np.ones(4, bool))
