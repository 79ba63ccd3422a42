"""Who decides a product's category: a person's decision wins over the model, for good.

:func:`resolve_products` joins tonight's model mapping with the decisions in force and the
previous state into the new products table. A decision holds until the product's text changes
*materially* (a new source category, or the embedding cosine of the old and new text below
``stale_below``; rapidfuzz's token-sort ratio stands in when no encoder is at hand; pack sizes and
units never count, :func:`material_change`): then the row is flagged ``DECISION_STALE`` for re-review and the old decision stays the
final category, visible, until a person decides again. A decided category that left the target is
carried to its new name when the target renamed it (same taxonomy id, or the same target products
under a new name), else flagged ``DECISION_CATEGORY_GONE`` and left unmapped.

>>> material_change("Amul Butter", "Food > Dairy", "Amul  butter", "Food > Dairy", 0.9, similarity=None)
(False, 1.0)
>>> material_change("Amul Butter", "Food > Dairy", "Amul Butter", "Food > Snacks", 0.9, similarity=None)
(True, 0.0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import re

import numpy as np
import polars as pl
from rapidfuzz import fuzz, utils

from migrate.core.hashing import text_hash
from migrate.core.sheets import NEW_CATEGORY
from migrate.mapping.category_decisions import (CATEGORY_DECISION, CATEGORY_DISAGREES, SCOPE_ROW,
                                        SOURCE_CATEGORY_DECISION, covering, decision_index, needs_person)
from migrate.nightly.state import DECISION_SCHEMA, PRODUCT_SCHEMA, conform

DECISION_STALE = "DECISION_STALE"
DECISION_CATEGORY_GONE = "DECISION_CATEGORY_GONE"
DECISION_FLAGS = (DECISION_STALE, DECISION_CATEGORY_GONE)
DEFAULT_STALE_BELOW = 0.85
"""Measured on 300 real BigBasket pack-size variants (same brand, names equal but for numbers and
units): 0.4% fall below 0.85 under the bundled encoder; 91% of pairs of *different* products of
the same brand and sub-category do."""
_PACK = re.compile(r"\b(?:pack|set|combo|box|case)\s+of\s+\d+\b")
_QUANTITY = re.compile(
    r"\b\d+(?:[.,]\d+)?\s*(?:x\s*\d+(?:[.,]\d+)?\s*)?"
    r"(?:g|gm|gms|grams?|kg|kgs|mg|ml|l|ltr|litres?|liters?|pcs|pc|pieces?|n|cm|mm|m|inch(?:es)?|sheets?|"
    r"tablets?|capsules?|units?|pack|packs)?\b")
_PUNCT = re.compile(r"[^\w]+")

Similarity = Callable[[Sequence[str], Sequence[str]], np.ndarray]
"""Row-wise similarity in [0, 1] of two equally long text lists (cosine of unit embeddings)."""

KIND_ACCEPT, KIND_OVERRIDE, KIND_NEW = "accept", "override", "new_category"
SOURCE_REVIEWER, SOURCE_MODEL, SOURCE_NEW = "reviewer", "model", "new_category"


def content_hash(text: str, category: str) -> str:
    """What a product *is* for the nightly job: its text and its source category."""
    return text_hash(f"{text}\x00{category}")


def without_quantities(text: str) -> str:
    """Text with pack sizes, counts and units removed, case and punctuation folded.

    >>> without_quantities("Tru Mango - Pack of 2") == without_quantities("Tru Mango")
    True
    >>> without_quantities("Ponds Starlight Talc 300 g")
    'ponds starlight talc'
    """
    text = _PACK.sub(" ", text.lower())
    text = _QUANTITY.sub(" ", text)
    return " ".join(_PUNCT.sub(" ", text).split())


def material_change(old_text: str, old_category: str, new_text: str, new_category: str, stale_below: float, *,
                    similarity: float | None) -> tuple[bool, float]:
    """(changed materially?, similarity) between the text a decision was made on and today's.

    A changed source category is always material. Texts equal up to case, punctuation, pack sizes,
    counts and units never are (a new pack size is the same product). Otherwise ``similarity``,
    the embedding cosine of the two texts, decides; without one (no encoder at hand) the rapidfuzz
    token-sort ratio / 100 stands in.
    """
    if (old_category or "") != (new_category or ""):
        return True, 0.0
    if without_quantities(old_text or "") == without_quantities(new_text or ""):
        return False, 1.0
    if similarity is None:
        similarity = fuzz.token_sort_ratio(old_text or "", new_text or "", processor=utils.default_process) / 100
    return similarity < stale_below, round(float(similarity), 4)


@dataclass
class Resolution:
    """The products table and what happened to decisions on the way."""

    products: pl.DataFrame
    carried: list[dict[str, Any]]   # decisions moved to a renamed category
    stale_ratio: dict[str, float]   # product id -> similarity, for decided products whose text changed


def decided_source(decision: dict[str, Any]) -> str:
    """``final_source`` of a product whose decision in force is ``decision`` (a log row)."""
    if decision["kind"] == KIND_NEW:
        return SOURCE_NEW
    scope = decision.get("scope") or SCOPE_ROW
    return SOURCE_REVIEWER if scope == SCOPE_ROW else SOURCE_CATEGORY_DECISION


PREVIOUS_READ = ("product_id", "content_hash", "first_seen_run", "text_changed_run")
"""The columns of last night's products table :func:`resolve_products` reads."""
MAPPING_COPIED = ("target_category", "target_id", "confidence", "margin", "score", "alt1_category", "alt1_score",
                  "alt2_category", "alt2_score")
