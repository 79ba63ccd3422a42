"""``taxmig review apply``: take a reviewed workbook's decisions into the state, all or nothing.

A reviewer fills ``decision`` (and ``reviewer_note``) in the Mapping or Review sheet of a workbook
written by ``taxmig migrate`` or ``taxmig reconcile``: ``ACCEPT`` keeps the suggested
``target_category``, a category from the drop-down replaces it, ``NEW CATEGORY NEEDED`` says none
fits. Every decision is checked before anything is written -- the workbook's run belongs to the
state, each row's hidden ``row_key`` still matches its product id and text (an edited id would
put a decision on the wrong product), each product is still in the catalog, each category is a
target category, and one product gets one decision -- and all problems are reported at once
with their sheet and cell. Then the decisions join the state's decision log (with who, when and
the note) in one new state generation, and the final mapping is written.

The Category decisions sheet decides many products at once (:mod:`migrate.mapping.category_decisions`):
its rows are checked the same way (hidden ``row_key`` over level, source and target category),
then each decision covers the products of its source category (or pair) that have no row
decision of their own; each covered product gets a decision-log row whose ``scope`` names the
category decision, and the category decisions are kept for later nights.
"""

from __future__ import annotations

import datetime as dt
import getpass
import logging
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from rapidfuzz import fuzz, process, utils

from migrate.core.catalog import normalise_path
from migrate.core.files import FORMATS, write_frame
from migrate.core.hashing import ROW_KEY_COLUMN, row_key
from migrate.core.sheets import (ACCEPT, DECISION_COLUMN, NEW_CATEGORY, NOTE_COLUMN, decision_rows,
                                 open_reviewed_workbook, workbook_run_id)
from migrate.errors import InputError, OutputExistsError, TaxmigError
from migrate.mapping.category_decisions import (CATEGORY_DECISION_SCHEMA, LEVEL_PAIR, LEVELS, SCOPE_ROW, category_key,
                                        covering, decision_id)
from migrate.mapping.workbook import CATEGORY_SHEET
from migrate.nightly.decisions import DECISION_STALE, KIND_NEW, content_hash, decided_source, decision_kind
from migrate.nightly.export import final_mapping
from migrate.nightly.lock import RunLock
from migrate.nightly.reconcile import finish_interrupted, history_record, publish_reports
from migrate.nightly.state import DECISION_SCHEMA, NewGeneration, StateStore, now_utc

log = logging.getLogger(__name__)

DECISION_SHEETS = ("Mapping", "Review")
REQUIRED = ("source_id", "source_text", "target_category", DECISION_COLUMN, ROW_KEY_COLUMN)
MAX_REPORTED = 25


@dataclass
class ReviewedRow:
    """One row of a decision sheet that carries a decision."""

    sheet: str
    row: int
    cell: str            # e.g. "Mapping!T17", the decision cell
    source_id: str
    source_text: str
    suggested: str
    decision: str        # as typed
    note: str
    key: str


@dataclass
class ReviewedCategory:
    """One row of the Category decisions sheet that carries a decision."""

    row: int
    cell: str
    level: str
    source_category: str
    target_category: str
    decision: str
    note: str
    key: str


@dataclass
class ReviewedWorkbook:
    path: Path
    run_id: str
    rows: list[ReviewedRow]
    modified_by: str
    categories: list[ReviewedCategory] = field(default_factory=list)


