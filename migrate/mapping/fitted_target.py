"""The fitted target side of a migration onto a labelled catalog, kept between nightly runs.

Onto a labelled target catalog, most of a night's work does not depend on the source at all: the
classifier and its out-of-fold votes, and the leave-one-out over the target that fits the
confidence calibrator and chooses ``min_confidence``. While the target catalog, the model and the
scoring settings are unchanged, that work gives the same answer every night, so the nightly state
keeps it (``target_side.pkl`` beside the embedding cache) under a key that hashes everything it
depends on; any change to one of them misses the key and the side is fitted again.

The file is a pickle written and read by taxmig in the user's own state folder (as trusted as the
state itself); one that cannot be read is ignored and fitted again, never an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from migrate.core.files import atomic_path

log = logging.getLogger(__name__)

FORMAT = 2
"""Bumped when what is stored changes: an older file misses every key. 2 (2026-12-04): the
classifier, lexical index and calibrator are kept as arrays (migrate.mapping.sparse_text), not
scikit-learn objects, so reading them imports no scikit-learn."""


@dataclass
class FittedTarget:
    """What the target side fitted: the classifier (or None), the calibrator, the leave-one-out
    report; and what it read: the target products' and label texts' vectors and the lexical index
    (or None), so a night with something to score neither reads 20k vectors from the embedding
    cache (0.55 s) nor fits TF-IDF again (0.26 s; cProfile of a BigBasket night, 2026-12-03). Files
    written before these were kept read them as None: the night encodes and fits those again."""

    classifier: Any
    calibrator: Any
    loo: Any  # migrate.mapping.calibration.LeaveOneOut (a dict in files written before it existed)
    target_vectors: np.ndarray | None = None
    label_vectors: np.ndarray | None = None
    lexical: Any = None


def fitted_target_key(*, model_fingerprint: str, categories: Sequence[str], texts: Sequence[str],
                      product_categories: np.ndarray, settings: dict[str, Any]) -> str:
    """sha256 over the model, the target categories, every target product's text and category, and
    the settings the fit reads (scoring, thresholds, seed, calibration size, label layout)."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"format": FORMAT, "model": model_fingerprint, "settings": settings},
                             sort_keys=True, default=str).encode())
    for part in (categories, texts):
        digest.update(len(part).to_bytes(8, "little"))
        for text in part:
            digest.update(text.encode())
            digest.update(b"\x00")
    digest.update(np.ascontiguousarray(product_categories, dtype=np.int64).tobytes())
    return digest.hexdigest()


def fit_settings(settings, *, by_level: bool) -> dict[str, Any]:
    """The settings a fitted target side depends on, as plain data for the key."""
    return {"scoring": asdict(settings.scoring), "thresholds": settings.thresholds.as_dict(), "seed": settings.seed,
            "calibration_limit": settings.calibration_limit, "by_level": by_level}


# where the pickled classes lived before migrate/ had subpackages: a state folder written then is
# read without fitting its target side again
FLAT_MODULES = {"migrate.readers": "migrate.core.readers", "migrate.columns": "migrate.core.columns",
                "migrate.catalog": "migrate.core.catalog", "migrate.taxonomy": "migrate.core.taxonomy",
                "migrate.hashing": "migrate.core.hashing", "migrate.embedding": "migrate.core.embedding",
                "migrate.embedding_cache": "migrate.core.embedding_cache", "migrate.index": "migrate.core.index",
                "migrate.cells": "migrate.core.cells", "migrate.settings": "migrate.mapping.settings",
                "migrate.scoring": "migrate.mapping.scoring", "migrate.flags": "migrate.mapping.flags",
                "migrate.labels": "migrate.mapping.labels", "migrate.lexical": "migrate.mapping.lexical",
                "migrate.classifier": "migrate.mapping.classifier",
                "migrate.calibration": "migrate.mapping.calibration",
                "migrate.zeroshot": "migrate.mapping.zeroshot",
                "migrate.fitted_target": "migrate.mapping.fitted_target",
                "migrate.pipeline": "migrate.mapping.pipeline", "migrate.ray_engine": "migrate.mapping.ray_engine",
                "migrate.result": "migrate.mapping.result", "migrate.output": "migrate.mapping.output",
                "migrate.workbook": "migrate.mapping.workbook",
                "migrate.category_decisions": "migrate.mapping.category_decisions"}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        return super().find_class(FLAT_MODULES.get(module, module), name)


class FittedTargetStore:
    """One fitted target side in a file: ``get`` it back under its key, ``put`` a new one (atomic)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def get(self, key: str) -> FittedTarget | None:
        if not self.path.exists():
            return None
        try:
            with self.path.open("rb") as fh:
                stored = _Unpickler(fh).load()
        except Exception as exc:  # a torn or foreign file: fit again
            log.warning("ignoring %s (%s): the target side is fitted again", self.path, exc.__class__.__name__)
            return None
        if not isinstance(stored, dict) or stored.get("key") != key:
            log.info("the target catalog, model or settings changed: the target side is fitted again")
            return None
        log.info("target side read from %s (target catalog, model and settings unchanged)", self.path.name)
        fitted = stored["fitted"]
        if isinstance(fitted.loo, dict):  # written before LeaveOneOut
            from migrate.mapping.calibration import LeaveOneOut

            fitted.loo = LeaveOneOut(**fitted.loo)
        return fitted

    def put(self, key: str, fitted: FittedTarget) -> None:
        with atomic_path(self.path) as tmp:
            with open(tmp, "wb") as fh:
                pickle.dump({"key": key, "fitted": fitted}, fh, protocol=pickle.HIGHEST_PROTOCOL)
