"""The inputs of ``taxmig match``: two catalogs (or one, with ``--within``) and optional labelled pairs.

A :class:`MatchCatalog` is a :class:`~migrate.core.catalog.Catalog` (read with the same readers and the
same reject rules as ``migrate``: empty text, empty or repeated ids, malformed rows) plus what the
matcher compares besides the embedding: the title (the first text column), and the brand and
model-number ("code") columns when the file has them.

>>> left = load_match_catalog("abt.csv", role="left")            # doctest: +SKIP
>>> left.titles[0], left.spec.text                               # doctest: +SKIP
('sony turntable pslx350h', ('name', 'description'))
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import polars as pl

from migrate.core.catalog import Catalog, build_catalog
from migrate.core.columns import ColumnSpec, find_column, split_list
from migrate.core.readers import ROW, Reject, read_table
from migrate.core.rejects import rejects_table
from migrate.errors import InputError
from migrate.matching.decisions import decision_pairs, is_match_workbook

log = logging.getLogger(__name__)

BRAND_NAMES = ("brand", "manufacturer", "brand_name", "maker", "vendor")
CODE_NAMES = ("model", "model_number", "model_no", "mpn", "manufacturer_part_number", "part_number",
              "gtin", "ean", "upc", "isbn")
LEFT_ID_NAMES = ("left_id", "ltable_id", "id_left", "id1", "left", "source_id")
RIGHT_ID_NAMES = ("right_id", "rtable_id", "id_right", "id2", "right", "target_id")
LABEL_NAMES = ("label", "is_match", "match", "gold", "y")
CODE_VALUE_SHARE = 0.6
"""A column no header names as a code column is used as one when at least this share of its filled
values look like model numbers or GTINs (:func:`looks_like_code`), most of them distinct
(:data:`CODE_DISTINCT_SHARE`) and the column filled on at least :data:`CODE_FILLED_SHARE` of the rows.
First guesses, checked on real data: Abt's model numbers cut out of its names into a column of
their own are found (93% of values look like codes), while Abt-Buy's and Amazon-Google's ids,
prices and descriptions and every BigBasket column are not (tests/test_match.py)."""
CODE_DISTINCT_SHARE = 0.5
CODE_FILLED_SHARE = 0.3
_NON_DIGIT = re.compile(r"\D")
TRUE_LABELS = frozenset({"1", "true", "t", "yes", "y", "match", "1.0"})
FALSE_LABELS = frozenset({"0", "false", "f", "no", "n", "no match", "no-match", "nomatch", "non-match", "0.0"})


@dataclass
class MatchCatalog:
    """A catalog plus its titles, brands and codes, all aligned with ``catalog.ids``.

    ``brands[i]`` is ``""`` where unknown; ``codes[i]`` holds the values of the code columns
    (model numbers, GTINs) of product ``i``.
    """

    catalog: Catalog
    titles: list[str]
    brands: list[str]
    codes: list[tuple[str, ...]]
    brand_column: str | None = None
    code_columns: tuple[str, ...] = ()
    code_reason: str = ""  # how the code columns were chosen, for the Summary
    code_ignored: tuple[str, ...] = ()  # code columns left out, each with why (mostly empty or constant)

    def __len__(self) -> int:
        return len(self.catalog)

    @property
    def ids(self) -> list[str]:
        return self.catalog.ids

    @property
    def texts(self) -> list[str]:
        return self.catalog.texts

    @property
    def path(self) -> Path:
        return self.catalog.path

    @property
    def spec(self) -> ColumnSpec:
        return self.catalog.spec

    def describe(self) -> str:
        """One line for the Summary: id, text, brand and code columns."""
        extra = f"; brand={self.brand_column or '(none)'}; codes={', '.join(self.code_columns) or '(none)'}"
        if self.code_reason:
            extra += f" ({self.code_reason})"
        if self.code_ignored:
            extra += f"; ignored: {'; '.join(self.code_ignored)}"
        return self.spec.describe().replace("; category=(none)", "") + extra

    def position(self) -> dict[str, int]:
        """id -> position in this catalog."""
        return {pid: i for i, pid in enumerate(self.ids)}


def looks_like_code(value: str) -> bool:
    """A model number or a GTIN: one word (at most one space), 3-40 characters, letters and digits
    together, or at least 8 digits and no decimal point (EAN, UPC, ISBN; not a price).

    >>> [looks_like_code(v) for v in ("PSLX350H", "AM53BK", "KDL-40V5100", "0885909950805", "399.0", "black")]
    [True, True, True, True, False, False]
    """
    value = value.strip()
    if not 3 <= len(value) <= 40 or value.count(" ") > 1:
        return False
    letters = any(c.isalpha() for c in value)
    digits = len(_NON_DIGIT.sub("", value))
    return (letters and digits > 0) or (not letters and digits >= 8 and "." not in value)


def unusable_code_column(values: Sequence[str]) -> str | None:
    """Why a code column (named by its header or given) is no use, or None: filled on fewer than
    :data:`CODE_FILLED_SHARE` of the rows, or so repetitive that fewer than
    :data:`CODE_DISTINCT_SHARE` of its filled values are distinct (a constant, "N/A", a brand).

    >>> unusable_code_column(["", "", "", "AB12"]), unusable_code_column(["n/a", "n/a", "n/a", "n/a", "AB12"])
    ('filled on 25% of the rows', 'constant: 2 distinct values among 5 filled')
    """
    filled = [v.strip() for v in values if v and v.strip()]
    if len(filled) < CODE_FILLED_SHARE * max(len(values), 1):
        return f"filled on {len(filled) / max(len(values), 1):.0%} of the rows"
    distinct = len(set(filled))
    if distinct < CODE_DISTINCT_SHARE * len(filled):
        return f"constant: {distinct} distinct value{'s' if distinct != 1 else ''} among {len(filled)} filled"
    return None


def propose_code_columns(frame, candidates: Sequence[str]) -> list[tuple[str, float]]:
    """Columns among ``candidates`` whose values look like codes (:data:`CODE_VALUE_SHARE`), with the
    share that does, best first."""
    found = []
    for name in candidates:
        values = [v for v in frame[name].cast(str).fill_null("").to_list() if v.strip()]
        if not values or len(values) < CODE_FILLED_SHARE * frame.height:
            continue
        sample = values[:5000]
        share = sum(looks_like_code(v) for v in sample) / len(sample)
        if share >= CODE_VALUE_SHARE and len(set(sample)) >= CODE_DISTINCT_SHARE * len(sample):
            found.append((name, share))
    return sorted(found, key=lambda f: -f[1])


def load_match_catalog(path: str | Path, *, role: str, id: str | None = None, text: str | None = None,
                       brand: str | None = None, code: str | Sequence[str] | None = None,
                       encoding: str = "utf-8") -> MatchCatalog:
    """Read ``path`` like ``migrate`` does; missing columns (named or required) are reported at once.

    ``brand``/``code`` default to a brand/manufacturer column and model-number/MPN/GTIN columns
    when the file has them; ``""`` turns the default off.
    """
    table = read_table(path, encoding=encoding)
    columns = table.columns
    problems: list[str] = []
    brand_col = find_column(columns, BRAND_NAMES) if brand is None else (brand.strip() or None)
    code_cols = tuple(c for c in (find_column(columns, (n,)) for n in CODE_NAMES) if c) if code is None \
        else (split_list(code) or ())
    for name in ([brand_col] if brand is not None and brand_col else []) + (list(code_cols) if code is not None else []):
        if name not in columns:
            problems.append(f"column '{name}' not found")
    try:
        spec = ColumnSpec.resolve(columns, role=role, id=id, text=text, path=table.path)
    except InputError as exc:  # one error lists every missing column
        if not problems:
            raise
        raise InputError(table.path, "; ".join([exc.message[len(str(table.path)) + 2:], *problems]),
                         hint=exc.hint) from None
    spec = dataclasses.replace(spec, category=())  # matching compares products, not categories
    if problems:
        raise InputError(table.path, "; ".join(problems), hint=f"the columns are: {', '.join(columns)}")
    code_reason = "given" if code is not None and code_cols else ""
    if code is None:
        code_reason = "named by their headers" if code_cols else ""
        if not code_cols:  # no header says so: propose columns whose values look like model numbers
            used = {spec.id, *spec.text, brand_col, ROW}
            proposed = propose_code_columns(table.frame, [c for c in columns if c not in used])
            code_cols = tuple(name for name, _ in proposed)
            code_reason = ("found by their values: " + ", ".join(f"{name} {share:.0%} look like model numbers"
                                                                for name, share in proposed)) if proposed else ""
            if proposed:
                log.info("%s: %s used as code column(s), %s", table.path, ", ".join(code_cols), code_reason)
    ignored: list[str] = []
    if code_reason in ("given", "named by their headers"):  # columns found by their values passed these checks
        kept = []
        for name in code_cols:
            why = unusable_code_column(table.frame[name].cast(str).fill_null("").to_list())
            if why is None:
                kept.append(name)
            else:
                ignored.append(f"{name} ({why})")
                log.warning("%s: code column %s ignored: %s", table.path, name, why)
        code_cols = tuple(kept)
        if not code_cols:
            code_reason = ""
    catalog = build_catalog(table.frame, spec, path=table.path, n_records=table.n_records, rejects=table.rejects)
    at = {row: i for i, row in enumerate(table.frame[ROW].to_list())}
    keep = [at[r] for r in catalog.rows]

    def column(name: str) -> list[str]:
        values = table.frame[name].fill_null("").to_list()
        return [" ".join(values[i].split()) for i in keep]

    titles = column(spec.text[0])
    brands = column(brand_col) if brand_col else [""] * len(keep)
    code_values = [column(c) for c in code_cols]
    codes = [tuple(v[i] for v in code_values if v[i]) for i in range(len(keep))]
    log.info("%s: %d products (%d rejected); %s", table.path, len(catalog), len(catalog.rejects), spec.describe())
    return MatchCatalog(catalog, titles, brands, codes, brand_col, code_cols, code_reason, tuple(ignored))


@dataclass
class LabelledPairs:
    """Labelled pairs as positions into the left and right catalogs; unusable rows are rejects."""

    path: Path
    left: np.ndarray   # int64 positions in the left catalog
    right: np.ndarray  # int64 positions in the right catalog
    labels: np.ndarray  # int8, 1 = the same product
    n_records: int
    rejects: list[Reject] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def combined(cls, parts: Sequence["LabelledPairs"]) -> "LabelledPairs":
        """Several files' pairs as one; a pair labelled in more than one keeps the label of the last
        (give reviewers' corrections after the original labels)."""
        if len(parts) == 1:
            return parts[0]
        label: dict[tuple[int, int], int] = {}
        for part in parts:
            label.update(((int(a), int(b)), int(y)) for a, b, y in zip(part.left, part.right, part.labels))
        keys = list(label)
        return cls(parts[0].path, np.array([a for a, _ in keys], np.int64), np.array([b for _, b in keys], np.int64),
                   np.array([label[k] for k in keys], np.int8), sum(p.n_records for p in parts),
                   [r for p in parts for r in p.rejects])

    @property
    def n_matches(self) -> int:
        return int(self.labels.sum())


def load_labels(path: str | Path, left: MatchCatalog, right: MatchCatalog, *, encoding: str = "utf-8",
                within: bool = False) -> LabelledPairs:
    """Read labelled pairs (``left_id,right_id,label``; DeepMatcher's ``ltable_id,rtable_id,label`` too),
    or the decisions of a reviewed ``taxmig match`` workbook (:mod:`migrate.matching.decisions`).

    A pair naming an id that is not a usable product (unknown, or rejected from its catalog), a
    label that is not 1/0 (true/false, yes/no, match/no match), or a pair of a product with itself
    becomes a reject with the reason. Fewer than two usable pairs, or only one class, is an error.
    """
    if is_match_workbook(path):  # a reviewed match workbook: its decisions are the labels
        frame, rejects = decision_pairs(path)
        source, n_records = Path(path), frame.height + len(rejects)
        records = zip(frame["left_id"], frame["right_id"], frame["label"].cast(pl.String), frame["row"])
    else:
        table = read_table(path, encoding=encoding)
        cols = table.columns
        found = {role: find_column(cols, names) for role, names in
                 (("left id", LEFT_ID_NAMES), ("right id", RIGHT_ID_NAMES), ("label", LABEL_NAMES))}
        missing = [f"no {role} column (looked for {', '.join(names)})" for (role, col), names in
                   zip(found.items(), (LEFT_ID_NAMES, RIGHT_ID_NAMES, LABEL_NAMES)) if col is None]
        if missing:
            raise InputError(table.path, "; ".join(missing),
                             hint=f"name the columns left_id, right_id, label (the columns are: {', '.join(cols)})")
        frame, rejects, source, n_records = table.frame, list(table.rejects), table.path, table.n_records
        records = zip(frame[found["left id"]].fill_null(""), frame[found["right id"]].fill_null(""),
                      frame[found["label"]].fill_null(""), frame[ROW])
    lpos, rpos = left.position(), right.position()
    out_l, out_r, out_y = [], [], []
    for lid, rid, raw, row in records:
        lid, rid, value = lid.strip(), rid.strip(), raw.strip().lower()
        text = f"{lid} / {rid}"
        if value in TRUE_LABELS or value in FALSE_LABELS:
            label = int(value in TRUE_LABELS)
        else:
            rejects.append(Reject(row=row, id=lid, text=text,
                                  reason=f"label '{raw}' is not 1/0 (true/false, yes/no, match/no match)"))
            continue
        problems = [f"{side} id '{pid}' is not a usable product of {cat.path.name}"
                    for side, pid, pos, cat in (("left", lid, lpos, left), ("right", rid, rpos, right))
                    if pid not in pos]
        if within and not problems and lid == rid:
            problems.append("a product paired with itself")
        if problems:
            rejects.append(Reject(row=row, id=lid, text=text,
                                  reason="; ".join(problems) + " (unknown id, or rejected from its catalog)"))
            continue
        out_l.append(lpos[lid])
        out_r.append(rpos[rid])
        out_y.append(label)
    labels = np.asarray(out_y, dtype=np.int8)
    if len(labels) < 2 or labels.min() == labels.max():
        examples = "; ".join(f"row {r.row}: {r.reason}" for r in rejects[:3])
        raise InputError(source, f"needs matches and non-matches among its usable pairs: {int(labels.sum())} "
                                     f"matches, {int((labels == 0).sum())} non-matches"
                                     + (f" ({len(rejects)} unusable, e.g. {examples})" if rejects else ""),
                         hint="label some pairs 1 (same product) and some 0, with ids of the catalogs' id columns")
    rejects.sort(key=lambda r: r.row)
    log.info("%s: %d labelled pairs (%d matches), %d unusable", source, len(labels), int(labels.sum()),
             len(rejects))
    return LabelledPairs(source, np.asarray(out_l, np.int64), np.asarray(out_r, np.int64), labels, n_records, rejects)


@dataclass
class MatchInputs:
    """Both catalogs (the same object twice with ``within``) and the labelled pairs, read and checked
    (:func:`migrate.matching.settings.read_match_inputs`)."""

    left: MatchCatalog
    right: MatchCatalog
    labels: LabelledPairs | None = None
    within: bool = False

    def rejects(self) -> pl.DataFrame:
        """Every input row not matched (left, right and labels files), with the reason."""
        files = [("left", self.left.catalog.rejects)]
        if not self.within:
            files.append(("right", self.right.catalog.rejects))
        if self.labels is not None:
            files.append(("labels", self.labels.rejects))
        return rejects_table(files)