def read_reviewed_workbook(path: str | Path) -> ReviewedWorkbook:
    """The decisions of a reviewed workbook (rows with an empty decision are skipped)."""
    path = Path(path)
    book = open_reviewed_workbook(path)
    try:
        problems: list[str] = []
        run_id = workbook_run_id(book)
        if not run_id:
            problems.append("no 'Run id' in a Summary sheet: not a workbook written by taxmig")
        sheets = [name for name in DECISION_SHEETS if name in book.sheetnames]
        if not sheets:
            problems.append(f"no {' or '.join(DECISION_SHEETS)} sheet")
        rows: list[ReviewedRow] = []
        for name in sheets:
            for number, cell, value in decision_rows(book[name], name, REQUIRED, problems):
                rows.append(ReviewedRow(
                    sheet=name, row=number, cell=cell, source_id=value("source_id").strip(),
                    source_text=value("source_text"), suggested=value("target_category").strip(),
                    decision=value(DECISION_COLUMN).strip(), note=value(NOTE_COLUMN).strip(),
                    key=value(ROW_KEY_COLUMN).strip()))
        categories: list[ReviewedCategory] = []
        if CATEGORY_SHEET in book.sheetnames:
            categories = _read_category_sheet(book[CATEGORY_SHEET], problems)
        if problems:
            raise InputError(path, "; ".join(problems), hint="use a workbook written by taxmig migrate or reconcile")
        modified_by = (book.properties.lastModifiedBy or book.properties.creator or "").strip()
    finally:
        book.close()
    return ReviewedWorkbook(path, run_id, rows, modified_by, categories)


CATEGORY_REQUIRED = ("level", "source_category", "target_category", DECISION_COLUMN, ROW_KEY_COLUMN)


def _read_category_sheet(ws, problems: list[str]) -> list[ReviewedCategory]:
    return [ReviewedCategory(row=number, cell=cell, level=value("level").strip(),
                             source_category=value("source_category"), target_category=value("target_category"),
                             decision=value(DECISION_COLUMN).strip(), note=value(NOTE_COLUMN).strip(),
                             key=value(ROW_KEY_COLUMN).strip())
            for number, cell, value in decision_rows(ws, CATEGORY_SHEET, CATEGORY_REQUIRED, problems)]


@dataclass
class ApplyOutcome:
    run_id: str
    counts: dict[str, int]
    written: list[Path]
    message: str
    covered: list[dict[str, Any]] = field(default_factory=list)
    """Per category decision applied: ``{decision_id, decision, products}`` (products it decided)."""


def _match_category(value: str, categories: list[str], lookup: dict[str, str]) -> str | None:
    if value in lookup:
        return lookup[value]
    return lookup.get(normalise_path(value).lower())


def near_category(typed: str, categories: list[str]) -> str | None:
    """The category a mistyped decision most likely means: the closest whole path first (a typo in
    a leaf of a full path), else the best partial match (a leaf or a shortened path); None if none
    is close.

    >>> cats = ["Health & Beauty", "Health & Beauty > Hair Care > Shampoo", "Health & Beauty > Hair Care > Hair Dye"]
    >>> near_category("Health & Beauty > Hair Care > Shampo", cats)
    'Health & Beauty > Hair Care > Shampoo'
    >>> near_category("hair dye", cats)
    'Health & Beauty > Hair Care > Hair Dye'
    """
    whole = process.extractOne(typed, categories, scorer=fuzz.ratio, processor=utils.default_process,
                               score_cutoff=80)
    if whole is not None:
        return whole[0]
    part = process.extractOne(typed, categories, scorer=fuzz.WRatio, processor=utils.default_process,
                              score_cutoff=60)
    return part[0] if part is not None else None


def _resolve_choice(decision: str, suggested: str, categories: list[str], lookup: dict[str, str], where: str,
                    problems: list[str]) -> str | None:
    """The category a typed decision names (ACCEPT: ``suggested``), or None with a problem added."""
    upper = decision.upper()
    if upper == ACCEPT:
        category = _match_category(suggested, categories, lookup)
        if category is None:
            problems.append(f"{where}: ACCEPT, but the suggested category '{suggested}' is not a target "
                            "category now; pick a category instead")
        return category
    if upper == NEW_CATEGORY:
        return NEW_CATEGORY
    category = _match_category(decision, categories, lookup)
    if category is None:
        near = near_category(decision, categories)
        problems.append(f"{where}: '{decision}' is not a target category" +
                        (f" (did you mean '{near}'?)" if near else "") +
                        f"; pick one from the drop-down, {ACCEPT} or {NEW_CATEGORY}")
    return category


