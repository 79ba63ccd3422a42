"""Crosswalk between two taxonomies: every category of an OLD taxonomy mapped onto a NEW one.

Each old category is one row of a mapping in the shape ``taxmig migrate`` writes (so the same
writers, review workbook and ``taxmig review apply`` work on it): ``source_id`` is the old
category's path, ``source_text`` its path too, ``source_category`` its parent path (empty at the
top level), ``target_category`` the suggested new category.

How a row is scored (see README "Crosswalk between two taxonomies" for the measurements):

1. Both taxonomies' whole paths are embedded as sentences with the same encoder; the score of a
   new category is the cosine of the two paths (the plain baseline). A whole path keeps the
   context a level name alone lacks ("Accessories" under "Bra" vs under "Camera").
2. With ``--products``, an old category is also represented by its products: its query vector is
   ``path + product_weight x mean(product vectors)`` (renormalised), so a vaguely named category
   ("Other Snacks") is placed by what it holds.
3. Structural consistency: old categories are scored parents first; an old category whose parent
   is listed adds ``parent_bonus x (1 - its best path cosine)`` to the new category its parent
   landed on. When the new taxonomy lacks an equivalent (the best match is only a sibling-like
   name), the child lands with its parent -- the broader category that does contain it -- instead
   of on a neighbour concept; a real equivalent (path cosine near 1) gets almost no competition.
   Comparing leaf names or per-level label scores, and rapidfuzz word overlap of names, lost to
   the whole path on the benchmark (they pull a category to a same-named node elsewhere).

``confidence`` is the raw top score (no labelled crosswalk exists to calibrate on); ``margin`` is
top-1 minus top-2. Flags: ``NO_MATCH`` (best path cosine below ``min_similarity``),
``LOW_CONFIDENCE`` (top score below ``min_score``), ``LOW_MARGIN`` (margin below ``min_margin``),
``PARENT_DISAGREES`` (the parent landed elsewhere and this row is neither on, under nor above it),
``LEXICAL_CONFLICT`` (a new category other than the chosen one, its parent or child has the old
category's leaf name, near-identically).

>>> settings = CrosswalkSettings(old="old.txt", new="new.txt")  # doctest: +SKIP
>>> result = run_crosswalk(settings)                              # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from rapidfuzz import fuzz, process, utils

from migrate.core.catalog import PATH_SEPARATOR, Catalog, load_catalog
from migrate.core.embedding import Embedder
from migrate.core.encoder import EncoderSettings
from migrate.core.readers import Reject
from migrate.core.report import RunFacts, summary_rows
from migrate.core.rejects import rejects_table
from migrate.core.taxonomy import Taxonomy, load_taxonomy
from migrate.errors import TaxmigError
from migrate.mapping.labels import path_levels
from migrate.mapping.result import MigrationResult, mapping_dtype
from migrate.mapping.scoring import top_columns

log = logging.getLogger(__name__)

CROSSWALK_FLAGS = ("NO_MATCH", "LOW_CONFIDENCE", "LOW_MARGIN", "PARENT_DISAGREES", "LEXICAL_CONFLICT")
CROSSWALK_MAPPING_COLUMNS = [
    "source_row", "source_id", "source_text", "source_category", "products",
    "target_category", "target_id", "confidence", "margin", "needs_review", "flags",
    "alt1_category", "alt1_score", "alt2_category", "alt2_score", "score",
    "path_similarity", "parent_target", "source_taxonomy_id",
]
CHUNK = 512


@dataclass
class CrosswalkSettings:
    """Inputs and knobs of :func:`run_crosswalk`; :meth:`validate` names every problem at once."""

    old: str | Path
    new: str | Path
    products: str | Path | None = None
    product_id: str | None = None
    product_text: str | None = None
    product_category: str | None = None
    old_column: str | None = None
    new_column: str | None = None
    encoder: EncoderSettings = field(default_factory=EncoderSettings)
    encoding: str = "utf-8"
    top_n: int = 3
    candidates: int = 50
    parent_bonus: float = 0.5
    product_weight: float = 1.0
    min_score: float = 0.6
    min_margin: float = 0.02
    min_similarity: float = 0.45
    lexical_min_ratio: float = 95.0
    progress: bool = True

    def validate(self) -> "CrosswalkSettings":
        """Raise one :class:`TaxmigError` listing every problem; return self when fine."""
        problems: list[str] = self.encoder.problems()
        for label, value in (("old taxonomy", self.old), ("new taxonomy", self.new), ("products", self.products)):
            if value is not None and not Path(value).is_file():
                problems.append(f"{label} {value}: file not found")
        if not 1 <= self.top_n <= 10:
            problems.append("--top-n must lie between 1 and 10")
        if self.candidates < self.top_n:
            problems.append("candidates must be at least --top-n")
        for name in ("parent_bonus", "product_weight"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be at least 0")
        for name in ("min_score", "min_margin"):
            if not 0 <= getattr(self, name) <= 1:
                problems.append(f"{name} must lie between 0 and 1")
        if not -1 <= self.min_similarity <= 1:
            problems.append("min_similarity must lie between -1 and 1")
        if not 0 <= self.lexical_min_ratio <= 100:
            problems.append("lexical_min_ratio must lie between 0 and 100")
        if problems:
            raise TaxmigError("; ".join(problems), hint="see taxmig crosswalk --help")
        return self


def parent_path(category: str) -> str:
    """``"A > B > C"`` -> ``"A > B"``; a top-level category has no parent (``""``)."""
    levels = path_levels(category)
    return PATH_SEPARATOR.join(levels[:-1]) if len(levels) > 1 else ""


def _leaf_key(category: str) -> str:
    return utils.default_process(path_levels(category)[-1])


def _read_products(settings: CrosswalkSettings, old: Taxonomy) -> tuple[Catalog | None, list[int], list[Reject]]:
    """The product catalog, the old-category index of each usable product, and the rejected rows."""
    if settings.products is None:
        return None, [], []
    catalog = load_catalog(settings.products, role="products", id=settings.product_id, text=settings.product_text,
                           category=settings.product_category, category_required=True, encoding=settings.encoding)
    index_of = {c: i for i, c in enumerate(old.categories)}
    rejects = list(catalog.rejects)
    owners: list[int] = []
    for pos, cat in enumerate(catalog.categories):
        if cat in index_of:
            owners.append(index_of[cat])
        else:
            owners.append(-1)
            rejects.append(Reject(row=catalog.rows[pos], id=catalog.ids[pos], text=catalog.texts[pos],
                                  reason=f"category '{cat}' is not a category of the old taxonomy"))
    if not any(o >= 0 for o in owners):
        raise TaxmigError(f"{catalog.path}: no product has a category of the old taxonomy {settings.old}",
                          hint="check --product-category and that its values are the old taxonomy's paths")
    return catalog, owners, sorted(rejects, key=lambda r: r.row)


@dataclass
class CrosswalkInputs:
    old: Taxonomy
    new: Taxonomy
    catalog: Catalog | None
    owners: list[int]
    rejects: list[Reject]


def read_crosswalk_inputs(settings: CrosswalkSettings) -> CrosswalkInputs:
    """Read and check both taxonomies (and the products); bad input fails before the model loads."""
    settings.validate()
    old = load_taxonomy(settings.old, encoding=settings.encoding, column=settings.old_column)
    new = load_taxonomy(settings.new, encoding=settings.encoding, column=settings.new_column)
    catalog, owners, rejects = _read_products(settings, old)
    return CrosswalkInputs(old, new, catalog, owners, rejects)


class CrosswalkScorer:
    """Scores old categories against new ones from unit vectors (no model inside: testable, benchable)."""

    def __init__(self, old: list[str], new: list[str], old_vectors: np.ndarray, new_vectors: np.ndarray, *,
                 parent_bonus: float, candidates: int = 50) -> None:
        self.old, self.new = old, new
        self.old_vectors, self.new_vectors = old_vectors, new_vectors
        self.parent_bonus = parent_bonus
        self.candidates = max(1, min(candidates, len(new)))
        new_index = {c: j for j, c in enumerate(new)}
        self.new_parent = np.array([new_index.get(parent_path(c), -1) for c in new], dtype=np.int64)
        old_index = {c: i for i, c in enumerate(old)}
        self.old_parent = np.array([old_index.get(parent_path(c), -1) for c in old], dtype=np.int64)

    def new_ancestors(self, j: int) -> list[int]:
        """Listed ancestors of new category ``j``, nearest first."""
        out = []
        j = self.new_parent[j]
        while j >= 0:
            out.append(int(j))
            j = self.new_parent[j]
        return out

    def related(self, a: int, b: int) -> bool:
        """Whether new categories ``a`` and ``b`` are equal or one lies under the other."""
        return a == b or b in self.new_ancestors(a) or a in self.new_ancestors(b)

    def score(self, queries: np.ndarray | None = None, mask: dict[int, np.ndarray] | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(candidate ids, scores) best first, path cosine per candidate, and each row's parent landing
        (-1 where the parent is not listed). ``queries`` replace the old path vectors (product
        evidence); ``mask`` hides new categories from single rows (the benchmark's hidden twins)."""
        queries = self.old_vectors if queries is None else queries
        n, k = len(self.old), self.candidates
        cand = np.zeros((n, k), dtype=np.int64)
        path = np.zeros((n, k), dtype=np.float32)
        for start in range(0, n, CHUNK):
            sims = queries[start:start + CHUNK] @ self.new_vectors.T
            if mask:
                for i in range(start, min(n, start + CHUNK)):
                    if i in mask:
                        sims[i - start, mask[i]] = -2.0
            ids, best = top_columns(sims, k)
            cand[start:start + len(ids)], path[start:start + len(ids)] = ids, best
        scores = path.astype(np.float64).copy()
        landing = np.full(n, -1, dtype=np.int64)
        if self.parent_bonus > 0:
            depth = np.array([len(path_levels(c)) for c in self.old])
            chosen = np.full(n, -1, dtype=np.int64)
            for i in np.argsort(depth, kind="stable"):  # parents before children
                p = self.old_parent[i]
                if p >= 0:
                    m = chosen[p]
                    landing[i] = m
                    hit = cand[i] == m
                    if not hit.any() and m >= 0:  # the parent's landing is out of this row's candidates
                        sim = float(queries[i] @ self.new_vectors[m]) if not (mask and i in mask and m in mask[i]) \
                            else -2.0
                        worst = int(np.argmin(scores[i]))
                        cand[i, worst], path[i, worst], scores[i, worst] = m, sim, sim
                        hit = cand[i] == m
                    scores[i, hit] += self.parent_bonus * max(0.0, 1.0 - float(path[i].max()))
                chosen[i] = cand[i, int(np.argmax(scores[i]))]
        order = np.argsort(-scores, axis=1, kind="stable")
        return (np.take_along_axis(cand, order, 1), np.take_along_axis(scores, order, 1),
                np.take_along_axis(path, order, 1), landing)


