"""Which columns of a catalog hold the id, the text and the category.

A :class:`ColumnSpec` is a small settings object in the manner of splink's settings: it fills
sensible defaults from the header, validates itself against the file, and reports every missing
column at once (with the nearest existing names) instead of failing on the first.

>>> spec = ColumnSpec.resolve(["index", "product", "brand", "category", "sub_category"], role="source")
>>> spec.id, spec.text, spec.category
('index', ('product', 'brand'), ('category', 'sub_category'))
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from rapidfuzz import process

from migrate.errors import InputError

ID_NAMES = ("id", "product_id", "sku", "item_id", "uid", "index")
NAME_NAMES = ("product", "product_name", "name", "title", "product_title", "item_name", "item")
EXTRA_TEXT_NAMES = (("brand", "manufacturer", "brand_name"), ("description", "product_description"))
PATH_NAMES = ("category_path", "full_name", "path", "product_type", "google_product_category", "taxonomy")
LEVEL_NAMES = (("category", "main_category", "department"),
               ("sub_category", "subcategory", "sub-category", "category_2"))
ROW_ID = "_row"


_NOT_ALNUM = re.compile(r"[^0-9a-z]+")


def header_key(name: str) -> str:
    """A header as compared with the known names: case and punctuation dropped, so ``Model No.``,
    ``model_no`` and ``modelno`` are one name, as are ``MPN#`` and ``mpn``.

    >>> header_key("Model No."), header_key("sub-category"), header_key("MPN#")
    ('modelno', 'subcategory', 'mpn')
    """
    return _NOT_ALNUM.sub("", name.lower())


def find_column(columns: Sequence[str], candidates: Sequence[str]) -> str | None:
    """The first of ``candidates`` (known names, in order of preference) that ``columns`` holds,
    headers compared by :func:`header_key`; the column's own spelling is returned."""
    by_key: dict[str, str] = {}
    for column in columns:
        by_key.setdefault(header_key(column), column)
    return next((by_key[header_key(n)] for n in candidates if header_key(n) in by_key), None)


def split_list(value: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``"a, b"`` -> ``("a", "b")``; ``None`` stays ``None`` (use the defaults)."""
    if value is None:
        return None
    parts = value.split(",") if isinstance(value, str) else list(value)
    out = tuple(p.strip() for p in parts if p.strip())
    return out or None


@dataclass(frozen=True)
class ColumnSpec:
    """Resolved column roles. ``id`` may be ``"_row"``: the file has no id column, rows are numbered."""

    id: str
    text: tuple[str, ...]
    category: tuple[str, ...] = ()

    @classmethod
    def resolve(cls, columns: Sequence[str], *, role: str, id: str | None = None,
                text: str | Sequence[str] | None = None, category: str | Sequence[str] | None = None,
                category_required: bool = False, path: str | Path = "<input>") -> "ColumnSpec":
        """Fill defaults from ``columns`` and check the named ones exist; one error lists all problems."""
        columns = [c for c in columns if c != ROW_ID]
        text_cols = split_list(text)
        cat_cols = split_list(category)
        problems: list[str] = []
        missing: list[str] = []

        if id is None:
            id = find_column(columns, ID_NAMES) or ROW_ID
        elif id not in columns:
            missing.append(id)
        if text_cols is None:
            name = find_column(columns, NAME_NAMES)
            if name is None:
                problems.append(f"no product text column (looked for {', '.join(NAME_NAMES)}); "
                                f"name it with --{role}-text")
                text_cols = ()
            else:
                extras = [find_column(columns, group) for group in EXTRA_TEXT_NAMES]
                text_cols = (name, *[e for e in extras if e])
        else:
            missing += [c for c in text_cols if c not in columns]
        if cat_cols is None:
            path_col = find_column(columns, PATH_NAMES)
            levels = [find_column(columns, group) for group in LEVEL_NAMES]
            if path_col:
                cat_cols = (path_col,)
            elif levels[0]:
                cat_cols = tuple(c for c in levels if c)
            else:
                cat_cols = ()
            if category_required and not cat_cols:
                problems.append(f"no category column (looked for {', '.join(PATH_NAMES + LEVEL_NAMES[0])}); "
                                f"name it with --{role}-category")
        else:
            missing += [c for c in cat_cols if c not in columns]

        for name in dict.fromkeys(missing):
            near = process.extractOne(name, columns, score_cutoff=60)
            problems.append(f"column '{name}' not found" + (f" (did you mean '{near[0]}'?)" if near else ""))
        if problems:
            raise InputError(path, "; ".join(problems),
                             hint=f"the columns are: {', '.join(columns)}")
        return cls(id=id, text=tuple(text_cols), category=tuple(cat_cols))

    def describe(self) -> str:
        """One line for logs and the Summary sheet."""
        cat = " > ".join(self.category) if self.category else "(none)"
        ident = "row number" if self.id == ROW_ID else self.id
        return f"id={ident}; text={' + '.join(self.text)}; category={cat}"
