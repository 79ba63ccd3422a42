"""``taxmig crosswalk ... --state DIR``: a crosswalk that starts a state folder, whose products are
the old categories, so ``taxmig review apply`` takes the reviewed workbook."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from migrate.core.files import check_output
from migrate.core.hashing import file_fingerprint
from migrate.mapping.crosswalk import (CrosswalkSettings, read_crosswalk_inputs, run_crosswalk,
                                      write_crosswalk_output)
from migrate.mapping.result import MigrationResult
from migrate.mapping.settings import MigrationSettings
from migrate.nightly.changes import target_snapshot
from migrate.nightly.decisions import DEFAULT_STALE_BELOW, resolve_products
from migrate.nightly.lock import RunLock
from migrate.nightly.reconcile import EXIT_OK, history_record, model_for_state
from migrate.nightly.state import DECISION_SCHEMA, NewGeneration, StateStore, empty, now_utc


def crosswalk_into_state(settings: CrosswalkSettings, state_dir: str | Path, output: str | Path, *,
                         overwrite: bool = False, encoder: Any | None = None) -> tuple[MigrationResult, list[Path]]:
    """``taxmig crosswalk ... --state DIR``: run, write ``output`` and start a state folder whose
    products are the old categories, so ``taxmig review apply`` takes the reviewed workbook."""
    inputs = read_crosswalk_inputs(settings)
    with RunLock(state_dir, command="crosswalk"):
        store = StateStore.create(state_dir)
        check_output(output, overwrite=overwrite)
        started = now_utc()
        result = run_crosswalk(settings, encoder, inputs)
        written = write_crosswalk_output(result, output, overwrite=overwrite, state=state_dir)
        products = resolve_products(result.mapping, run_id=result.run_id, previous=None,
                                    decisions=empty(DECISION_SCHEMA), categories=set(inputs.new.categories),
                                    renamed={}).products
        remembered = MigrationSettings(source=settings.old, target_taxonomy=settings.new,
                                       taxonomy_column=settings.new_column, encoder=settings.encoder,
                                       encoding=settings.encoding).to_dict()
        remembered["encoder"]["model"] = model_for_state(settings.encoder.model)
        record = {"catalog": str(settings.old), "catalog_fingerprint": file_fingerprint(settings.old),
                  "target_taxonomy": str(settings.new), "target_taxonomy_fingerprint": file_fingerprint(settings.new),
                  "target_categories": len(inputs.new)}
        if settings.products is not None:
            record.update(products=str(settings.products), products_fingerprint=file_fingerprint(settings.products))
        counts = {"products": products.height, "needs_review": int(products["needs_review"].sum()), "rejected": 0}
        meta = {"settings": remembered, "crosswalk": {k: (str(v) if isinstance(v, Path) else v)
                                                      for k, v in asdict(settings).items()},
                "model": {"name": result.facts.model, "fingerprint": result.facts.fingerprint},
                "stale_below": DEFAULT_STALE_BELOW,
                "run": {"run_id": result.run_id, "kind": "crosswalk", "started": started,
                        "catalog": str(Path(settings.old).resolve()), "inputs": record, "counts": counts,
                        "exit_code": EXIT_OK, "publish": [], "outputs": [str(p) for p in written]}}
        generation = store.commit(NewGeneration(
            meta=meta, products=products, decisions=empty(DECISION_SCHEMA),
            targets=target_snapshot(list(inputs.new.categories), inputs.new.ids, [])))
        store.append_history(history_record(generation.meta, "ok"))
    return result, written