def product_queries(path_vectors: np.ndarray, product_vectors: np.ndarray, owners: list[int],
                    weight: float) -> tuple[np.ndarray, np.ndarray]:
    """Old categories' query vectors with product evidence: ``path + weight x mean(products)``,
    renormalised (categories without products keep their path vector); and the product counts."""
    n = len(path_vectors)
    owners_arr = np.asarray(owners, dtype=np.int64)
    keep = owners_arr >= 0
    counts = np.bincount(owners_arr[keep], minlength=n)
    sums = np.zeros_like(path_vectors)
    np.add.at(sums, owners_arr[keep], product_vectors[keep])
    means = sums / np.maximum(counts, 1)[:, None]
    norms = np.linalg.norm(means, axis=1, keepdims=True)
    means = np.where(norms > 0, means / np.maximum(norms, 1e-12), 0.0)
    queries = path_vectors + weight * means
    queries /= np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    return queries.astype(np.float32), counts


def crosswalk_flags(scorer: CrosswalkScorer, top_ids: np.ndarray, top_scores: np.ndarray, path_sim: np.ndarray,
                    landing: np.ndarray, settings: CrosswalkSettings) -> list[list[str]]:
    """The flags of every row (see the module doc)."""
    new_leaves = [_leaf_key(c) for c in scorer.new]
    by_leaf: dict[str, list[int]] = {}
    for j, key in enumerate(new_leaves):
        by_leaf.setdefault(key, []).append(j)
    out: list[list[str]] = []
    for i, old in enumerate(scorer.old):
        chosen = int(top_ids[i, 0])
        flags: list[str] = []
        if path_sim[i, 0] < settings.min_similarity:
            flags.append("NO_MATCH")
        if top_scores[i, 0] < settings.min_score:
            flags.append("LOW_CONFIDENCE")
        if top_scores.shape[1] > 1 and top_scores[i, 0] - top_scores[i, 1] < settings.min_margin:
            flags.append("LOW_MARGIN")
        if landing[i] >= 0 and not scorer.related(chosen, int(landing[i])):
            flags.append("PARENT_DISAGREES")
        key = _leaf_key(old)
        if key:
            near = by_leaf.get(key, [])
            if not near and settings.lexical_min_ratio < 100:
                near = [j for _, _, j in process.extract(key, new_leaves, scorer=fuzz.ratio, processor=None,
                                                         score_cutoff=settings.lexical_min_ratio, limit=None)]
            if near and not any(scorer.related(chosen, j) for j in near):
                flags.append("LEXICAL_CONFLICT")
        out.append(flags)
    return out


