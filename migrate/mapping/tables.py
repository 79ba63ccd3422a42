"""The mapping's tables: a scored frame per product (before flags), the mapping with its flags,
and the crosswalk of source category -> target category."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from migrate.core.catalog import Catalog
from migrate.mapping.inputs import Targets, source_columns
from migrate.mapping.result import CROSSWALK_COLUMNS, mapping_dtype
from migrate.mapping.scoring import CategoryScores


RAW_COLUMNS = ("_confidence", "_margin", "_nearest_sim", "_label_sim", "_backed_off")
"""Unrounded values the flags read (the mapping shows them rounded; ``_backed_off``: a broader
category suggested, PARENT_BACKOFF); dropped by :func:`with_flags`."""



def scored_frame(source: Catalog, targets: Targets, scores: CategoryScores, confidence: np.ndarray,
                 target_texts: list[str]) -> pl.DataFrame:
    """The mapping's columns for ``source`` except needs_review and flags, plus :data:`RAW_COLUMNS`."""
    cats = targets.categories
    ids = targets.taxonomy.ids if targets.taxonomy is not None else {}

    def name(i: int) -> str:
        return cats[i] if i >= 0 else ""

    top = scores.top_ids
    data: dict[str, Any] = {
        "target_category": [name(i) for i in top[:, 0]],
        "target_id": [ids.get(name(i), "") for i in top[:, 0]],
        "confidence": np.round(confidence, 4),
        "margin": np.round(scores.margin, 4),
    }
    for j in range(1, top.shape[1]):
        data[f"alt{j}_category"] = [name(i) for i in top[:, j]]
        data[f"alt{j}_score"] = np.round(scores.top_scores[:, j], 4)
    data["score"] = np.round(scores.top_scores[:, 0], 4)
    data["nearest_target"] = [target_texts[i] if i >= 0 else "" for i in scores.nearest_idx]
    data["nearest_similarity"] = np.round(np.nan_to_num(scores.nearest_sim, nan=0.0), 4)
    if top.shape[1] < 3:  # keep the documented columns even with --top-n 1 or 2
        for j in range(top.shape[1], 3):
            data[f"alt{j}_category"] = [""] * len(source)
            data[f"alt{j}_score"] = np.zeros(len(source))
    frame = pl.concat([source_columns(source), pl.DataFrame(data, schema={c: mapping_dtype(c) for c in data})],
                      how="horizontal")
    backed_off = scores.backed_off if scores.backed_off is not None else np.zeros(len(source), dtype=bool)
    return frame.with_columns(
        *(pl.Series(name, np.asarray(values, dtype=np.float64)) for name, values in
          zip(RAW_COLUMNS, (confidence, scores.margin, scores.nearest_sim, scores.label_sim))),
        pl.Series(RAW_COLUMNS[-1], np.asarray(backed_off, dtype=bool), pl.Boolean))


def flag_inputs(scored: pl.DataFrame) -> dict[str, Any]:
    """The per-row arguments of :func:`~migrate.mapping.flags.compute_flags`, read from a :func:`scored_frame`."""
    return {"confidence": scored["_confidence"].to_numpy(), "margin": scored["_margin"].to_numpy(),
            "nearest_sim": scored["_nearest_sim"].to_numpy(), "label_sim": scored["_label_sim"].to_numpy(),
            "source_categories": scored["source_category"].to_list(),
            "target_categories": scored["target_category"].to_list(), "backed_off": scored["_backed_off"].to_numpy()}


def with_flags(scored: pl.DataFrame, flags: list[list[str]]) -> pl.DataFrame:
    """The mapping: a :func:`scored_frame` with needs_review and flags in place, raw columns dropped."""
    frame = scored.drop(RAW_COLUMNS).with_columns(pl.Series("needs_review", [bool(f) for f in flags], pl.Boolean),
                                                   pl.Series("flags", [",".join(f) for f in flags], pl.String))
    at = frame.columns.index("margin") + 1
    rest = [c for c in frame.columns if c not in ("needs_review", "flags")]
    return frame.select(rest[:at] + ["needs_review", "flags"] + rest[at:])

def crosswalk_frame(mapping: pl.DataFrame) -> pl.DataFrame:
    """Source category -> target category: count, share of the source category, mean confidence."""
    if mapping.height == 0:
        return pl.DataFrame(schema={"source_category": pl.String, "target_category": pl.String, "count": pl.Int64,
                                    "share": pl.Float64, "mean_confidence": pl.Float64})
    return (mapping.group_by("source_category", "target_category")
            .agg(pl.len().cast(pl.Int64).alias("count"), pl.col("confidence").mean().round(4).alias("mean_confidence"))
            .with_columns((pl.col("count") / pl.col("count").sum().over("source_category")).round(4).alias("share"))
            .sort(["source_category", "count", "target_category"], descending=[False, True, False])
            .select(CROSSWALK_COLUMNS))
