"""Reading a migration's inputs: the source catalog and the targets (a taxonomy and/or a labelled
catalog), checked before any model is loaded."""

from __future__ import annotations

import logging

from dataclasses import dataclass, replace

import numpy as np
import polars as pl

from migrate.core.catalog import Catalog, load_catalog
from migrate.core.readers import Reject
from migrate.core.rejects import rejects_table
from migrate.core.taxonomy import Taxonomy, load_taxonomy
from migrate.errors import TaxmigError
from migrate.mapping.kept_scores import SOURCE_COLUMNS
from migrate.mapping.result import mapping_dtype
from migrate.mapping.settings import MigrationSettings

log = logging.getLogger(__name__)


@dataclass
class Targets:
    """What products can be mapped to: category list, optional labelled products."""

    categories: list[str]
    taxonomy: Taxonomy | None
    catalog: Catalog | None
    product_categories: np.ndarray  # category index per usable target product
    product_rows: list[int]         # positions in ``catalog`` of usable target products
    rejects: list[Reject]


def load_targets(settings: MigrationSettings) -> Targets:
    """Read the target taxonomy and/or catalog; target rows whose category is not a target are rejected."""
    taxonomy = None
    if settings.target_taxonomy is not None:
        taxonomy = load_taxonomy(settings.target_taxonomy, encoding=settings.encoding,
                                 column=settings.taxonomy_column)
        if taxonomy.merged:
            log.warning("%s: %d paths differ from an earlier one only in case, spacing or Unicode form and were "
                        "merged into it (the Summary lists them)", taxonomy.path, len(taxonomy.merged))
        if settings.leaves_only:
            taxonomy = taxonomy.leaves_only()
    catalog = None
    rejects: list[Reject] = []
    if settings.target_catalog is not None:
        catalog = load_catalog(settings.target_catalog, role="target", id=settings.target_id,
                               text=settings.target_text, category=settings.target_category,
                               category_required=True, encoding=settings.encoding, delimiter=settings.delimiter)
        rejects = list(catalog.rejects)
    if taxonomy is not None:
        categories = list(taxonomy.categories)
    else:
        categories = list(dict.fromkeys(catalog.categories))
        if settings.leaves_only:
            categories = Taxonomy.from_paths(categories).leaves()
    index_of = {c: i for i, c in enumerate(categories)}
    product_categories, product_rows = [], []
    if catalog is not None:
        for pos, (cat, row, pid) in enumerate(zip(catalog.categories, catalog.rows, catalog.ids)):
            if cat in index_of:
                product_categories.append(index_of[cat])
                product_rows.append(pos)
            else:
                where = "the target taxonomy" + (" (leaves only)" if settings.leaves_only else "")
                rejects.append(Reject(row=row, id=pid, text=catalog.texts[pos],
                                      reason=f"category '{cat}' is not in {where}; fix the category or the taxonomy"))
        if not product_rows:
            raise TaxmigError(f"{catalog.path}: no target product has a usable category",
                              hint="check --target-category and that its values match the taxonomy")
    if not categories:
        raise TaxmigError("the target lists no categories", hint="check the target files")
    return Targets(categories, taxonomy, catalog, np.asarray(product_categories, dtype=np.int64),
                   product_rows, sorted(rejects, key=lambda r: r.row))


def embedding_texts(source: Catalog, category_context: bool) -> list[str]:
    """Source texts as embedded: with the source category path appended when asked and known.

    A source category is strong context in a real migration ("Bathing Bar" under "Bath & Hand
    Wash" is soap, not food); it is the answer itself when source and target share a taxonomy,
    which is why the benchmark's source file carries no category column.
    """
    if not category_context or not source.has_categories:
        return source.texts
    return [f"{t} | {c}" if c else t for t, c in zip(source.texts, source.categories)]


@dataclass
class Inputs:
    """The source catalog and the targets, read and validated."""

    source: Catalog
    targets: Targets


def read_inputs(settings: MigrationSettings) -> Inputs:
    """Read and check every input file; bad input fails here, before the model is loaded."""
    settings.validate()
    source = load_catalog(settings.source, role="source", id=settings.source_id, text=settings.source_text,
                          category=settings.source_category, encoding=settings.encoding,
                          delimiter=settings.delimiter)
    if len(source) == 0:
        examples = "; ".join(f"row {r.row}: {r.reason}" for r in source.rejects[:3])
        raise TaxmigError(f"{source.path}: none of its {source.n_records} rows can be mapped ({examples})",
                          hint="fix those rows, or name the right columns with --source-id/--source-text")
    return Inputs(source, load_targets(settings))


def source_columns(source: Catalog) -> pl.DataFrame:
    """The columns of a scored frame that describe the products themselves (:data:`SOURCE_COLUMNS`)."""
    return pl.DataFrame({"source_row": source.rows, "source_id": source.ids, "source_text": source.texts,
                         "source_category": source.categories}, schema={c: mapping_dtype(c) for c in SOURCE_COLUMNS})


def rows_of(source: Catalog, rows: np.ndarray) -> Catalog:
    """The products of ``source`` at positions ``rows`` (its path, columns and rejects unchanged)."""
    return replace(source, ids=[source.ids[i] for i in rows], texts=[source.texts[i] for i in rows],
                   categories=[source.categories[i] for i in rows], rows=[source.rows[i] for i in rows])



def rejects_frame(source: list[Reject], target: list[Reject]) -> pl.DataFrame:
    """The Rejects table: every source and target row not mapped, with the reason."""
    return rejects_table([("source", source), ("target", target)])