def run_crosswalk(settings: CrosswalkSettings, encoder: Any | None = None,
                  inputs: CrosswalkInputs | None = None) -> MigrationResult:
    """Map every old category onto the new taxonomy. ``encoder``: a loaded
    :class:`migrate.core.encoder.Encoder` (loaded from ``settings.encoder`` when not given)."""
    started = time.perf_counter()
    when = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    inputs = inputs or read_crosswalk_inputs(settings)
    if encoder is None:
        from migrate.core.encoder import load_model

        encoder = load_model(settings.encoder)
    old, new = inputs.old.categories, inputs.new.categories
    embedder = Embedder(encoder.model, batch_size=settings.encoder.batch_size, progress=settings.progress)
    product_texts = inputs.catalog.texts if inputs.catalog is not None else []
    vectors = embedder.encode([*old, *new, *product_texts], label="category paths and products")
    old_vec, new_vec = vectors[:len(old)], vectors[len(old):len(old) + len(new)]
    counts = np.zeros(len(old), dtype=np.int64)
    queries = None
    if inputs.catalog is not None:
        queries, counts = product_queries(old_vec, vectors[len(old) + len(new):], inputs.owners,
                                          settings.product_weight)
    scorer = CrosswalkScorer(old, new, old_vec, new_vec, parent_bonus=settings.parent_bonus,
                             candidates=settings.candidates)
    cand, scores, path_sim, landing = scorer.score(queries)
    flags = crosswalk_flags(scorer, cand, scores, path_sim, landing, settings)
    mapping = _mapping_frame(inputs, cand, scores, path_sim, landing, counts, flags, settings.top_n,
                             with_products=inputs.catalog is not None)
    rejects = _rejects_frame(inputs.rejects)
    seconds = time.perf_counter() - started
    review = int(mapping["needs_review"].sum())
    facts = RunFacts("crosswalk", started=when, model=encoder.name, fingerprint=encoder.fingerprint,
                     rows=len(old), mapped=mapping.height, rejected=len(inputs.rejects), needs_review=review,
                     unflagged=mapping.height - review, target_categories=len(new),
                     calibration="NO: confidence is the raw top score (path cosine plus the parent bonus)",
                     thresholds=_thresholds(settings), encoded=int(embedder.stats["encoded"]),
                     encode_seconds=float(embedder.stats["seconds"]), seconds=seconds)
    summary = _summary(facts, settings, inputs, mapping)
    log.info("crosswalk: %d old categories onto %d new ones, %d need review, %.1f s", len(old), len(new),
             int(mapping["needs_review"].sum()), seconds)
    return MigrationResult(mapping=mapping, rejects=rejects, crosswalk=pl.DataFrame(), summary=summary,
                           target_categories=list(new), facts=facts, thresholds=_thresholds(settings), calibrated=False)


