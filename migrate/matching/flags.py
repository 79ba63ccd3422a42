"""Which rows of a match run a person should look at, and why: the flags and ``needs_review``."""

from __future__ import annotations

import polars as pl

from migrate.matching.result import CLUSTER_COLUMNS, MATCH_COLUMNS
from migrate.matching.settings import MatchSettings

FLAG_ORDER = ("BORDERLINE", "AMBIGUOUS", "WEAK_SCORE", "CONTESTED", "CODE_CONFLICT", "LARGE_CLUSTER")
"""- BORDERLINE: the best score is within ``review_margin`` of the threshold;
- AMBIGUOUS (two catalogs): a second candidate also reaches the threshold, within
  :data:`AMBIGUITY_MARGIN` of the best;
- WEAK_SCORE (one-to-one pairing without labelled pairs): a match because each product is the
  other's best candidate, whose score is below :data:`~migrate.matching.scoring.DEFAULT_THRESHOLD`
  -- the score alone would not call it a match (a product with no counterpart pairs with its
  nearest look-alike this way);
- CONTESTED (one-to-one pairing): the best candidate reaches the threshold but is another left
  product's better match, so this one is left unmatched (a duplicate listing on the left?);
- CODE_CONFLICT: a match whose model numbers disagree (a variant: colour, size, region?);
- LARGE_CLUSTER (``within``): the product's cluster is larger than ``max_cluster_size`` (chained
  matches?)."""
AMBIGUITY_MARGIN = 0.05
"""AMBIGUOUS: how close to the best score a second candidate reaching the threshold must be."""


def add_flags(matches: pl.DataFrame, threshold: float, settings: MatchSettings, within: bool,
              weak_below: float | None = None) -> pl.DataFrame:
    """Fill ``flags`` (comma separated, :data:`FLAG_ORDER`) and ``needs_review``; cluster columns
    move next to ``is_match``. ``weak_below``: matches scoring below it are WEAK_SCORE. ``matches``
    has a column ``_contested`` (CONTESTED where true), which is dropped."""
    score = pl.col("score")
    has = pl.col("right_id") != ""
    conditions = {
        "BORDERLINE": has & ((score - threshold).abs() < settings.review_margin),
        "AMBIGUOUS": (pl.lit(not within) & pl.col("alt1_score").is_not_null()
                      & (pl.col("alt1_score") >= threshold) & (score - pl.col("alt1_score") < AMBIGUITY_MARGIN)),
        "WEAK_SCORE": pl.lit(weak_below is not None) & pl.col("is_match") & (score < (weak_below or 0.0)),
        "CONTESTED": pl.col("_contested"),
        "CODE_CONFLICT": pl.col("is_match") & (pl.col("code_agreement") == 0.0),
    }
    if within:
        conditions["LARGE_CLUSTER"] = pl.col("cluster_size") > settings.max_cluster_size
    flags = pl.concat_str([pl.when(cond.fill_null(False)).then(pl.lit(name + ",")).otherwise(pl.lit(""))
                           for name, cond in conditions.items()]).str.strip_chars_end(",")
    out = (matches.with_columns(flags.alias("flags")).with_columns((pl.col("flags") != "").alias("needs_review"))
           .drop("_contested"))
    if within:
        cols = [c for c in MATCH_COLUMNS if c not in CLUSTER_COLUMNS]
        at = cols.index("is_match") + 1
        out = out.select(cols[:at] + CLUSTER_COLUMNS + cols[at:])
    return out