def validate_decisions(book: ReviewedWorkbook, products: pl.DataFrame, categories: list[str],
                       known_runs: set[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Check every decision; raise one :class:`InputError` naming every bad cell, else return
    (one resolved decision per product: ``{product_id, decision, suggested, note, text, row}``,
    one per category decision: ``{level, source_category, target_category, decision, note, row}``)."""
    if book.run_id not in known_runs:  # its row keys cannot match either: one problem, not one per cell
        raise InputError(book.path, f"the workbook comes from run '{book.run_id}', which is not a run of this "
                                    "state folder; nothing applied",
                         hint="apply it with the --state folder of the run that wrote it (a workbook of a migrate "
                              "run without --state belongs to no state: run migrate again with --state)")
    problems: list[str] = []
    lookup = {c: c for c in categories}
    lookup.update({c.lower(): c for c in categories})
    live = {r["product_id"]: r for r in products.select("product_id", "source_text", "source_category")
            .iter_rows(named=True)}
    chosen: dict[str, dict[str, Any]] = {}
    for r in book.rows:
        where = r.cell
        if r.key != row_key(book.run_id, r.source_id, r.source_text):
            problems.append(f"{where}: source_id or source_text of this row was edited after export (its row_key "
                            "no longer matches); restore them from the exported file")
            continue
        if r.source_id not in live:
            problems.append(f"{where}: product '{r.source_id}' is no longer in the catalog; clear this decision "
                            "or review a newer report")
            continue
        category = _resolve_choice(r.decision, r.suggested, categories, lookup, where, problems)
        if category is None:
            continue
        item = {"product_id": r.source_id, "decision": category, "suggested": r.suggested, "note": r.note,
                "text": r.source_text, "row": r}
        earlier = chosen.get(r.source_id)
        if earlier is not None and (earlier["decision"], earlier["note"]) != (category, r.note):
            problems.append(f"{where}: product '{r.source_id}' also has the decision '{earlier['decision']}' in "
                            f"{earlier['row'].cell}; keep one")
            continue
        chosen[r.source_id] = item
    by_key: dict[tuple[str, str, str], dict[str, Any]] = {}
    for c in book.categories:
        where = c.cell
        if c.level not in LEVELS or c.key != category_key(book.run_id, c.level, c.source_category, c.target_category):
            problems.append(f"{where}: level, source_category or target_category of this row was edited after "
                            "export (its row_key no longer matches); restore them from the exported file")
            continue
        category = _resolve_choice(c.decision, c.target_category, categories, lookup, where, problems)
        if category is None:
            continue
        key = (c.level, c.source_category, c.target_category if c.level == LEVEL_PAIR else "")
        earlier = by_key.get(key)
        if earlier is not None and (earlier["decision"], earlier["note"]) != (category, c.note):
            problems.append(f"{where}: the same {c.level} also has the decision '{earlier['decision']}' in "
                            f"{earlier['row'].cell}; keep one")
            continue
        by_key[key] = {"level": c.level, "source_category": c.source_category, "target_category": c.target_category,
                       "decision": category, "note": c.note, "row": c}
    if problems:
        shown = problems[:MAX_REPORTED]
        more = f"; and {len(problems) - MAX_REPORTED} more" if len(problems) > MAX_REPORTED else ""
        raise InputError(book.path, f"{len(problems)} problem(s), nothing applied: " + "; ".join(shown) + more,
                         hint="fix those cells and run 'taxmig review apply' again")
    return list(chosen.values()), list(by_key.values())


def _category_items(resolved: list[dict[str, Any]], products: dict[str, dict[str, Any]],
                    in_force: dict[str, dict[str, Any]], row_decided: set[str]) -> list[dict[str, Any]]:
    """Per product a category decision of this workbook covers: ``{product_id, decision, suggested,
    note, text, row, scope}`` -- not products with a row decision (here or in force)."""
    index = {(c["level"], c["source_category"], c["target_category"] if c["level"] == LEVEL_PAIR else ""): c
             for c in resolved}
    items = []
    for pid, product in products.items():
        before = in_force.get(pid)
        if pid in row_decided or (before is not None and (before["scope"] or SCOPE_ROW) == SCOPE_ROW):
            continue  # a person decided this product itself: that wins
        c = covering(product["source_category"] or "", product["target_category"] or "", index)
        if c is None:
            continue
        decision = c["decision"]
        items.append({"product_id": pid, "decision": decision, "suggested": product["target_category"] or "",
                      "note": c["note"], "text": product["source_text"] or "", "row": c["row"],
                      "scope": decision_id(c["level"], c["source_category"], c["target_category"])})
    return items


def apply_review(workbook: str | Path, state_dir: str | Path, output: str | Path, *, reviewer: str | None = None,
                 overwrite: bool = False, next_workbook: str | Path | None = None, ask: int | None = None,
                 target_precision: float | None = None, progress: bool = True) -> ApplyOutcome:
    """Validate and apply a reviewed workbook; write the final mapping to ``output``.

    Row decisions (Mapping, Review) decide their product; category decisions (Category decisions
    sheet) every other product of their source category or pair, except products a person
    decided on their own (:mod:`migrate.mapping.category_decisions`). With ``next_workbook``
    (a state onto a taxonomy): every undecided product is mapped again, learning from every
    decision in force, and the next round's workbook is written there (:mod:`migrate.nightly.next_round`;
    ``ask``: its questions, ``target_precision``: what its unflagged rows must reach)."""
    output = Path(output)
    if next_workbook is not None:
        next_workbook = Path(next_workbook)
        if next_workbook.suffix.lower() != ".xlsx":
            raise TaxmigError(f"{next_workbook}: the next round's workbook is an .xlsx file",
                              hint="end the --next path in .xlsx")
        if next_workbook.resolve() == output.resolve():
            raise TaxmigError(f"{next_workbook}: -o and --next name the same file", hint="give two paths")
    suffix = output.suffix.lower()
    if suffix not in FORMATS:
        raise TaxmigError(f"{output}: unknown output format '{output.suffix or '(none)'}'",
                          hint=f"end the -o path in {', '.join(FORMATS)}")
    book = read_reviewed_workbook(workbook)
    StateStore.open(state_dir)  # a missing state is an error, not a folder to create
    with RunLock(state_dir, command=f"review apply {workbook}") as lock:
        store = StateStore.open(state_dir)
        finish_interrupted(store, lock)
        for path in (output, next_workbook):
            if path is not None and path.exists() and not overwrite:
                raise OutputExistsError(path)
        current = store.load()
        categories = current.targets.filter(pl.col("kind") == "category")["key"].to_list()
        known = {h.get("run_id") for h in store.history() if h.get("run_id")} | {current.run_id}
        current_round = current.meta.get("run", {}).get("round")
        if current_round and book.run_id != current.run_id and book.run_id in known:
            raise InputError(book.path, f"the workbook comes from run '{book.run_id}' (Summary sheet, 'Run id'), an "
                                        f"earlier round: the state is at round {current_round}, whose workbook "
                                        f"(run '{current.run_id}') holds every decision so far; nothing applied",
                             hint="decide in that round's workbook (the one 'review apply --next' wrote) and apply it")
        resolved, resolved_categories = validate_decisions(book, current.products, categories, known)
        who = reviewer or book.modified_by or getpass.getuser()
        when = now_utc()
        run_id = "review-" + dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        in_force = {r["product_id"]: r for r in current.latest_decisions().iter_rows(named=True)}
        products = {r["product_id"]: r for r in current.products.iter_rows(named=True)}
        items = [{**item, "scope": SCOPE_ROW} for item in resolved]
        items += _category_items(resolved_categories, products, in_force, {i["product_id"] for i in resolved})
        new_rows, counts = [], {"accept": 0, "override": 0, "new_category": 0, "unchanged": 0}
        covered: dict[str, int] = {}
        for item in items:
            pid = item["product_id"]
            product = products[pid]
            if item["scope"] != SCOPE_ROW:
                covered[item["scope"]] = covered.get(item["scope"], 0) + 1
            kind = decision_kind(item["decision"], item["suggested"])
            chash = content_hash(item["text"], product["source_category"] or "")
            before = in_force.get(pid)
            if before is not None and before["decision"] != item["decision"]:
                log.info("%s: product '%s' was decided '%s' (%s, %s); now '%s': the later decision holds, both "
                         "stay in the decision log", item["row"].cell, pid, before["decision"], before["decided_by"],
                         before["decided_at"], item["decision"])
                counts["replaced_earlier"] = counts.get("replaced_earlier", 0) + 1
            if before is not None and (before["decision"], before["note"] or "", before["content_hash"],
                                       before["scope"] or SCOPE_ROW) == \
                    (item["decision"], item["note"], chash, item["scope"]):
                counts["unchanged"] += 1  # the same decision applied again: nothing new
                continue
            counts[kind] += 1
            new_rows.append({"product_id": pid, "decision": item["decision"], "kind": kind,
                             "suggested_category": item["suggested"], "decided_by": who, "decided_at": when,
                             "note": item["note"], "source_text": item["text"],
                             "source_category": product["source_category"] or "", "content_hash": chash,
                             "workbook": str(book.path.name), "workbook_run": book.run_id,
                             "sheet_row": item["row"].cell, "applied_run": run_id, "scope": item["scope"]})
            product.update(decision=item["decision"], decided_by=who, decided_at=when, decision_note=item["note"],
                           decision_text=item["text"],
                           final_source=decided_source({"kind": kind, "scope": item["scope"]}),
                           final_category="" if kind == KIND_NEW else item["decision"])
            # decided on the text the reviewer saw; if tonight's text differs, a person looks again
            stale = (product["source_text"] or "") != item["text"]
            product.update(flags=DECISION_STALE if stale else "", needs_review=stale)
        decisions = pl.concat([current.decisions, pl.DataFrame(new_rows, schema=DECISION_SCHEMA)]) \
            if new_rows else current.decisions
        category_log, covered_list = _category_log(resolved_categories, covered, who, when, book, run_id)
        table = pl.DataFrame(list(products.values()), schema=current.products.schema)
        category_decisions = pl.concat([current.category_decisions, category_log])
        file_name = f"final{suffix}"
        counts["category_decisions"] = len(resolved_categories)
        counts["covered_by_category_decisions"] = sum(covered.values())
        run: dict[str, Any] = {"run_id": run_id, "kind": "review", "started": when,
                               "workbook": str(book.path.resolve()), "workbook_run": book.run_id, "reviewer": who,
                               "counts": counts, "exit_code": 0, "covered": covered_list,
                               "publish": [{"file": file_name, "dest": str(output.resolve())}]}
        meta = {**{k: v for k, v in current.meta.items() if k not in ("run", "generation", "state_format")},
                "run": run}
        if next_workbook is not None:
            table, files = _next_round(store, current, book, table, decisions, category_decisions, items, meta,
                                       next_workbook=next_workbook, ask=ask, target_precision=target_precision,
                                       progress=progress)
            run["publish"].append({"file": NEXT_FILE, "dest": str(next_workbook.resolve())})
        else:
            files = current.carry_scores({})
        final = final_mapping(table)
        files[file_name] = lambda p: write_frame(final, p, "Final mapping")
        generation = store.commit(NewGeneration(
            meta=meta, products=table, decisions=decisions, targets=current.targets,
            category_decisions=category_decisions, files=files))
        written = publish_reports(generation, meta["run"]["publish"])
        store.append_history(history_record(generation.meta, "ok", stale_lock=lock.stale))
    applied = counts["accept"] + counts["override"] + counts["new_category"]
    by_category = ""
    if covered_list:
        shown = ", ".join(f"{c['decision_id']}: {c['products']} to {c['decision'] or 'none'}" for c in covered_list[:10])
        more = f", and {len(covered_list) - 10} more" if len(covered_list) > 10 else ""
        by_category = (f"; {len(covered_list)} category decision(s) covered {counts['covered_by_category_decisions']} "
                       f"product(s) ({shown}{more})")
    replaced = f", {counts['replaced_earlier']} replacing an earlier decision" if counts.get("replaced_earlier") else ""
    learned = ""
    if "next_round" in counts:
        nr = counts["next_round"]
        learned = (f"; round {nr['round']}: {nr['remapped']} undecided product(s) mapped again from "
                   f"{nr['decided']} decided, {nr['unflagged']} left unflagged, {nr['asked']} question(s) asked")
    message = (f"applied {applied} decision(s) from {book.path.name} by {who} ({counts['accept']} accepted, "
               f"{counts['override']} changed, {counts['new_category']} new category needed, "
               f"{counts['unchanged']} already in force{replaced}){by_category}{learned}; "
               f"wrote {', '.join(str(p) for p in written)}")
    log.debug(message)  # the CLI prints it: one line, on stdout
    return ApplyOutcome(run_id, counts, written, message, covered_list)


NEXT_FILE = "next.xlsx"  # the next round's workbook inside the generation, published to --next


def _next_round(store: StateStore, current, book: ReviewedWorkbook, table: pl.DataFrame, decisions: pl.DataFrame,
                category_decisions: pl.DataFrame, items: list[dict[str, Any]], meta: dict[str, Any], *,
                next_workbook: Path, ask: int | None, target_precision: float | None, progress: bool
                ) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Map the undecided products again with every decision in force (``table``: the products with
    this apply's decisions); (the new products table, the generation's files: the next workbook
    and the re-mapped scores). The next workbook's first page names ``next_workbook`` (where it
    is published) and the state folder in its ``taxmig review apply`` command. Records the round,
    its questions and the random checks answered so far in the new generation's ``meta``."""
    from migrate.mapping.flags import DECIDED
    from migrate.mapping.workbook import write_workbook
    from migrate.nightly.decisions import resolve_products
    from migrate.nightly.next_round import (AUDITED_KEY, QUESTIONS_KEY, ROUND_KEY, audited_now, feedback_from,
                                            measure_answers, next_round, questions_record)
    from migrate.nightly.state import SCORES_FILE, latest_per_product

    run = meta["run"]
    measured = measure_answers(items, current, book.run_id)
    round_number = int(current.meta.get("run", {}).get(ROUND_KEY, 0) or 0) + 1
    audited = audited_now(items, current, book.run_id)
    feedback = feedback_from(table, round_number=round_number, measured=measured, ask=ask, audited=audited)
    result = next_round(store, current, table, feedback, run_id=run["run_id"], output=next_workbook,
                        target_precision=target_precision, progress=progress)
    categories = current.targets.filter(pl.col("kind") == "category")["key"].to_list()
    products = resolve_products(result.mapping, run_id=run["run_id"], previous=current.products,
                                decisions=latest_per_product(decisions), categories=set(categories), renamed={},
                                category_decisions=category_decisions).products
    meta[AUDITED_KEY] = sorted(audited)
    run.update({ROUND_KEY: round_number, QUESTIONS_KEY: questions_record(result), "measured": measured})
    settled = result.mapping["flags"] == DECIDED
    run["counts"]["next_round"] = {
        "round": round_number, "decided": result.facts.decided, "remapped": int((~settled).sum()),
        "unflagged": result.facts.unflagged, "asked": len(run[QUESTIONS_KEY]["asked"]),
        "encoded": result.facts.encoded}
    files = {NEXT_FILE: lambda p: write_workbook(result, p)}
    if result.kept_scores is not None:
        files[SCORES_FILE] = result.kept_scores.write
    return products, files


def _category_log(resolved: list[dict[str, Any]], covered: dict[str, int], who: str, when: str,
                  book: ReviewedWorkbook, run_id: str) -> tuple[pl.DataFrame, list[dict[str, Any]]]:
    """The category decision log rows of this apply, and what each covered."""
    rows, summary = [], []
    for c in resolved:
        ident = decision_id(c["level"], c["source_category"], c["target_category"])
        n = covered.get(ident, 0)
        rows.append({"level": c["level"], "source_category": c["source_category"],
                     "target_category": c["target_category"], "decision": c["decision"],
                     "kind": decision_kind(c["decision"], c["target_category"]), "decided_by": who,
                     "decided_at": when, "note": c["note"], "products_covered": n, "workbook": str(book.path.name),
                     "workbook_run": book.run_id, "sheet_row": c["row"].cell, "applied_run": run_id})
        summary.append({"decision_id": ident, "decision": c["decision"], "products": n, "cell": c["row"].cell})
    return pl.DataFrame(rows, schema=CATEGORY_DECISION_SCHEMA), summary