def _thresholds(settings: CrosswalkSettings) -> dict[str, float]:
    return {"min_score": settings.min_score, "min_margin": settings.min_margin,
            "min_similarity": settings.min_similarity, "lexical_min_ratio": settings.lexical_min_ratio}


def _mapping_frame(inputs: CrosswalkInputs, cand: np.ndarray, scores: np.ndarray, path_sim: np.ndarray,
                   landing: np.ndarray, counts: np.ndarray, flags: list[list[str]], top_n: int, *,
                   with_products: bool) -> pl.DataFrame:
    old, new = inputs.old.categories, inputs.new.categories
    data: dict[str, Any] = {
        "source_row": list(range(1, len(old) + 1)),
        "source_id": old,
        "source_text": old,
        "source_category": [parent_path(c) for c in old],
        "products": counts.astype(np.int64) if with_products else [None] * len(old),
        "target_category": [new[j] for j in cand[:, 0]],
        "target_id": [inputs.new.ids.get(new[j], "") for j in cand[:, 0]],
        "confidence": np.round(np.clip(scores[:, 0], 0, None), 4),
        "margin": np.round(scores[:, 0] - scores[:, 1], 4) if scores.shape[1] > 1 else np.round(scores[:, 0], 4),
        "needs_review": [bool(f) for f in flags],
        "flags": [",".join(f) for f in flags],
    }
    for a in range(1, max(top_n, 3)):
        has = a < top_n and a < cand.shape[1]
        data[f"alt{a}_category"] = [new[j] for j in cand[:, a]] if has else [""] * len(old)
        data[f"alt{a}_score"] = np.round(scores[:, a], 4) if has else np.zeros(len(old))
    data["score"] = np.round(scores[:, 0], 4)
    data["path_similarity"] = np.round(path_sim[:, 0], 4)
    data["parent_target"] = [new[j] if j >= 0 else "" for j in landing]
    data["source_taxonomy_id"] = [inputs.old.ids.get(c, "") for c in old]
    schema = {c: (pl.Int64 if c == "products" else pl.Float64 if c == "path_similarity" else mapping_dtype(c))
              for c in data}
    return pl.DataFrame(data, schema=schema)


