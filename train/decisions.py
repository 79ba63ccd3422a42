"""Reviewers' decisions as training pairs: ``taxmig train --decisions STATE_DIR``.

Every decision in force that names a category (accepted or changed) is a labelled product; a
*correction* -- the reviewer moved the product away from the model's suggestion -- is the most
valuable kind: the model was confidently wrong there. Each decided product gets positive pairs
with training products of its decided category and, for corrections, hard-negative pairs with
products of the category the model wrongly suggested (weighted up: ``correction_weight`` times
as many). Decisions on products whose name falls in the catalog's eval or test split are left
out, so reviewed rows never leak into held-out data.

>>> ex = DecisionExamples(texts=["Dark Chocolate"], categories=["Food > Sweets"], suggested=["Beauty > Body"])
>>> ex.corrections
1
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from migrate.errors import TaxmigError
from train.pairs import PairSet

log = logging.getLogger(__name__)


@dataclass
class DecisionExamples:
    """Decided products: text, decided category, the model's suggestion at the time."""

    texts: list[str]
    categories: list[str]
    suggested: list[str]
    notes: list[str] = field(default_factory=list)

    @property
    def corrections(self) -> int:
        return sum(1 for c, s in zip(self.categories, self.suggested) if c != s)

    def __len__(self) -> int:
        return len(self.texts)


def load_decisions(state_dir: str | Path) -> DecisionExamples:
    """The decisions in force in a state folder that name a category (not NEW CATEGORY NEEDED)."""
    from migrate.nightly.decisions import KIND_NEW
    from migrate.nightly.state import StateStore

    store = StateStore.open(state_dir)
    latest = store.load().latest_decisions().filter(pl.col("kind") != KIND_NEW)
    if latest.height == 0:
        raise TaxmigError(f"{state_dir}: the state holds no decisions that name a category",
                          hint="apply a reviewed workbook first (taxmig review apply), or drop --decisions")
    return DecisionExamples(texts=latest["source_text"].to_list(), categories=latest["decision"].to_list(),
                            suggested=latest["suggested_category"].fill_null("").to_list())


def decision_pairs(examples: DecisionExamples, train_texts: list[str], train_categories: list[str], *,
                   positives: int = 5, negatives: int = 5, correction_weight: int = 2, score_other: float = 0.0,
                   seed: int = 0) -> PairSet:
    """Pairs and triplets between decided products and training products (see module doc)."""
    rng = np.random.default_rng(seed)
    by_cat: dict[str, list[int]] = {}
    for i, c in enumerate(train_categories):
        by_cat.setdefault(c, []).append(i)
    s1, s2, scores, kinds = [], [], [], []
    t_a, t_p, t_n = [], [], []
    unknown = 0
    for text, cat, wrong in zip(examples.texts, examples.categories, examples.suggested):
        pool = by_cat.get(cat)
        if not pool:
            unknown += 1
            continue
        correction = bool(wrong) and wrong != cat
        weight = correction_weight if correction else 1
        pos = rng.choice(pool, size=min(len(pool), positives * weight), replace=False)
        for j in pos:
            s1.append(text), s2.append(train_texts[j]), scores.append(1.0), kinds.append("decision_positive")
        negs = []
        if correction and by_cat.get(wrong):
            negs = rng.choice(by_cat[wrong], size=min(len(by_cat[wrong]), negatives * weight), replace=False)
            for j in negs:
                s1.append(text), s2.append(train_texts[j]), scores.append(score_other), kinds.append("correction_negative")
        for k, j in enumerate(pos):
            if len(negs):
                t_a.append(text), t_p.append(train_texts[j]), t_n.append(train_texts[negs[k % len(negs)]])
    notes = list(examples.notes)
    if unknown:
        notes.append(f"{unknown} decided categories have no training products: those decisions were not used")
    pairs = pl.DataFrame({"sentence1": s1, "sentence2": s2, "score": scores, "kind": kinds},
                         schema={"sentence1": pl.String, "sentence2": pl.String, "score": pl.Float64, "kind": pl.String})
    triplets = pl.DataFrame({"anchor": t_a, "positive": t_p, "negative": t_n},
                            schema={"anchor": pl.String, "positive": pl.String, "negative": pl.String})
    log.info("decision pairs: %d pairs, %d triplets from %d decisions (%d corrections)", pairs.height,
             triplets.height, len(examples), examples.corrections)
    return PairSet(pairs=pairs, triplets=triplets, notes=notes)
