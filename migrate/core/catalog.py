"""A catalog ready to embed: ids, texts and category paths, plus the rows that were rejected.

>>> from migrate.core.readers import read_table
>>> cat = load_catalog("sample_catalogs/bigbasket_sample.csv", role="source")  # doctest: +SKIP
>>> cat.ids[0], cat.texts[0], cat.categories[0]                                 # doctest: +SKIP
('1', 'Garlic Oil - Vegetarian Capsule 500 mg | Sri Sri Ayurveda', 'Beauty & Hygiene > Hair Care')
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import polars as pl

from migrate.core.columns import ROW_ID, ColumnSpec
from migrate.core.readers import ROW, Reject, read_table

PATH_SEPARATOR = " > "
TEXT_SEPARATOR = " | "
_SPACE = re.compile(r"\s+")


def normalise_path(value: str) -> str:
    """``"Food >Snacks  > Chips"`` -> ``"Food > Snacks > Chips"``."""
    parts = [_SPACE.sub(" ", p).strip() for p in value.split(">")]
    return PATH_SEPARATOR.join(p for p in parts if p)


def normalise_text(value: str) -> str:
    """Case- and space-folded text, the key under which identical products are encoded once."""
    return _SPACE.sub(" ", value).strip().lower()


@dataclass
class Catalog:
    """Products of one file that can be mapped; ``rejects`` holds the rest with reasons."""

    path: Path
    spec: ColumnSpec
    ids: list[str]
    texts: list[str]
    categories: list[str]  # "" where the file has no category for the row (or no category column)
    rows: list[int]
    n_records: int
    rejects: list[Reject] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def has_categories(self) -> bool:
        return bool(self.spec.category)


def build_catalog(frame: pl.DataFrame, spec: ColumnSpec, *, path: Path, n_records: int,
                  rejects: Sequence[Reject] = (), category_required: bool = False,
                  seen_before: Mapping[str, int] | None = None) -> Catalog:
    """Turn a read table into a :class:`Catalog`; an empty name (the first text column, even when a
    later one such as the brand is filled), empty or repeated ids become rejects. ``seen_before``:
    ids already met above this part of a file (id -> its first row), when a file is read in parts."""
    rejects = list(rejects)
    ids = (frame[ROW].cast(pl.String) if spec.id == ROW_ID else frame[spec.id]).fill_null("").to_list()
    text_cols = [frame[c].fill_null("").to_list() for c in spec.text]
    cat_cols = [frame[c].fill_null("").to_list() for c in spec.category]
    rows = frame[ROW].to_list()
    out_ids, out_texts, out_cats, out_rows = [], [], [], []
    first_row: dict[str, int] = dict(seen_before or {})
    for i, row in enumerate(rows):
        pid = ids[i].strip()
        text = TEXT_SEPARATOR.join(v for v in (_SPACE.sub(" ", col[i]).strip() for col in text_cols) if v)
        levels = [c[i].strip() for c in cat_cols]
        # a level left empty (e.g. no top category) makes the path wrong, not just shorter
        category = normalise_path(" > ".join(levels)) if levels and all(levels) else ""
        if not pid:
            rejects.append(Reject(row=row, reason=f"empty id in column '{spec.id}'; give every product an id",
                                  text=text))
        elif pid in first_row:
            rejects.append(Reject(row=row, id=pid, text=text,
                                  reason=f"duplicate id '{pid}' (first at row {first_row[pid]}); ids must be unique"))
        elif not (text_cols[0][i].strip() if text_cols else text):  # the first text column is the name
            rejects.append(Reject(row=row, id=pid, text=text,
                                  reason=f"empty text in {spec.text[0] if spec.text else 'the text columns'} "
                                         "(the product name); fill in the product name"))
        elif category_required and not category:
            rejects.append(Reject(row=row, id=pid, text=text,
                                  reason=f"no category (or an empty level) in {', '.join(spec.category)}; a target product needs one"))
        else:
            first_row[pid] = row
            out_ids.append(pid)
            out_texts.append(text)
            out_cats.append(category)
            out_rows.append(row)
        if pid and pid not in first_row:
            first_row.setdefault(pid, row)
    rejects.sort(key=lambda r: r.row)
    return Catalog(path=path, spec=spec, ids=out_ids, texts=out_texts, categories=out_cats, rows=out_rows,
                   n_records=n_records, rejects=rejects)


def load_catalog(path: str | Path, *, role: str, id: str | None = None,
                 text: str | Sequence[str] | None = None, category: str | Sequence[str] | None = None,
                 category_required: bool = False, encoding: str = "utf-8") -> Catalog:
    """Read, resolve columns and build the catalog in one call."""
    table = read_table(path, encoding=encoding)
    spec = ColumnSpec.resolve(table.columns, role=role, id=id, text=text, category=category,
                              category_required=category_required, path=table.path)
    return build_catalog(table.frame, spec, path=table.path, n_records=table.n_records,
                         rejects=table.rejects, category_required=category_required)