def _rejects_frame(rejects: list[Reject]) -> pl.DataFrame:
    return rejects_table([("products", rejects)])


def _summary(facts: RunFacts, settings: CrosswalkSettings, inputs: CrosswalkInputs, mapping: pl.DataFrame
             ) -> list[tuple[str, Any]]:
    counts = Counter(f for fl in mapping["flags"].to_list() for f in fl.split(",") if f)
    inputs_rows: list[tuple[str, Any]] = [
        ("Old taxonomy", str(inputs.old.path)),
        ("Old categories", len(inputs.old)),
        ("New taxonomy", str(inputs.new.path)),
        ("New categories", facts.target_categories),
    ]
    if inputs.catalog is not None:
        used = sum(1 for o in inputs.owners if o >= 0)
        inputs_rows += [("Products file", str(inputs.catalog.path)), ("Product rows", inputs.catalog.n_records),
                        ("Products used", used), ("Product rows rejected", facts.rejected),
                        ("Product columns", inputs.catalog.spec.describe()),
                        ("Old categories with products", int((mapping["products"] > 0).sum()))]
    method = [
        ("Method", "whole-path cosine" + (f" (old paths plus {settings.product_weight} x their products' mean "
                                          "vector)" if inputs.catalog is not None else "") +
         f"; parents first, +{settings.parent_bonus} x (1 - best path cosine) on the new category the parent "
         "landed on"),
        ("Settings", {k: v for k, v in asdict(settings).items()
                      if k in ("top_n", "candidates", "parent_bonus", "product_weight")}),
        ("Thresholds", facts.thresholds),
        ("Confidence calibrated", facts.calibration),
    ]
    outcome = [
        ("Rows needing review", facts.needs_review),
        ("Rows unflagged", facts.unflagged),
        ("Flag counts", {f: int(counts.get(f, 0)) for f in CROSSWALK_FLAGS}),
    ]
    glance = {
        "Rows safe to accept (no flag)": facts.unflagged,
        "Their estimated accuracy": "n/a (confidence is the raw path score, not calibrated)",
        "Rows to review (flagged; Review sheet)": facts.needs_review,
        "Old categories with no near equivalent (NO_MATCH)": int(counts.get("NO_MATCH", 0)),
        "Placed away from their parent's new category (PARENT_DISAGREES)": int(counts.get("PARENT_DISAGREES", 0)),
    }
    return summary_rows(facts, glance=glance, inputs=inputs_rows, method=method, outcome=outcome)


