"""Deterministic train / eval / test split of a catalog by normalised product name.

Listings whose names differ only in case or spacing (pack sizes, repeated uploads) hash to the same
bucket, so a near-duplicate can never sit in training while its twin is in the test set.

>>> split_of("Dark Chocolate 55%")
'train'
>>> split_of("  DARK   chocolate 55% ") == split_of("Dark Chocolate 55%")
True
>>> split_labels(["Dark Chocolate 55%", "Sugar"], seed=3).tolist()
['test', 'train']

With ``seed=0`` the test rows are exactly the rows of ``bench.common.in_test_split`` (the source
20 % of the migration benchmark); the benchmark's target catalog (the other 80 %) is train + eval.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np

from migrate.core.catalog import normalise_text
from migrate.errors import TaxmigError

SPLITS = ("train", "eval", "test")


def normalised_name(text: str | None) -> str:
    """The key a product name is split under: lower case, runs of whitespace collapsed.

    >>> normalised_name("  Organic  Green\\tTea ")
    'organic green tea'
    """
    return normalise_text(text or "")


def _check_percents(eval_percent: int, test_percent: int) -> None:
    problems = []
    for name, value in (("eval_percent", eval_percent), ("test_percent", test_percent)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value <= 100:
            problems.append(f"{name}={value!r} is not a whole number from 0 to 100")
    if not problems and eval_percent + test_percent > 100:
        problems.append(f"eval_percent + test_percent = {eval_percent + test_percent} exceeds 100")
    if problems:
        raise TaxmigError("bad split: " + "; ".join(problems),
                          hint="give whole percentages, e.g. eval_percent=10, test_percent=20")


def _bucket(name: str | None, seed: int) -> int:
    norm = normalised_name(name)
    key = norm if seed == 0 else f"{seed}\x00{norm}"
    return int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:8], 16) % 100


def _label(bucket: int, eval_percent: int, test_percent: int) -> str:
    if bucket < test_percent:
        return "test"
    if bucket < test_percent + eval_percent:
        return "eval"
    return "train"


def split_of(name: str | None, *, seed: int = 0, eval_percent: int = 10, test_percent: int = 20) -> str:
    """``"train"``, ``"eval"`` or ``"test"`` for one product name.

    The bucket is ``int(sha1(key)[:8], 16) % 100`` with ``key`` the normalised name (``seed == 0``)
    or ``f"{seed}\\x00{normalised name}"``; buckets below ``test_percent`` are test, the next
    ``eval_percent`` buckets eval, the rest train. A missing name (None) counts as "".

    >>> split_of("Water Bottle - Orange", eval_percent=0, test_percent=100)
    'test'
    """
    _check_percents(eval_percent, test_percent)
    return _label(_bucket(name, seed), eval_percent, test_percent)


def split_labels(names: Sequence[str | None], *, seed: int = 0, eval_percent: int = 10,
                 test_percent: int = 20) -> np.ndarray:
    """:func:`split_of` for every name, as a numpy array of ``"train" | "eval" | "test"``.

    >>> split_labels(["a", "A ", "b"]).tolist()[0] == split_labels(["A "]).tolist()[0]
    True
    """
    _check_percents(eval_percent, test_percent)
    labels = [_label(_bucket(n, seed), eval_percent, test_percent) for n in names]
    return np.array(labels, dtype="<U5")