"""The model's columns a product row carries as they are."""


def resolve_products(mapping: pl.DataFrame, *, run_id: str, previous: pl.DataFrame | None,
                     decisions: pl.DataFrame, categories: set[str], renamed: dict[str, str],
                     stale_below: float = DEFAULT_STALE_BELOW, similarity: Similarity | None = None,
                     category_decisions: pl.DataFrame | None = None) -> Resolution:
    """The new products table: one row per mapped product of tonight's catalog.

    ``decisions`` holds the decision in force per product (the latest); ``renamed`` maps old
    target category names to new ones (reliable renames only); ``similarity`` compares the text
    of a decision with the product's text today (see :func:`material_change`).
    ``category_decisions``: the state's category decision log; a product without a decision of its
    own inherits the one covering it (:mod:`migrate.mapping.category_decisions`).

    Built column by column: every product gets the model's category, then the few a decision
    covers are rewritten one by one (row dicts for every product were a night's hot spot).
    """
    decided = {r["product_id"]: r for r in decisions.iter_rows(named=True)}
    by_category = decision_index(category_decisions) if category_decisions is not None else {}
    sims = _decision_similarities(mapping, decided, similarity)
    n = mapping.height
    ids = mapping["source_id"].to_list()
    texts = [t or "" for t in mapping["source_text"].to_list()]
    cats = [c or "" for c in mapping["source_category"].to_list()]
    suggested = mapping["target_category"].to_list()
    model_flags = [f or "" for f in mapping["flags"].to_list()]
    hashes = [content_hash(t, c) for t, c in zip(texts, cats)]
    columns: dict[str, list[Any]] = {
        "product_id": ids, "source_row": mapping["source_row"].to_list(), "source_text": texts,
        "source_category": cats, "content_hash": hashes,
        **{k: mapping[k].to_list() for k in MAPPING_COPIED},
        "model_flags": model_flags,
        "decision": [""] * n, "decided_by": [""] * n, "decided_at": [""] * n, "decision_note": [""] * n,
        "decision_text": [""] * n, "final_category": [c or "" for c in suggested], "final_source": [SOURCE_MODEL] * n,
        "flags": list(model_flags),
    }
    columns["first_seen_run"], columns["text_changed_run"] = _run_columns(ids, hashes, previous, run_id)
    carried: list[dict[str, Any]] = []
    ratios: dict[str, float] = {}
    needs_review = mapping["needs_review"].to_list()
    for i, pid in enumerate(ids):
        d = decided.get(pid)
        inherited = covering(cats[i], suggested[i] or "", by_category) if d is None and by_category else None
        if inherited is not None:
            fields = _inherit(inherited, suggested[i], needs_review[i], categories, renamed)
        elif d is not None:
            fields, moved, ratio = _decided(d, pid, texts[i], cats[i], hashes[i], categories, renamed, stale_below,
                                            sims.get(pid))
            carried += moved
            if ratio is not None:
                ratios[pid] = ratio
        else:
            continue
        for key, value in fields.items():
            columns[key][i] = value
    columns["needs_review"] = [needs_person(f.split(",") if f else []) for f in columns["flags"]]
    frame = pl.DataFrame(columns, schema=PRODUCT_SCHEMA)
    return Resolution(conform(frame, PRODUCT_SCHEMA), carried, ratios)


def _run_columns(ids: list[str], hashes: list[str], previous: pl.DataFrame | None, run_id: str
                 ) -> tuple[list[str], list[str]]:
    """(first_seen_run, text_changed_run) per product: tonight's run for a new product; last
    night's first sighting otherwise, and tonight's run where the text changed."""
    if previous is None or not previous.height:
        return [run_id] * len(ids), [run_id] * len(ids)
    before = {pid: (h, first, changed) for pid, h, first, changed in
              zip(*(previous[c].to_list() for c in PREVIOUS_READ))}
    first_seen, text_changed = [], []
    for pid, chash in zip(ids, hashes):
        prev = before.get(pid)
        if prev is None:
            first_seen.append(run_id)
            text_changed.append(run_id)
        else:
            first_seen.append(prev[1])
            text_changed.append(run_id if prev[0] != chash else prev[2])
    return first_seen, text_changed


