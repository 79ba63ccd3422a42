"""Scores kept between nightly runs: a product whose inputs did not change keeps last night's scores.

Onto a labelled target catalog a product's scores depend only on its own texts and source
category, the target side, the model and the scoring settings, so a night that keeps the scores of
unchanged products and scores only the new and changed ones gives the same mapping as scoring them
all, for a fraction of the work. Onto a taxonomy, self-training reads the whole catalog, so one new
product nudges every other product's scores: scoring them all again moves the suggestions of many
untouched products even on a night that changed 1%, and each moved row goes back to a reviewer.
Keeping their scores makes a night change only what changed; ``taxmig reconcile --rescore-all``
scores every product again (after a model or settings change the key below differs and that
happens by itself).

Flags are not kept: they are computed every night over the whole catalog (SOURCE_SPLIT reads every
row of a source category). The key of the kept scores hashes everything scores depend on besides
the product (:func:`scoring_key`); a product's own part is :func:`row_keys`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import polars as pl

from migrate import __version__
from migrate.core.hashing import text_hash

log = logging.getLogger(__name__)

SOURCE_COLUMNS = ("source_row", "source_id", "source_text", "source_category")
"""Columns of a scored frame that describe the product, not its scores: tonight's, never kept."""
KEY_COLUMN = "_scoring_key"
ROW_COLUMN = "_row_key"


def scoring_key(*, model_fingerprint: str, categories: Sequence[str], target_texts: Sequence[str],
                product_categories: np.ndarray | None, settings: Any) -> str:
    """sha256 over what a product's scores depend on besides the product: the taxmig version (a new
    release may score differently), the model, the target categories, the labelled target products
    (texts and categories) and the settings that score (scoring, category context, leaves only; the
    seed and calibration size, which the calibrator's fit reads). Thresholds are not in it: they
    only set flags, which every night computes again."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"version": __version__, "model": model_fingerprint,
                              "scoring": asdict(settings.scoring), "category_context": settings.category_context,
                              "leaves_only": settings.leaves_only, "seed": settings.seed,
                              "calibration_limit": settings.calibration_limit}, sort_keys=True, default=str).encode())
    for part in (categories, target_texts):
        digest.update(len(part).to_bytes(8, "little"))
        for text in part:
            digest.update(text.encode())
            digest.update(b"\x00")
    if product_categories is not None:
        digest.update(np.ascontiguousarray(product_categories, dtype=np.int64).tobytes())
    return digest.hexdigest()


def row_keys(embedding_texts: Sequence[str], texts: Sequence[str], categories: Sequence[str]) -> list[str]:
    """A product's own part of its scores: the text it is embedded as, its plain text (the lexical
    and classifier votes, the word model) and its source category (self-training's prior)."""
    return [text_hash(f"{e}\x00{t}\x00{c}") for e, t, c in zip(embedding_texts, texts, categories)]


@dataclass
class KeptScores:
    """The scored rows of one night under one :func:`scoring_key` (``frame``: :data:`ROW_COLUMN` and
    every scored column but :data:`SOURCE_COLUMNS`, one row per distinct row key)."""

    key: str
    frame: pl.DataFrame

    @classmethod
    def from_scored(cls, key: str, scored: pl.DataFrame, keys: Sequence[str]) -> "KeptScores":
        frame = scored.drop(SOURCE_COLUMNS).with_columns(pl.Series(ROW_COLUMN, list(keys), pl.String))
        return cls(key, frame.unique(ROW_COLUMN, keep="first", maintain_order=True))

    def positions(self, key: str, keys: Sequence[str]) -> np.ndarray:
        """Row of ``frame`` kept for each of ``keys`` (-1: score it tonight); all -1 under another key."""
        if key != self.key:
            log.info("the model, target or scoring settings changed: every product is scored again")
            return np.full(len(keys), -1, dtype=np.int64)
        where = {k: i for i, k in enumerate(self.frame[ROW_COLUMN].to_list())}
        return np.fromiter((where.get(k, -1) for k in keys), dtype=np.int64, count=len(keys))

    def merged(self, source_columns: pl.DataFrame, positions: np.ndarray, scored: pl.DataFrame | None) -> pl.DataFrame:
        """Tonight's scored frame: the kept scores where ``positions`` >= 0, ``scored`` (the rows
        scored tonight, in order) elsewhere; ``source_columns``: :data:`SOURCE_COLUMNS` of every row."""
        kept = positions >= 0
        order = np.concatenate([np.flatnonzero(kept), np.flatnonzero(~kept)])
        parts = [pl.concat([source_columns.filter(pl.Series(kept)),
                            self.frame[positions[kept]].drop(ROW_COLUMN)], how="horizontal")]
        if scored is not None:
            parts.append(scored.select(parts[0].columns))
        joined = pl.concat(parts) if len(parts) > 1 else parts[0]
        return joined[np.argsort(order, kind="stable")]

    def write(self, path: str | Path) -> None:
        self.frame.with_columns(pl.lit(self.key).alias(KEY_COLUMN)).write_parquet(path)

    @classmethod
    def read(cls, path: str | Path) -> "KeptScores | None":
        """The kept scores in ``path``; None when there are none or the file cannot be read (score again)."""
        path = Path(path)
        if not path.exists():
            return None
        try:
            frame = pl.read_parquet(path)
            key = frame[KEY_COLUMN][0] if frame.height else ""
            return cls(key, frame.drop(KEY_COLUMN))
        except (OSError, pl.exceptions.PolarsError, KeyError) as exc:
            log.warning("ignoring %s (%s): every product is scored again", path, exc.__class__.__name__)
            return None
