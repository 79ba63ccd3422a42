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


# whitespace as Python's ``str.isspace`` sees it: Rust's ``\s`` (the Unicode White_Space property)
# lacks the four information separators U+001C-U+001F that Python counts as space
_SPACE_RUN = r"[\s\x1c-\x1f]+"


def _collapsed(expr: pl.Expr) -> pl.Expr:
    """Runs of whitespace made one space, ends trimmed: ``_SPACE.sub(" ", v).strip()`` as an expression."""
    return expr.str.replace_all(_SPACE_RUN, " ").str.strip_chars(" ")


# the characters ``str.strip()`` removes (``str.isspace``: 29 of them, none above U+3000)
_WHITESPACE = "".join(ch for ch in map(chr, range(0x3001)) if ch.isspace())


def _stripped(expr: pl.Expr) -> pl.Expr:
    """``str.strip()`` as an expression."""
    return expr.str.strip_chars(_WHITESPACE)


def _path(levels: list[pl.Expr]) -> pl.Expr:
    """:func:`normalise_path` of the levels joined by ``" > "``; ``""`` when a level is empty."""
    # every run of ">" (and the spaces around them) becomes one separator, none left at the ends
    joined = (_collapsed(pl.concat_str(levels, separator=PATH_SEPARATOR))
              .str.replace_all(r" ?(?:> ?)+", PATH_SEPARATOR).str.replace_all(r"^ > | > $", ""))
    return pl.when(pl.all_horizontal([lv != "" for lv in levels])).then(joined).otherwise(pl.lit(""))


DELIMITER_NAMES = {";": "';' (semicolon)", "\t": "tabs", "|": "'|'"}


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
    delimiter: str | None = None  # a delimited text file's field separator, as read

    def describe(self) -> str:
        """The columns used, and a text file's separator when it is not a comma (the Summary's line)."""
        if self.delimiter in (None, ","):
            return self.spec.describe()
        return f"{self.spec.describe()}; fields separated by {DELIMITER_NAMES.get(self.delimiter, repr(self.delimiter))}"

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
    ids already met above this part of a file (id -> its first row), when a file is read in parts.

    Column-wise in polars, not a loop over rows (several times slower on a full catalog)."""
    seen_before = dict(seen_before or {})
    texts = [_collapsed(pl.col(c).cast(pl.String).fill_null("")) for c in spec.text]
    levels = [_stripped(pl.col(c).cast(pl.String).fill_null("")) for c in spec.category]
    work = frame.select(
        pl.col(ROW).alias("row"),
        _stripped(pl.col(ROW if spec.id == ROW_ID else spec.id).cast(pl.String).fill_null("")).alias("id"),
        (pl.concat_str([pl.when(t != "").then(t) for t in texts], separator=TEXT_SEPARATOR, ignore_nulls=True)
         .fill_null("") if texts else pl.lit("")).alias("text"),
        (texts[0] if texts else pl.lit("")).alias("name"),
        (_path(levels) if levels else pl.lit("")).alias("category"),
    ).with_columns(
        # the first row of an id in this part (a row rejected for another reason counts too)
        pl.col("row").first().over("id").alias("first"),
        pl.col("id").is_first_distinct().alias("first_of_id"),
    )
    before = pl.Series("id", list(seen_before), dtype=pl.String)
    reason = (
        pl.when(pl.col("id") == "").then(pl.lit("empty id"))
        .when(pl.col("id").is_in(before) | ~pl.col("first_of_id")).then(pl.lit("duplicate"))
        .when(pl.col("name") == "").then(pl.lit("empty text"))
        .when(pl.lit(category_required) & (pl.col("category") == "")).then(pl.lit("no category"))
    )
    work = work.with_columns(reason.alias("reason"))
    kept = work.filter(pl.col("reason").is_null())
    rejects = list(rejects)
    for r in work.filter(pl.col("reason").is_not_null()).iter_rows(named=True):
        pid, text, row = r["id"], r["text"], r["row"]
        if r["reason"] == "empty id":
            rejects.append(Reject(row=row, reason=f"empty id in column '{spec.id}'; give every product an id", text=text))
        elif r["reason"] == "duplicate":
            first = seen_before.get(pid, r["first"])
            rejects.append(Reject(row=row, id=pid, text=text,
                                  reason=f"duplicate id '{pid}' (first at row {first}); ids must be unique"))
        elif r["reason"] == "empty text":
            rejects.append(Reject(row=row, id=pid, text=text,
                                  reason=f"empty text in {spec.text[0] if spec.text else 'the text columns'} "
                                         "(the product name); fill in the product name"))
        else:
            rejects.append(Reject(row=row, id=pid, text=text,
                                  reason=f"no category (or an empty level) in {', '.join(spec.category)}; a target product needs one"))
    rejects.sort(key=lambda r: r.row)
    return Catalog(path=path, spec=spec, ids=kept["id"].to_list(), texts=kept["text"].to_list(),
                   categories=kept["category"].to_list(), rows=kept["row"].to_list(),
                   n_records=n_records, rejects=rejects)


def load_catalog(path: str | Path, *, role: str, id: str | None = None,
                 text: str | Sequence[str] | None = None, category: str | Sequence[str] | None = None,
                 category_required: bool = False, encoding: str = "utf-8", delimiter: str | None = None) -> Catalog:
    """Read, resolve columns and build the catalog in one call (``delimiter``: a text file's field
    separator; default: sniffed)."""
    table = read_table(path, encoding=encoding, delimiter=delimiter)
    spec = ColumnSpec.resolve(table.columns, role=role, id=id, text=text, category=category,
                              category_required=category_required, path=table.path)
    catalog = build_catalog(table.frame, spec, path=table.path, n_records=table.n_records,
                            rejects=table.rejects, category_required=category_required)
    catalog.delimiter = table.delimiter
    return catalog
