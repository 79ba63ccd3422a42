"""Load a target taxonomy: Google's ``id - path`` text, Shopify's ``gid : path`` text, the
``full_name:`` YAML of the taxonomy repositories, one path per line, or a table with a path column.

Every category the file lists is a valid target, inner nodes included (Google lists them as
categories: a generic product belongs on a parent). :meth:`Taxonomy.leaves_only` keeps leaves.

>>> tax = Taxonomy.from_paths(["Food", "Food > Snacks", "Food > Snacks > Chips"])
>>> tax.leaves_only().categories
['Food > Snacks > Chips']
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from migrate.core.catalog import normalise_path
from migrate.core.readers import decode_file, read_table
from migrate.errors import InputError

_GOOGLE = re.compile(r"^\s*(\d+)\s+-\s+(.+?)\s*$")
_SHOPIFY = re.compile(r"^\s*(gid://\S+)\s+:\s+(.+?)\s*$")
_YAML_NAME = re.compile(r"^\s*-?\s*full_name:\s*['\"]?(.+?)['\"]?\s*$")
_YAML_ID = re.compile(r"^\s*-\s*id:\s*['\"]?(\S+?)['\"]?\s*$")
TABLE_SUFFIXES = {".csv", ".tsv", ".tab", ".xlsx", ".xlsm", ".parquet", ".jsonl", ".ndjson"}
PATH_COLUMNS = ("path", "full_name", "category_path", "category", "name")
PRODUCT_TABLE_ROWS = 20
PRODUCT_TABLE_SHARE = 0.5
"""A taxonomy table with at least :data:`PRODUCT_TABLE_ROWS` rows but fewer distinct categories
than this share of them is a product catalog passed as a taxonomy (each category listed once is
a taxonomy; a category per product is a catalog)."""


def path_key(path: str) -> str:
    """What two spellings of one category share: Unicode form (NFKC), case and spacing folded.

    >>> path_key("Food >  Fruit") == path_key("food > fruit") == path_key("ＦＯＯＤ > Fruit")
    True
    """
    return normalise_path(unicodedata.normalize("NFKC", path)).casefold()


@dataclass
class Taxonomy:
    """Ordered, unique category paths (``A > B > C``) with optional source ids. Paths that differ
    only in case, spacing or Unicode form are one category under its first spelling; ``merged``
    lists the other spellings met (spelling, the category it joined)."""

    categories: list[str]
    ids: dict[str, str] = field(default_factory=dict)
    path: Path | None = None
    merged: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def from_paths(cls, paths: Iterable[str], ids: dict[str, str] | None = None,
                   path: Path | None = None) -> "Taxonomy":
        """The categories of ``paths`` in order, near-duplicates merged into the first spelling; two
        spellings with different ids are an :class:`InputError` naming both (which one is meant?)."""
        ids = dict(ids or {})
        first: dict[str, str] = {}
        merged: list[tuple[str, str]] = []
        noted: set[tuple[str, str]] = set()
        for raw in paths:
            p = normalise_path(raw)
            if not p:
                continue
            key = path_key(p)
            kept = first.setdefault(key, p)
            if kept == p:
                continue
            if ids.get(p) and ids.get(kept) and ids[p] != ids[kept]:
                raise InputError(path or Path("taxonomy"), f"'{kept}' (id {ids[kept]}) and '{p}' (id {ids[p]}) "
                                 "differ only in case or spacing but carry different ids",
                                 hint="keep one of the two lines, or spell the two categories apart")
            if (p, kept) not in noted:
                noted.add((p, kept))
                merged.append((p, kept))
            ids.pop(p, None)
        return cls(categories=list(first.values()), ids=ids, path=path, merged=merged)

    def __len__(self) -> int:
        return len(self.categories)

    def __post_init__(self) -> None:
        self._set = frozenset(self.categories)

    def __contains__(self, category: str) -> bool:
        return category in self._set

    def leaves(self) -> list[str]:
        """Categories that are no other listed category's parent."""
        parents = {c.rsplit(" > ", 1)[0] for c in self.categories if " > " in c}
        return [c for c in self.categories if c not in parents]

    def leaves_only(self) -> "Taxonomy":
        leaves = self.leaves()
        keep = set(leaves)  # built once: a set per id would make this quadratic
        return Taxonomy(leaves, {k: v for k, v in self.ids.items() if k in keep}, self.path, self.merged)

    def with_categories(self, other: Iterable[str]) -> "Taxonomy":
        """This taxonomy plus categories from elsewhere (a target catalog), order kept."""
        return Taxonomy.from_paths([*self.categories, *other], self.ids, self.path)


def load_taxonomy(path: str | Path, *, encoding: str = "utf-8", column: str | None = None) -> Taxonomy:
    """Read a taxonomy file in any of the supported layouts (see module doc)."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found", hint="check the --target-taxonomy path")
    suffix = path.suffix.lower()
    if suffix in TABLE_SUFFIXES and suffix != ".txt":
        return _from_table(path, encoding, column)
    text = decode_file(path, encoding)
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if lines and lines[0].strip() == "---" or any(_YAML_NAME.match(ln) for ln in lines[:5]):
        return _from_yaml(path, lines)
    paths: list[str] = []
    ids: dict[str, str] = {}
    for line in lines:
        m = _GOOGLE.match(line) or _SHOPIFY.match(line)
        if m:
            cat = normalise_path(m.group(2))
            ids[cat] = m.group(1)
        else:
            cat = normalise_path(line)
        paths.append(cat)
    if not paths:
        raise InputError(path, "lists no categories", hint="one category path per line, e.g. 'Food > Snacks'")
    return Taxonomy.from_paths(paths, ids, path)


def _from_yaml(path: Path, lines: list[str]) -> Taxonomy:
    paths, ids, last_id = [], {}, None
    for line in lines:
        if m := _YAML_ID.match(line):
            last_id = m.group(1)
        elif m := _YAML_NAME.match(line):
            cat = normalise_path(m.group(1))
            paths.append(cat)
            if last_id:
                ids[cat] = last_id
    if not paths:
        raise InputError(path, "has no 'full_name:' entries", hint="use the taxonomy's full_names.yml")
    return Taxonomy.from_paths(paths, ids, path)


def _from_table(path: Path, encoding: str, column: str | None) -> Taxonomy:
    table = read_table(path, encoding=encoding)
    lower = {c.lower(): c for c in table.columns}
    col = column or next((lower[n] for n in PATH_COLUMNS if n in lower), None)
    if col is None or col not in table.columns:
        raise InputError(path, f"no category path column (looked for {', '.join(PATH_COLUMNS)})",
                         hint=f"name the column with --taxonomy-column; the columns are {', '.join(table.columns)}")
    values = table.frame[col].fill_null("").to_list()
    ids = {}
    id_col = lower.get("id")
    if id_col:
        ids = {normalise_path(v): i for v, i in zip(values, table.frame[id_col].fill_null("").to_list()) if v}
    tax = Taxonomy.from_paths(values, ids, path)
    if not tax.categories:
        raise InputError(path, f"column '{col}' is empty", hint="fill in one category path per row")
    filled = sum(1 for v in values if v.strip())
    if filled >= PRODUCT_TABLE_ROWS and len(tax) < PRODUCT_TABLE_SHARE * filled:
        raise InputError(path, f"looks like a product catalog, not a taxonomy: its column '{col}' repeats "
                               f"{len(tax)} categories over {filled} rows",
                         hint=f"pass it as --target-catalog {path.name} (its products become labelled examples of "
                              "their categories); a taxonomy table lists each category once")
    return tax
