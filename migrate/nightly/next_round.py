"""``taxmig review apply ... --next NEXT.xlsx``: the next round of a review onto a taxonomy.

After a reviewed workbook's decisions are validated, every decided product is a labelled example
of its category, and every undecided product is mapped again with them
(:mod:`migrate.mapping.feedback`) from the state's cached embeddings: nothing encoded twice. The
next round's workbook has the sheets of ``taxmig migrate``: decided rows keep their decision
(flag ``DECIDED``, never in the Review sheet), undecided rows carry fresh suggestions and
confidence, and the Review sheet opens with this round's questions.

Before the answers teach, they measure: each row decision is compared with the suggestion the
reviewer saw (:func:`measure_answers`), overall, on the random checks (the unbiased figure) and
on the rows that workbook had left unflagged; the next workbook's Summary shows it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from migrate.core.catalog import Catalog
from migrate.core.columns import ColumnSpec
from migrate.core.embedding_cache import EmbeddingCache
from migrate.core.taxonomy import Taxonomy
from migrate.errors import TaxmigError
from migrate.mapping.category_decisions import SCOPE_ROW, SOURCE_CATEGORY_DECISION
from migrate.mapping.feedback import COVERED_WEIGHT, ROW_WEIGHT, Feedback
from migrate.mapping.pipeline import Inputs, Migrator, Targets
from migrate.mapping.result import MigrationResult
from migrate.mapping.settings import MigrationSettings
from migrate.nightly.decisions import SOURCE_NEW
from migrate.nightly.state import Generation, StateStore, remembered_settings

log = logging.getLogger(__name__)

QUESTIONS_KEY = "questions"  # meta["run"][QUESTIONS_KEY]: {"asked": [ids], "audit": [ids]} of a round's workbook
ROUND_KEY = "round"          # meta["run"][ROUND_KEY]: the round number of the generation's workbook
AUDITED_KEY = "audited"      # meta[AUDITED_KEY]: ids of the products decided as random checks, every round so far
# (a generation's top level: review apply copies it forward, reconcile carries it)


def audited_now(answers: list[dict[str, Any]], seen: Generation, workbook_run: str) -> set[str]:
    """The state's random checks after this apply: those before, and the row decisions of this
    workbook on its own random-check rows."""
    before = set(seen.meta.get(AUDITED_KEY, []))
    if seen.run_id != workbook_run:
        return before
    audit = set((seen.meta.get("run", {}).get(QUESTIONS_KEY) or {}).get("audit", []))
    return before | {a["product_id"] for a in answers
                     if a["product_id"] in audit and a.get("scope", SCOPE_ROW) == SCOPE_ROW and a["decision"]}


def questions_record(result: MigrationResult) -> dict[str, list[str]]:
    """What a generation remembers of its workbook's questions (the next apply measures on them)."""
    q = result.questions
    if q is None:
        return {"asked": [], "audit": []}
    return {"asked": q["source_id"].to_list(), "audit": q.filter(pl.col("audit"))["source_id"].to_list()}


def measure_answers(answers: list[dict[str, Any]], seen: Generation, workbook_run: str) -> dict[str, str]:
    """The accuracy of the suggestions a reviewer saw, measured on their row decisions (``answers``:
    ``{product_id, decision, suggested}``), before the decisions teach anything: overall, on the
    random checks among them (an unbiased sample), and on the rows that were left unflagged."""
    answered = [a for a in answers if a["decision"] and a.get("scope", SCOPE_ROW) == SCOPE_ROW]
    if not answered:
        return {}
    right = [a["decision"] == a["suggested"] for a in answered]
    out = {"Answers": f"{len(answered)}: the suggestion was right for {sum(right)} "
                      f"({sum(right) / len(answered):.1%})"}
    if seen.run_id != workbook_run:
        return out
    run = seen.meta.get("run", {})
    audit = set((run.get(QUESTIONS_KEY) or {}).get("audit", []))
    checks = [r for a, r in zip(answered, right) if a["product_id"] in audit]
    if checks:
        out["Random checks among the more confident half (unbiased there)"] = (
            f"{sum(checks)} of {len(checks)} right ({sum(checks) / len(checks):.1%})")
    flagged = dict(zip(seen.products["product_id"].to_list(), seen.products["model_flags"].fill_null("").to_list()))
    unflagged = [r for a, r in zip(answered, right) if not flagged.get(a["product_id"], "x")]
    out["Rows that workbook left unflagged"] = (f"{sum(unflagged)} of {len(unflagged)} right "
                                                f"({sum(unflagged) / len(unflagged):.1%})" if unflagged else
                                                "none of them answered")
    return out