def _decided(d: dict[str, Any], pid: str, text: str, cat: str, chash: str, categories: set[str],
             renamed: dict[str, str], stale_below: float, similarity: float | None
             ) -> tuple[dict[str, Any], list[dict[str, Any]], float | None]:
    """The decision fields of a product with a decision of its own ``d``: (fields, decisions
    carried to a renamed category, the text similarity when the text changed since the decision)."""
    flags: list[str] = []
    carried: list[dict[str, Any]] = []
    stale, ratio = material_change(d["source_text"] or "", d["source_category"] or "", text, cat, stale_below,
                                   similarity=similarity)
    if stale:
        flags.append(DECISION_STALE)
    source = decided_source(d)
    if d["kind"] == KIND_NEW:
        final = ""
    else:
        final = d["decision"]
        if final not in categories:
            if final in renamed:
                note = (d["note"] or "").strip()
                d = {**d, "decision": renamed[final],
                     "note": (note + " " if note else "") +
                     f"[carried by taxmig: category renamed '{final}' -> '{renamed[final]}']"}
                carried.append({"product_id": pid, "from": final, "to": renamed[final], "decision": d})
                final = renamed[final]
            else:
                flags.append(DECISION_CATEGORY_GONE)
                final = ""
    fields = {"decision": d["decision"], "decided_by": d["decided_by"] or "", "decided_at": d["decided_at"] or "",
              "decision_note": d["note"] or "", "decision_text": d["source_text"] or "", "final_category": final,
              "final_source": source, "flags": ",".join(flags)}
    return fields, carried, (ratio if d["content_hash"] != chash else None)


def _inherit(decision: dict[str, Any], suggested: str | None, model_needs_review: bool, categories: set[str],
             renamed: dict[str, str]) -> dict[str, Any]:
    """The decision fields of a product that inherits a category decision (``suggested``: the
    model's category for it; ``model_needs_review``: whether the model flagged it): flagged
    ``CATEGORY_DECISION``; also ``CATEGORY_DISAGREES`` (for a person) when the model suggests
    another category and would have left it unflagged; ``DECISION_CATEGORY_GONE`` when the
    decided category left the target (carried to its new name on a reliable rename)."""
    flags = [CATEGORY_DECISION]
    if decision["kind"] == KIND_NEW:
        final, source = "", SOURCE_NEW
    else:
        final, source = decision["decision"], SOURCE_CATEGORY_DECISION
        if final not in categories:
            final = renamed.get(final, "")
            if not final:
                flags.append(DECISION_CATEGORY_GONE)
    if final and suggested and suggested != final and not model_needs_review:
        flags.append(CATEGORY_DISAGREES)
    return {"decision": final if final else decision["decision"], "decided_by": decision["decided_by"] or "",
            "decided_at": decision["decided_at"] or "", "decision_note": decision["note"] or "",
            "decision_text": "", "final_category": final, "final_source": source, "flags": ",".join(flags)}


def _decision_similarities(mapping: pl.DataFrame, decided: dict[str, dict[str, Any]],
                           similarity: Similarity | None) -> dict[str, float]:
    """Similarity of decision text and today's text, for decided products whose text changed."""
    if similarity is None or not decided:
        return {}
    ids, old, new = [], [], []
    for pid, text, cat in zip(mapping["source_id"], mapping["source_text"], mapping["source_category"]):
        d = decided.get(pid)
        if d is not None and d["content_hash"] != content_hash(text or "", cat or ""):
            ids.append(pid)
            old.append(d["source_text"] or "")
            new.append(text or "")
    if not ids:
        return {}
    return dict(zip(ids, (float(v) for v in similarity(old, new))))


def carried_decisions(carried: list[dict[str, Any]], run_id: str) -> pl.DataFrame:
    """Decision-log rows that move decisions to their category's new name (same person, time and
    kind; the note says taxmig carried it), so later nights keep them without the rename."""
    rows = [{**c["decision"], "applied_run": run_id} for c in carried]
    return pl.DataFrame(rows, schema=DECISION_SCHEMA) if rows else pl.DataFrame(schema=DECISION_SCHEMA)


def decision_kind(decision: str, suggested: str) -> str:
    """accept (the model's suggestion), new_category, or override (another category)."""
    if decision == NEW_CATEGORY:
        return KIND_NEW
    return KIND_ACCEPT if decision == suggested else KIND_OVERRIDE
