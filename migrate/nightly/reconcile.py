"""The nightly job: map tonight's catalog on a state folder, report what changed, keep decisions.

A night, under the state folder's lock:

1. finish an interrupted run first: a run that committed its state but died before publishing
   its report gets its report published and its history line written (re-running the same
   command after a crash therefore just finishes the job);
2. read tonight's catalog and the remembered (or newly given) target; embed only texts the
   embedding cache has not seen under this model;
3. map every product, then let decisions win (:mod:`migrate.nightly.decisions`);
4. compare with the last state (:mod:`migrate.nightly.changes`), build the report;
5. commit the new state generation with the report inside it, publish the report, append history.

Killed anywhere before step 5's commit, the previous state stays current and the next run
redoes the night (faster: the vectors it finished are cached). Exit codes: :data:`EXIT_OK`,
:data:`EXIT_REVIEW`, :data:`EXIT_LOCKED`; errors raise (the CLI exits 1).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import shutil
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from migrate import __version__
from migrate.core.embedding import Embedder
from migrate.core.embedding_cache import EmbeddingCache
from migrate.core.files import atomic_path, check_output, write_frame
from migrate.core.hashing import file_fingerprint
from migrate.core.progress import Progress, display_for, stage_of
from migrate.errors import OutputExistsError, TaxmigError
from migrate.mapping.category_decisions import (CATEGORY_DECISION, CATEGORY_DECISION_SCHEMA, CATEGORY_DISAGREES,
                                        category_table)
from migrate.mapping.fitted_target import FittedTargetStore
from migrate.core.report import review_guide, summary_rows
from migrate.mapping.pipeline import Inputs, Migrator, read_inputs_shown
from migrate.mapping.report import shown_thresholds
from migrate.mapping.result import MigrationResult
from migrate.mapping.workbook import DECISION_HOW, decide_text
from migrate.mapping.settings import MigrationSettings
from migrate.nightly.changes import (TargetChanges, category_counts, diff_targets, product_changes, score_drift,
                             target_snapshot)
from migrate.nightly.decisions import DEFAULT_STALE_BELOW, carried_decisions, resolve_products
from migrate.nightly.export import final_mapping
from migrate.nightly.lock import EXIT_LOCKED, RunLock
from migrate.nightly.next_round import AUDITED_KEY, QUESTIONS_KEY, feedback_from, questions_record
from migrate.nightly.reconcile_report import (REVIEW_SCOPES, NightlyReport, choices_for, review_rows, write_report_json,
                                     write_report_workbook)
from migrate.nightly.state import (DECISION_SCHEMA, SCORES_FILE, Generation, NewGeneration, StateStore, empty, fault_point,
                                   StateError, now_utc, remembered_settings)
from models import resolve_model

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_REVIEW = 2
EXIT_CODES = {EXIT_OK: "nothing needs a person", EXIT_ERROR: "error: nothing changed in the state",
              EXIT_REVIEW: "rows need review", EXIT_LOCKED: "another run holds the state lock: nothing done"}
TARGET_FIELDS = ("target_catalog", "target_taxonomy", "target_id", "target_text", "target_category",
                 "taxonomy_column")


@dataclass
class RunOutcome:
    """What a run did, for the CLI's one-line message and the scheduler's exit code."""

    run_id: str
    exit_code: int
    message: str
    written: list[Path] = field(default_factory=list)
    monitoring: dict[str, Any] = field(default_factory=dict)


@dataclass
class Night:
    """What one night is asked to do: map ``inputs`` under ``settings``, write the report (and the
    final ``mapping`` when given), list ``review_scope``'s rows, with decisions going stale below
    ``stale_below``; ``fingerprint`` identifies the inputs (an interrupted run of the same inputs is
    finished, not redone); ``rescore_all``: score every product, kept scores or not."""

    settings: MigrationSettings
    inputs: Inputs
    report: Path
    mapping: Path | None
    review_scope: str
    stale_below: float
    fingerprint: str
    started: str
    rescore_all: bool = False

    @property
    def report_json(self) -> Path:
        return self.report.with_suffix(".json")


# --- settings remembered by the state ---------------------------------------------------------

def model_for_state(model: str | None) -> str | None:
    """The bundled model as None (its install path may change), a folder as an absolute path."""
    ref = resolve_model(model)
    if ref.name.endswith("(bundled)"):
        return None
    return ref.location


def settings_for_night(remembered: dict[str, Any], catalog: str | Path, overrides: dict[str, Any], *,
                       progress: bool = True) -> MigrationSettings:
    """Remembered settings for tonight's ``catalog``; any target option given replaces the whole
    remembered target, other ``overrides`` replace single settings (``thresholds``/``scoring``/``encoder``
    as dicts of the fields given). ``trust_remote_code`` is never taken from the state: it lets the
    model folder's own Python run, and nothing in a state folder may make a night run code -- a
    night that needs it is given ``--trust-remote-code`` itself."""
    data = json.loads(json.dumps(remembered))  # a deep copy
    overrides = dict(overrides)
    if any(overrides.get(k) is not None for k in ("target_catalog", "target_taxonomy")):
        for key in TARGET_FIELDS:
            data[key] = None
    data = remembered_settings(data, given=bool((overrides.get("encoder") or {}).get("trust_remote_code")))
    for key in ("thresholds", "scoring", "encoder"):
        data[key] = {**data.get(key, {}), **overrides.pop(key, {})}
    data.update({k: v for k, v in overrides.items() if v is not None})
    return MigrationSettings.from_dict(data, source=catalog, progress=progress)


def inputs_fingerprint(settings: MigrationSettings, model_fingerprint: str, stale_below: float) -> str:
    """Same files, same model, same settings -> same fingerprint (a re-run of the same night)."""
    digest = hashlib.sha256()
    for path in (settings.source, settings.target_catalog, settings.target_taxonomy):
        digest.update((file_fingerprint(path) if path else "-").encode())
    digest.update(model_fingerprint.encode())
    digest.update(json.dumps(settings.to_dict(), sort_keys=True, default=str).encode())
    digest.update(str(stale_below).encode())
    return digest.hexdigest()[:16]


def _target_snapshot(inputs: Inputs) -> pl.DataFrame:
    targets = inputs.targets
    ids = targets.taxonomy.ids if targets.taxonomy is not None else {}
    products = []
    if targets.catalog is not None:
        cat = targets.catalog
        products = [(cat.ids[p], cat.texts[p], cat.categories[p]) for p in targets.product_rows]
    return target_snapshot(list(targets.categories), ids, products)


def _similarity(migrator: Migrator, cache: EmbeddingCache | None):
    embedder = Embedder(migrator.encoder.model, progress=True, cache=cache,  # on the night's display
                        cache_key=migrator.encoder.fingerprint if cache is not None else None)

    def similarity(old: list[str], new: list[str]) -> np.ndarray:
        vectors = embedder.encode([*old, *new], label="decision texts")
        return (vectors[: len(old)] * vectors[len(old):]).sum(axis=1)

    return similarity


# --- publishing and recovery ----------------------------------------------------------------

def publish_reports(generation: Generation, targets: list[dict[str, str]]) -> list[Path]:
    """Copy report files out of the committed generation to where the user asked, atomically."""
    written = []
    for item in targets:
        dest = Path(item["dest"])
        with atomic_path(dest) as tmp:
            shutil.copyfile(generation.folder / item["file"], tmp)
        written.append(dest)
    return written


def history_record(meta: dict[str, Any], outcome: str, **extra: Any) -> dict[str, Any]:
    """The ``history.jsonl`` line of a committed run (its generation's ``meta``) and its outcome."""
    run = meta.get("run", {})
    return {"run_id": run.get("run_id"), "kind": run.get("kind"), "started": run.get("started"),
            "finished": now_utc(), "outcome": outcome, "exit_code": run.get("exit_code"),
            "inputs": run.get("inputs"), "model": meta.get("model"), "counts": run.get("counts"),
            "generation": meta.get("generation"), "taxmig_version": __version__, **extra}


def finish_interrupted(store: StateStore, lock: RunLock) -> Generation | None:
    """If the current generation's run committed but never finished, publish and record it.

    Returns that generation (or None when the last run finished normally)."""
    if not store.exists():
        return None
    current = store.load()
    finished = {h.get("run_id") for h in store.history() if h.get("outcome") in ("ok", "recovered")}
    if current.run_id in finished:
        return None
    publish = current.meta.get("run", {}).get("publish", [])
    written = publish_reports(current, publish)
    store.append_history(history_record(current.meta, "recovered", published=[str(p) for p in written],
                                         stale_lock=lock.stale))
    log.warning("finished the interrupted run %s: published %s", current.run_id,
                ", ".join(str(p) for p in written) or "nothing")
    return current


# --- the night ------------------------------------------------------------------------------

def reconcile(catalog: str | Path, state_dir: str | Path, report: str | Path, *,
              init_settings: MigrationSettings | None = None, overrides: dict[str, Any] | None = None,
              stale_below: float | None = None, migrator: Migrator | None = None, overwrite: bool = False,
              progress: "bool | Progress" = True, review_scope: str = "new", mapping: str | Path | None = None,
              rescore_all: bool = False) -> RunOutcome:
    """One nightly run (see the module doc). ``init_settings`` creates the state (first night).

    ``review_scope``: ``"new"`` puts in the report (and counts for the exit code) the rows that need
    a person because of tonight -- new products, changed texts, changed flags, stale decisions;
    ``"all"`` the whole open review queue. ``mapping``: also write tonight's final mapping there
    (.csv, .parquet or .xlsx; :mod:`migrate.nightly.export`), committed with the state and published with
    the report. Products whose inputs did not change keep last night's scores
    (:mod:`migrate.mapping.kept_scores`); ``rescore_all`` scores every product again. ``progress``:
    the night's display, or whether to show one (:func:`~migrate.core.progress.display_for`)."""
    if review_scope not in REVIEW_SCOPES:
        raise TaxmigError(f"unknown review scope '{review_scope}'", hint=f"use one of {', '.join(REVIEW_SCOPES)}")
    report = Path(report)
    if report.suffix.lower() != ".xlsx":
        raise TaxmigError(f"{report}: the report is a workbook", hint="end the -o path in .xlsx (a .json summary is written beside it)")
    report_json = report.with_suffix(".json")
    outputs = (report, report_json)
    if mapping is not None:
        mapping = check_output(mapping, overwrite=True, companions=False)  # existence: with the report's
        outputs = (*outputs, mapping)
    if init_settings is None:
        StateStore.open(state_dir)  # a missing state is an error, not a folder to create
    with display_for(progress) as display, RunLock(state_dir, command=f"reconcile {catalog}") as lock:
        store = StateStore.create(state_dir) if init_settings is not None else StateStore.open(state_dir)
        recovered = finish_interrupted(store, lock)
        previous = store.load() if store.exists() else None
        if init_settings is not None:
            settings = replace(init_settings, source=catalog, progress=bool(display))
            stale = DEFAULT_STALE_BELOW if stale_below is None else stale_below
        else:
            if "settings" not in previous.meta:
                raise StateError(f"{previous.folder / 'meta.json'} remembers no settings",
                                 hint="the folder was changed by hand; restore a backup or start a new state folder")
            settings = settings_for_night(previous.meta["settings"], catalog, overrides or {}, progress=bool(display))
            stale = previous.meta.get("stale_below", DEFAULT_STALE_BELOW) if stale_below is None else stale_below
        started = now_utc()
        try:
            if recovered is None:
                _check_outputs(outputs, overwrite)  # before the slow part
            inputs = read_inputs_shown(settings, display)
            migrator = migrator or Migrator.from_settings(settings, lazy=True)
            fingerprint = inputs_fingerprint(settings, migrator.encoder.fingerprint, stale)
            if recovered is not None:
                run = recovered.meta["run"]
                if run.get("inputs_fingerprint") == fingerprint:
                    return RunOutcome(run["run_id"], run["exit_code"],
                                      f"finished the interrupted run {run['run_id']} (same inputs): report published",
                                      [Path(p["dest"]) for p in run.get("publish", [])], run.get("monitoring", {}))
                _check_outputs(outputs, overwrite)
            night = Night(settings, inputs, report, mapping, review_scope, stale, fingerprint, started, rescore_all)
            return _night(store, previous, night, migrator, lock)
        except Exception as exc:
            store.append_history({"run_id": None, "kind": "reconcile", "started": started, "finished": now_utc(),
                                  "outcome": "error", "exit_code": EXIT_ERROR,
                                  "error": f"{exc.__class__.__name__}: {exc}",
                                  "inputs": {"catalog": str(catalog)}, "stale_lock": lock.stale})
            raise


def _check_outputs(paths, overwrite: bool) -> None:
    for path in paths:
        if Path(path).exists() and not overwrite:
            raise OutputExistsError(path)


def _night(store: StateStore, previous: Generation | None, night: Night, migrator: Migrator,
           lock: RunLock) -> RunOutcome:
    settings, inputs, stale_below = night.settings, night.inputs, night.stale_below
    t0 = time.perf_counter()
    run_id = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    with EmbeddingCache(store.cache_path) as cache:
        kept = previous.kept_scores() if previous is not None and not night.rescore_all else None
        result = migrator.run(settings, inputs, cache=cache, fitted_targets=FittedTargetStore(store.fitted_target_path),
                              kept=kept, keep_scores=True, feedback=_feedback(previous, inputs))
        snapshot = _target_snapshot(inputs)
        target = diff_targets(previous.targets, snapshot) if previous is not None else TargetChanges()
        decisions = previous.latest_decisions() if previous is not None else empty(DECISION_SCHEMA)
        resolution = resolve_products(result.mapping, run_id=run_id,
                                      previous=previous.products if previous is not None else None,
                                      decisions=decisions, categories=set(inputs.targets.categories),
                                      renamed=target.renamed, stale_below=stale_below,
                                      similarity=_similarity(migrator, cache),
                                      category_decisions=previous.category_decisions if previous is not None else None)
    products = resolution.products
    model = {"name": migrator.encoder.name, "fingerprint": migrator.encoder.fingerprint}
    model_changed = previous is not None and previous.meta.get("model", {}).get("fingerprint") != model["fingerprint"]
    rejected = {r["id"]: r["reason"] for r in result.rejects.filter(pl.col("file") == "source").iter_rows(named=True)
                if r["id"]}
    changes = product_changes(previous.products if previous is not None else None, products, rejected=rejected,
                              target=target, model_changed=model_changed, stale_ratio=resolution.stale_ratio,
                              carried=resolution.carried)
    counts = _counts(products, changes, result, previous)
    review = review_rows(products, previous.products if previous is not None else None, night.review_scope)
    counts["in_report_for_review"] = review.height
    exit_code = EXIT_REVIEW if review.height else EXIT_OK
    seconds = time.perf_counter() - t0
    drift = score_drift(previous.products if previous is not None else None, products)
    monitoring = {
        "run_id": run_id, "state": str(store.root), "catalog": str(settings.source), "started": night.started,
        "exit_code": exit_code, "status": EXIT_CODES[exit_code], "counts": counts,
        "target_changes": target.as_dict(), "model": {**model, "changed": model_changed},
        "embedding": {"encoded": result.facts.encoded, "cached": result.facts.cached},
        "target_side": result.facts.target_side,
        "scores_kept": result.facts.scores_kept,
        "drift": drift.to_dicts(),
        "seconds": round(seconds, 2), "first_run": previous is None, "stale_lock": lock.stale,
        "review_scope": night.review_scope,
    }
    summary = _summary(night, store, previous, result, target, monitoring)
    nightly = NightlyReport(run_id=run_id, summary=summary, review=review, changes=changes,
                            categories=category_counts(previous.products if previous is not None else None, products),
                            drift=drift,
                            target_changes=target.table(), rejects=result.rejects,
                            choices=choices_for(list(inputs.targets.categories)), monitoring=monitoring,
                            category_table=category_table(products), products=products)
    settings_dict = settings.to_dict()
    settings_dict["encoder"]["model"] = model_for_state(settings.encoder.model)
    meta = {
        "settings": settings_dict, "model": model, "stale_below": stale_below,
        # the random checks a review in rounds answered (migrate.nightly.next_round.AUDITED_KEY): kept
        AUDITED_KEY: previous.meta.get(AUDITED_KEY, []) if previous is not None else [],
        "run": {"run_id": run_id, "kind": "reconcile", "started": night.started,
                "catalog": str(Path(settings.source).resolve()), "inputs": _inputs_record(settings, inputs),
                "inputs_fingerprint": night.fingerprint, "counts": counts, "exit_code": exit_code,
                "monitoring": monitoring,
                "publish": [{"file": "report.xlsx", "dest": str(night.report.resolve())},
                            {"file": "report.json", "dest": str(night.report_json.resolve())}]},
    }
    files = {"report.xlsx": lambda p: write_report_workbook(nightly, p),
             "report.json": lambda p: write_report_json(nightly, p),
             SCORES_FILE: result.kept_scores.write}
    if night.mapping is not None:
        name = f"final{night.mapping.suffix.lower()}"
        files[name] = lambda p: write_frame(final_mapping(products), p, "Final mapping")
        meta["run"]["publish"].append({"file": name, "dest": str(night.mapping.resolve())})
    with stage_of(settings.progress, "writing", total=len(files), unit="files") as stage:  # the night's display
        generation = store.commit(NewGeneration(
            meta=meta, products=products,
            decisions=pl.concat([previous.decisions if previous is not None else empty(DECISION_SCHEMA),
                                 carried_decisions(resolution.carried, run_id)]), targets=snapshot, files=files,
            category_decisions=previous.category_decisions if previous is not None else empty(CATEGORY_DECISION_SCHEMA)))
        stage.update(len(files))
    fault_point("before-publish")
    written = publish_reports(generation, meta["run"]["publish"])
    store.append_history(history_record(generation.meta, "ok", stale_lock=lock.stale))
    message = (f"{counts['products']} products: {counts['new']} new, {counts['removed']} removed, "
               f"{counts['text_changed']} changed text, {counts['assignment_changed']} changed category, "
               f"{counts['in_report_for_review']} to review tonight ({counts['needs_review']} open in all, "
               f"{counts['newly_flagged']} newly flagged, {counts['decision_stale']} stale decisions); wrote {', '.join(str(p) for p in written)}")
    return RunOutcome(run_id, exit_code, message, written, monitoring)


def _feedback(previous: Generation | None, inputs: Inputs):
    """Onto a taxonomy, the decisions in force the night's new and changed products learn from
    (:mod:`migrate.mapping.feedback`); None before any decision or onto a labelled target catalog."""
    if previous is None or inputs.targets.catalog is not None or not previous.decisions.height:
        return None
    return feedback_from(previous.products, round_number=0, measured={}, ask=None,
                         audited=set(previous.meta.get(AUDITED_KEY, [])))


def _inputs_record(settings: MigrationSettings, inputs: Inputs) -> dict[str, Any]:
    record = {"catalog": str(settings.source), "catalog_rows": inputs.source.n_records,
              "catalog_fingerprint": file_fingerprint(settings.source)}
    for key in ("target_catalog", "target_taxonomy"):
        path = getattr(settings, key)
        if path:
            record[key] = str(path)
            record[f"{key}_fingerprint"] = file_fingerprint(path)
    record["target_categories"] = len(inputs.targets.categories)
    return record


def _counts(products: pl.DataFrame, changes: pl.DataFrame, result: MigrationResult,
            previous: Generation | None) -> dict[str, int]:
    by_change = dict(changes.group_by("change").len().iter_rows()) if changes.height else {}
    flags = products["flags"].fill_null("")
    return {
        "products": products.height,
        "rejected": int(result.rejects.filter(pl.col("file") == "source").height),
        "new": int(by_change.get("new", 0)) if previous is not None else products.height,
        "removed": int(by_change.get("removed", 0)),
        "text_changed": int(by_change.get("text_changed", 0)),
        "assignment_changed": int(by_change.get("assignment_changed", 0)),
        "newly_flagged": int(by_change.get("newly_flagged", 0)),
        "decision_stale": int(flags.str.contains("DECISION_STALE").sum()),
        "decision_category_gone": int(flags.str.contains("DECISION_CATEGORY_GONE").sum()),
        "decisions_carried": int(by_change.get("decision_carried", 0)),
        "inherited_category_decision": int(flags.str.contains(CATEGORY_DECISION).sum()),
        "category_decision_disagrees": int(flags.str.contains(CATEGORY_DISAGREES).sum()),
        "decided": int((products["decision"].fill_null("") != "").sum()),
        "needs_review": int(products["needs_review"].sum()),
    }


def _summary(night: Night, store: StateStore, previous: Generation | None, result: MigrationResult,
             target: TargetChanges, monitoring: dict[str, Any]) -> list[tuple[str, Any]]:
    """The report's Summary rows; ``monitoring``: tonight's JSON summary (counts, model, exit code)."""
    counts, exit_code, model = monitoring["counts"], monitoring["exit_code"], monitoring["model"]
    settings = night.settings
    mapped = result.facts
    glance = {
        "Rows to review tonight (Review sheet)": counts["in_report_for_review"],
        "Open review queue (every flagged row)": counts["needs_review"],
        "Products with a person's decision in force": counts["decided"],
        "New / removed / changed text tonight": f"{counts['new']} / {counts['removed']} / {counts['text_changed']}",
        "Stale decisions (a person looks again)": counts["decision_stale"],
        "Joined a decided category (CATEGORY_DECISION)": counts["inherited_category_decision"],
        "... the model disagrees (CATEGORY_DISAGREES)": counts["category_decision_disagrees"],
        "Exit code": f"{exit_code}: {EXIT_CODES[exit_code]}",
    }
    facts = replace(mapped, command="reconcile", run_id=monitoring["run_id"], model=model["name"],
                    fingerprint=model["fingerprint"], needs_review=counts["needs_review"],
                    seconds=monitoring["seconds"])
    inputs: list[tuple[str, Any]] = [
        ("Run started (UTC)", night.started),
        ("State folder", str(store.root)),
        ("Previous run", previous.run_id if previous is not None else "none: first run"),
        ("Catalog", str(settings.source)), ("Catalog rows", facts.rows),
        ("Target catalog", str(settings.target_catalog or "")), ("Target taxonomy", str(settings.target_taxonomy or "")),
        ("Target categories", facts.target_categories),
        ("Target changed", target.as_dict() if target.changed else "no"),
    ]
    method: list[tuple[str, Any]] = [
        ("Model changed since last run", model["changed"]),
        ("Confidence calibrated", facts.calibration),
        ("Thresholds", shown_thresholds(facts.thresholds)), ("Decision goes stale below similarity", night.stale_below),
    ]
    outcome: list[tuple[str, Any]] = [
        ("Counts", counts),
        ("Review sheet", "the whole open review queue" if night.review_scope == "all" else
         "rows that need a person because of tonight (new, changed text, changed flags); the whole open queue is "
         "Counts > needs_review (--review all lists it)"),
        ("Products whose scores were kept (inputs unchanged)", facts.scores_kept),
        ("Exit code", f"{exit_code}: {EXIT_CODES[exit_code]}"),
    ]
    decide = decide_text(bool(category_table(result.mapping).height),
                         "one product per row, " + ("every open one" if night.review_scope == "all" else
                                                    "those that need a person because of tonight"))
    guide = review_guide(decide, DECISION_HOW, workbook=str(night.report), state=str(store.root), next_round=False,
                         command="reconcile")
    return summary_rows(facts, glance=glance, guide=guide, inputs=inputs, method=method, outcome=outcome)


# --- the first run through `taxmig migrate --state` --------------------------------------------

def migrate_into_state(settings: MigrationSettings, state_dir: str | Path, output: str | Path, *,
                       overwrite: bool = False, migrator: Migrator | None = None,
                       stale_below: float = DEFAULT_STALE_BELOW) -> tuple[MigrationResult, list[Path]]:
    """``taxmig migrate ... --state DIR``: map as usual, write the output, and start the state
    folder (settings, products, target snapshot, embedding cache) for later nights."""
    from migrate.core.files import check_fits, check_output
    from migrate.mapping.output import write_output

    with display_for(settings.progress) as display, RunLock(state_dir, command="migrate"):
        store = StateStore.create(state_dir)
        check_output(output, overwrite=overwrite)
        started = now_utc()
        inputs = read_inputs_shown(settings, display)
        check_fits(output, len(inputs.source))
        migrator = migrator or Migrator.from_settings(settings, lazy=True)
        with EmbeddingCache(store.cache_path) as cache:
            result = migrator.run(settings, inputs, cache=cache,
                                  fitted_targets=FittedTargetStore(store.fitted_target_path), keep_scores=True)
        result.facts.output, result.facts.state = str(output), str(state_dir)  # the first page's command names them
        with display.stage("writing", unit="rows") as stage:
            written = write_output(result, output, overwrite=overwrite)
            stage.update(result.mapping.height)
        products = resolve_products(result.mapping, run_id=result.run_id, previous=None,
                                    decisions=empty(DECISION_SCHEMA), categories=set(inputs.targets.categories),
                                    renamed={}).products
        settings_dict = settings.to_dict()
        settings_dict["encoder"]["model"] = model_for_state(settings.encoder.model)
        counts = {"products": products.height, "needs_review": int(products["needs_review"].sum()),
                  "rejected": int(result.rejects.filter(pl.col("file") == "source").height)}
        meta = {"settings": settings_dict,
                "model": {"name": migrator.encoder.name, "fingerprint": migrator.encoder.fingerprint},
                "stale_below": stale_below,
                "run": {"run_id": result.run_id, "kind": "migrate", "started": started,
                        "catalog": str(Path(settings.source).resolve()), "inputs": _inputs_record(settings, inputs),
                        "counts": counts, "exit_code": EXIT_OK, "publish": [],
                        "outputs": [str(p) for p in written], QUESTIONS_KEY: questions_record(result)}}
        generation = store.commit(NewGeneration(meta=meta, products=products, decisions=empty(DECISION_SCHEMA),
                                                targets=_target_snapshot(inputs),
                                                files={SCORES_FILE: result.kept_scores.write}))
        store.append_history(history_record(generation.meta, "ok"))
    return result, written