# --- writing -----------------------------------------------------------------------------------

CROSSWALK_SHEETS = ("Summary", "Review", "Mapping", "Rejects", "Parameters", "Categories")
"""In order: migrate's sheets (:data:`migrate.mapping.workbook.SHEET_NAMES`) less Category decisions
and Crosswalk (every row already is a category)."""
CROSSWALK_DECIDE = "In Review: one flagged old category per row, grouped by parent; Mapping has every old category."


def _write_workbook(result: MigrationResult, path: Path) -> None:
    """:data:`CROSSWALK_SHEETS`, laid out as migrate's: the same first page (At a glance, what to do
    and the command that reads the workbook back, the charts), Review in migrate's order and
    columns, Mapping (every row), both with the decision drop-down, reviewer_note and row keys,
    Rejects (product rows not used), Parameters and the hidden Categories sheet."""
    from openpyxl import Workbook

    from migrate.core.rejects import REJECT_COLUMNS as REJECTS
    from migrate.core.sheets import decision_choices, save_workbook, write_categories_sheet, write_table
    from migrate.mapping.workbook import write_first_page, write_parameters, write_review_sheet, write_review_table

    wb = Workbook()
    wb.remove(wb.active)
    summary = wb.create_sheet("Summary")
    write_first_page(summary, result, where=CROSSWALK_DECIDE, command="crosswalk",
                     next_round=False, rows="old category", title="taxmig crosswalk summary")
    choices = decision_choices(result.target_categories)
    write_review_sheet(wb.create_sheet("Review"), result.review(), CROSSWALK_MAPPING_COLUMNS, run_id=result.run_id,
                       n_choices=len(choices))
    write_review_table(wb.create_sheet("Mapping"), result.mapping, CROSSWALK_MAPPING_COLUMNS, run_id=result.run_id,
                       n_choices=len(choices))
    write_table(wb.create_sheet("Rejects"), result.rejects, REJECTS)
    write_parameters(wb.create_sheet("Parameters"), summary, result, group="parent category")
    write_categories_sheet(wb.create_sheet("Categories"), choices)
    save_workbook(wb, path)


def write_crosswalk_output(result: MigrationResult, path: str | Path, *, overwrite: bool = False,
                           state: str | Path | None = None) -> list[Path]:
    """Write ``result`` as .xlsx (review workbook), .csv or .parquet (mapping + rejects + summary
    JSON beside it), atomically, never over an existing file unless ``overwrite``. ``state``: the
    state folder the run starts, named with ``path`` in the workbook's command (``result.facts``)."""
    from migrate.core.files import write_atomic, check_output
    from migrate.mapping.output import write_output

    result.facts.output, result.facts.state = str(path), str(state) if state is not None else None
    path = check_output(path, overwrite=overwrite)
    if path.suffix.lower() != ".xlsx":
        return write_output(result, path, overwrite=overwrite)
    write_atomic(path, lambda tmp: _write_workbook(result, tmp))
    return [path]
