"""The final mapping a downstream system loads: every live product, its final category and who set it.

``taxmig review apply`` writes it after applying decisions, ``taxmig reconcile --mapping FILE``
after each night; ``taxmig export --state DIR -o FILE`` writes it from the state's current
generation at any time. One set of columns for all three (:data:`FINAL_COLUMNS`):
``final_category`` is the reviewer's decision where one is in force (``final_source`` ``reviewer``,
``new_category`` where a person asked for a category the target lacks), else the model's
suggestion (``model``); ``decided_by``/``decided_at`` say who and when.
"""

from __future__ import annotations

import logging
from pathlib import Path

import polars as pl

from migrate.core.files import atomic_path, check_output, write_frame
from migrate.nightly.state import StateStore

log = logging.getLogger(__name__)

FINAL_COLUMNS = ["product_id", "source_row", "source_text", "source_category", "final_category", "final_source",
                 "decision", "decided_by", "decided_at", "decision_note", "target_category", "confidence",
                 "flags", "needs_review"]


def final_mapping(products: pl.DataFrame) -> pl.DataFrame:
    """The mapping to load into the new platform: the final category of every live product."""
    return products.sort("source_row").select(FINAL_COLUMNS)


def export_mapping(state_dir: str | Path, output: str | Path, *, overwrite: bool = False) -> tuple[Path, int]:
    """Write the current generation's final mapping to ``output`` (atomically); (path, rows).

    Reads the committed generation only (a run in progress commits a new one atomically), so it
    needs no lock and never waits for the nightly job."""
    output = check_output(output, overwrite=overwrite, companions=False)
    generation = StateStore.open(state_dir).load()
    frame = final_mapping(generation.products)
    with atomic_path(output) as tmp:
        write_frame(frame, tmp, "Final mapping", suffix=output.suffix)
    log.debug("exported %d products from %s (%s) to %s", frame.height, state_dir, generation.run_id, output)
    return output, frame.height