def state_inputs(store: StateStore, generation: Generation, products: pl.DataFrame,
                 settings: MigrationSettings) -> Inputs:
    """The products and the taxonomy of a state, as a run reads them from files (none is read)."""
    targets = generation.targets
    if targets.filter(pl.col("kind") == "product").height:
        raise TaxmigError(f"{store.root}: --next maps the products onto a taxonomy again, and this state maps onto a "
                          "labelled target catalog",
                          hint="drop --next; on a labelled target, 'taxmig train --decisions STATE' learns "
                               "from the decisions")
    rows = products.sort("source_row")
    categories = targets.filter(pl.col("kind") == "category")
    names = categories["key"].to_list()
    ids = {k: v for k, v in zip(names, categories["taxonomy_id"].fill_null("").to_list()) if v}
    cats = rows["source_category"].fill_null("").to_list()
    spec = ColumnSpec(id="product_id", text=("source_text",), category=("source_category",) if any(cats) else ())
    source = Catalog(path=Path(str(settings.source)), spec=spec, ids=rows["product_id"].to_list(),
                     texts=rows["source_text"].fill_null("").to_list(), categories=cats,
                     rows=rows["source_row"].to_list(), n_records=rows.height)
    taxonomy = Taxonomy(names, ids, Path(settings.target_taxonomy) if settings.target_taxonomy else None)
    return Inputs(source, Targets(names, taxonomy, None, np.zeros(0, dtype=np.int64), [], []))


def feedback_from(products: pl.DataFrame, *, round_number: int, measured: dict[str, str],
                  ask: int | None, audited: set[str] | None = None) -> Feedback:
    """The decisions in force in a products table, as a round learns from them: a reviewer's own
    (weight :data:`ROW_WEIGHT`) and those a category decision set (:data:`COVERED_WEIGHT`); the
    products a person said need a new category are settled, not examples."""
    decided = products.filter((pl.col("final_category").fill_null("") != "")
                              & pl.col("final_source").is_in(["reviewer", SOURCE_CATEGORY_DECISION]))
    pids, finals, sources = (decided[c].to_list() for c in ("product_id", "final_category", "final_source"))
    settled = set(products.filter(pl.col("final_source") == SOURCE_NEW)["product_id"].to_list())
    return Feedback(decisions=dict(zip(pids, finals)),
                    weights={p: ROW_WEIGHT if s == "reviewer" else COVERED_WEIGHT for p, s in zip(pids, sources)},
                    round=round_number, measured=measured, ask=ask, audited=set(audited or ()), new_category=settled)


def next_round(store: StateStore, generation: Generation, products: pl.DataFrame, feedback: Feedback, *,
               run_id: str, output: str | Path | None = None, target_precision: float | None = None,
               progress: bool = True) -> MigrationResult:
    """Map the state's products again, learning from ``feedback``; the result's run id is ``run_id``
    (the generation it is committed in, so its workbook can be applied to the state). ``output``:
    where the round's workbook is published (``--next``, as given): its first page's command names
    it and the state folder (``result.facts``), as a migrate run's names its own."""
    from dataclasses import replace

    settings = MigrationSettings.from_dict(remembered_settings(generation.meta.get("settings", {})),
                                           source=generation.meta.get("run", {}).get("catalog", "catalog"),
                                           progress=progress, ask=feedback.ask)
    if target_precision is not None:
        settings = replace(settings, thresholds=replace(settings.thresholds, target_precision=target_precision))
    inputs = state_inputs(store, generation, products, settings)
    migrator = Migrator.from_settings(settings)
    with EmbeddingCache(store.cache_path) as cache:
        result = migrator.run(settings, inputs, cache=cache, feedback=feedback, keep_scores=True, run_id=run_id)
    if output is not None:
        result.facts.output, result.facts.state = str(output), str(store.root)
    return result
