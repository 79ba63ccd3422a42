"""The fitted target side of a migration onto a labelled catalog, kept between nightly runs.

Onto a labelled target catalog, most of a night's work does not depend on the source at all: the
classifier and its out-of-fold votes, and the leave-one-out over the target that fits the
confidence calibrator and chooses ``min_confidence``. While the target catalog, the model and the
scoring settings are unchanged, that work gives the same answer every night, so the nightly state
keeps it under a key that hashes everything it depends on; any change to one of them misses the
key and the side is fitted again.

What is kept is numbers and text only, never code: state folders live on shared drives and in
backups, and a file in one must not be able to run anything when a night reads it (issue 36).

- ``target_side.json``: the key, the format, the scalar parameters (classifier temperature,
  calibrator constant, leave-one-out figures and thresholds), the TF-IDF vocabularies (as lists
  of strings in column order) and settings, and an id shared with the arrays of the same write;
- ``target_side.npz``: the arrays (target product and label vectors, the classifier's
  coefficients, intercepts and classes, the idf weights, the calibrator's coefficients, the
  lexical index's transposed TF-IDF matrix), written and read with ``allow_pickle=False``.

Both are written atomically, arrays first; a reader checks that the two come from one write, that
the key, format and every field are there, and each array's dtype and shape (against each other
and against the target the night read: products, labels, categories). Anything off -- a missing,
torn, foreign or tampered file, a field of the wrong type -- and the side is fitted again, with
one log line saying why; never an error. ``target_side.pkl``, the pickle that older versions
kept, is never read (unpickling can run code): it is ignored with a log line, and removed when
the new files are written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from migrate.core.files import atomic_path

log = logging.getLogger(__name__)

FORMAT = 3
"""Bumped when what is stored changes: an older file misses every key. 3: JSON + npz, no pickle
(2 was a pickle of the objects, 1 a pickle holding scikit-learn objects)."""
RECORD_SUFFIX = ".json"
ARRAYS_SUFFIX = ".npz"
LEGACY_SUFFIX = ".pkl"
"""The pickle versions before 3 kept (``target_side.pkl``): never read."""

@dataclass
class FittedTarget:
    """What the target side fitted: the classifier (:class:`~migrate.mapping.classifier.CategoryClassifier`
    or None), the calibrator, the leave-one-out report (or None); and what it read: the target
    products' and label texts' vectors and the lexical index (or None), so a night with something
    to score neither reads the target's vectors from the embedding cache nor fits TF-IDF again."""

    classifier: Any
    calibrator: Any
    loo: Any  # migrate.mapping.calibration.LeaveOneOut or None
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
    """The settings a fitted target side depends on, as plain data for the key (the classifier's
    folds and character n-grams too: a side fitted another way is fitted again)."""
    from migrate.mapping.classifier import CHAR_NGRAMS, FOLDS

    return {"scoring": asdict(settings.scoring), "thresholds": settings.thresholds.as_dict(), "seed": settings.seed,
            "calibration_limit": settings.calibration_limit, "by_level": by_level, "classifier_folds": FOLDS,
            "classifier_char_ngrams": list(CHAR_NGRAMS)}


class Unusable(ValueError):
    """A kept target side that cannot be used as it is (the message says why)."""


class _Stale(Unusable):
    """Kept under another key: the target catalog, model or settings changed."""


# --- writing -----------------------------------------------------------------------------------

def _tfidf_record(tfidf, arrays: dict[str, np.ndarray], name: str) -> dict[str, Any] | None:
    if tfidf is None:
        return None
    vocabulary = [""] * len(tfidf.vocabulary)
    for feature, column in tfidf.vocabulary.items():
        vocabulary[column] = feature
    arrays[f"{name}.idf"] = np.asarray(tfidf.idf)
    return {"vocabulary": vocabulary, "analyzer": tfidf.analyzer, "token_pattern": tfidf.token_pattern,
            "ngram_range": [int(n) for n in tfidf.ngram_range], "sublinear_tf": bool(tfidf.sublinear_tf)}


def _number(value: float | None) -> float | None:
    """A float for JSON: NaN as null (JSON has no NaN)."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _as_data(fitted: FittedTarget) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``fitted`` as (JSON record, arrays)."""
    arrays: dict[str, np.ndarray] = {"target_vectors": np.asarray(fitted.target_vectors),
                                     "label_vectors": np.asarray(fitted.label_vectors)}
    record: dict[str, Any] = {"classifier": None, "lexical": None, "loo": None}
    clf = fitted.classifier
    if clf is not None:
        model = clf.model
        arrays.update({"classifier.coef": np.asarray(model.coef), "classifier.intercept": np.asarray(model.intercept),
                       "classifier.classes": np.asarray(model.classes)})
        record["classifier"] = {"temperature": float(clf.temperature),
                                "words": _tfidf_record(clf.features.words, arrays, "classifier.words"),
                                "chars": _tfidf_record(clf.features.chars, arrays, "classifier.chars")}
    cal = fitted.calibrator
    record["calibrator"] = {"constant": None if cal.constant is None else float(cal.constant),
                            "logistic": cal.coef is not None}
    if cal.coef is not None:
        arrays.update({"calibrator.coef": np.asarray(cal.coef), "calibrator.intercept": np.asarray(cal.intercept)})
    lexical = fitted.lexical
    if lexical is not None:
        record["lexical"] = {"size": int(lexical.size),
                             "words": _tfidf_record(lexical.vectorizer, arrays, "lexical.words")}
        if lexical.matrix_t is not None:
            matrix = lexical.matrix_t
            arrays.update({"lexical.data": matrix.data, "lexical.indices": matrix.indices,
                           "lexical.indptr": matrix.indptr})
    loo = fitted.loo
    if loo is not None:
        record["loo"] = {"products": int(loo.products), "top1_accuracy": _number(loo.top1_accuracy),
                         "unflagged_share": _number(loo.unflagged_share),
                         "unflagged_accuracy": _number(loo.unflagged_accuracy),
                         "thresholds": loo.thresholds.as_dict(),
                         "min_confidence_source": str(loo.min_confidence_source)}
    return record, arrays


# --- reading: every field checked --------------------------------------------------------------

FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
INDICES = (np.dtype(np.int32), np.dtype(np.int64))


def _array(arrays, name: str, dtypes: tuple[np.dtype, ...], shape: tuple[int | None, ...]) -> np.ndarray:
    """The array ``name``: one of ``dtypes``, of ``shape`` (None: any length), finite if float."""
    if name not in arrays.files:
        raise Unusable(f"no {name}")
    array = arrays[name]  # allow_pickle=False: an object array raises ValueError here
    if array.dtype not in dtypes:
        raise Unusable(f"{name} is {array.dtype}, not {' or '.join(str(d) for d in dtypes)}")
    if array.ndim != len(shape) or any(want is not None and got != want for got, want in zip(array.shape, shape)):
        raise Unusable(f"{name} has shape {array.shape}, not {tuple('?' if s is None else s for s in shape)}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise Unusable(f"{name} holds a value that is not finite")
    return array


def _field(record: dict, name: str, kinds: type | tuple[type, ...], *, optional: bool = False) -> Any:
    if not isinstance(record, dict) or name not in record:
        raise Unusable(f"no field {name}")
    value = record[name]
    if value is None and optional:
        return None
    if isinstance(value, bool) and bool not in (kinds if isinstance(kinds, tuple) else (kinds,)):
        raise Unusable(f"field {name} is {value!r}")  # bool is an int to isinstance
    if not isinstance(value, kinds):
        raise Unusable(f"field {name} is {type(value).__name__}")
    return value


def _real(record: dict, name: str, *, optional: bool = False) -> int | float | None:
    """A finite number as JSON gave it (an int stays an int, as it was written)."""
    value = _field(record, name, (int, float), optional=optional)
    if value is not None and not math.isfinite(value):
        raise Unusable(f"field {name} is {value}")
    return value


def _ratio(record: dict, name: str) -> float:
    """A float written by :func:`_number` (null: NaN)."""
    value = _real(record, name, optional=True)
    return float("nan") if value is None else value


def _tfidf(record: dict | None, arrays, name: str):
    from migrate.mapping.lexical import WORDS
    from migrate.mapping.sparse_text import WORDS_OF_TWO, FittedTfidf

    vocabulary = _field(record, "vocabulary", list)
    if set(map(type, vocabulary)) - {str}:
        raise Unusable(f"{name}'s vocabulary holds something other than text")
    columns = {feature: column for column, feature in enumerate(vocabulary)}
    if len(columns) != len(vocabulary) or not vocabulary:
        raise Unusable(f"{name}'s vocabulary is empty or repeats a feature")
    analyzer = _field(record, "analyzer", str)
    pattern = _field(record, "token_pattern", str)
    ngrams = _field(record, "ngram_range", list)
    if analyzer not in ("word", "char_wb") or pattern not in (WORDS, WORDS_OF_TWO):
        raise Unusable(f"{name} analyses as {analyzer!r} with {pattern!r}, which taxmig never fits")
    if (len(ngrams) != 2 or not all(isinstance(n, int) and not isinstance(n, bool) for n in ngrams)
            or not 1 <= ngrams[0] <= ngrams[1] <= 8):
        raise Unusable(f"{name}'s ngram_range is {ngrams!r}")
    idf = _array(arrays, f"{name}.idf", FLOATS, (len(vocabulary),))
    return FittedTfidf(columns, idf, analyzer, pattern, (ngrams[0], ngrams[1]),
                       _field(record, "sublinear_tf", bool))


def _classifier(record: dict | None, arrays, categories: int | None):
    if record is None:
        return None
    from migrate.mapping.classifier import CategoryClassifier, LinearDecision, TextFeatures

    temperature = _real(record, "temperature")
    if not temperature > 0:
        raise Unusable(f"classifier temperature {temperature}")
    features = TextFeatures()
    words = _field(record, "words", dict, optional=True)
    features.words = None if words is None else _tfidf(words, arrays, "classifier.words")
    features.chars = _tfidf(_field(record, "chars", dict), arrays, "classifier.chars")
    width = len(features.chars.vocabulary) + (len(features.words.vocabulary) if features.words is not None else 0)
    classes = _array(arrays, "classifier.classes", INDICES, (None,))
    rows = 1 if len(classes) == 2 else len(classes)
    if len(classes) < 2 or len(np.unique(classes)) != len(classes) or classes.min() < 0 or (
            categories is not None and classes.max() >= categories):
        raise Unusable("classifier classes are not distinct categories of this target")
    coef = _array(arrays, "classifier.coef", FLOATS, (rows, width))
    intercept = _array(arrays, "classifier.intercept", FLOATS, (rows,))
    classifier = CategoryClassifier(temperature, features)
    classifier.model = LinearDecision(coef, intercept, classes)
    return classifier


def _calibrator(record: dict, arrays):
    from migrate.mapping.calibration import ConfidenceCalibrator

    calibrator = ConfidenceCalibrator()
    calibrator.constant = _real(record, "constant", optional=True)
    if _field(record, "logistic", bool):
        coef = _array(arrays, "calibrator.coef", FLOATS, (1, None))
        if not 4 <= coef.shape[1] <= 6:  # migrate.mapping.scoring.CategoryScores.features
            raise Unusable(f"calibrator.coef has {coef.shape[1]} features")
        calibrator.coef, calibrator.intercept = coef, _array(arrays, "calibrator.intercept", FLOATS, (1,))
    return calibrator


def _loo(record: dict | None):
    if record is None:
        return None
    from migrate.mapping.calibration import LeaveOneOut
    from migrate.mapping.flags import Thresholds

    stored = _field(record, "thresholds", dict)
    defaults = Thresholds().as_dict()
    if set(stored) != set(defaults):
        raise Unusable("the leave-one-out thresholds are not this version's")
    values = {name: _real(stored, name, optional=name == "min_confidence") for name in defaults}
    _field(stored, "split_min_products", int)
    products = _field(record, "products", int)
    if products < 0:
        raise Unusable(f"leave-one-out over {products} products")
    return LeaveOneOut(products=products, top1_accuracy=_ratio(record, "top1_accuracy"),
                       unflagged_share=_ratio(record, "unflagged_share"),
                       unflagged_accuracy=_ratio(record, "unflagged_accuracy"), thresholds=Thresholds(**values),
                       min_confidence_source=_field(record, "min_confidence_source", str))


def _lexical(record: dict | None, arrays, products: int):
    if record is None:
        return None
    from scipy.sparse import csr_matrix

    from migrate.mapping.lexical import LexicalIndex

    size = _field(record, "size", int)
    words = _field(record, "words", dict, optional=True)
    if words is None:  # no target text has a word
        if size != 0:
            raise Unusable("the lexical index has products but no words")
        return LexicalIndex.from_parts(None, None)
    if size != products:
        raise Unusable(f"the lexical index holds {size} products, not {products}")
    vectorizer = _tfidf(words, arrays, "lexical.words")
    features = len(vectorizer.vocabulary)
    indptr = _array(arrays, "lexical.indptr", INDICES, (features + 1,))
    indices = _array(arrays, "lexical.indices", INDICES, (None,))
    data = _array(arrays, "lexical.data", FLOATS, (len(indices),))
    if indptr[0] != 0 or indptr[-1] != len(indices) or (np.diff(indptr) < 0).any() or (
            len(indices) and (indices.min() < 0 or indices.max() >= products)):
        raise Unusable("the lexical index's matrix is not a valid sparse matrix")
    matrix = csr_matrix((data, indices, indptr), shape=(features, products), copy=False)
    matrix.check_format(full_check=True)
    return LexicalIndex.from_parts(vectorizer, matrix)


def _from_data(record: dict, arrays, *, products: int | None, labels: int | None,
               categories: int | None) -> FittedTarget:
    target_vectors = _array(arrays, "target_vectors", (np.dtype(np.float32),), (products, None))
    label_vectors = _array(arrays, "label_vectors", (np.dtype(np.float32),), (labels, target_vectors.shape[1]))
    return FittedTarget(classifier=_classifier(_field(record, "classifier", dict, optional=True), arrays, categories),
                        calibrator=_calibrator(_field(record, "calibrator", dict), arrays),
                        loo=_loo(_field(record, "loo", dict, optional=True)),
                        target_vectors=target_vectors, label_vectors=label_vectors,
                        lexical=_lexical(_field(record, "lexical", dict, optional=True), arrays, len(target_vectors)))


class FittedTargetStore:
    """One fitted target side in a state folder: ``get`` it back under its key, ``put`` a new one.

    ``path`` names the JSON record (``target_side.json``); the arrays are beside it with the
    suffix ``.npz``, and the pickle of older versions with ``.pkl`` (never read)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.arrays_path = self.path.with_suffix(ARRAYS_SUFFIX)
        self.legacy_path = self.path.with_suffix(LEGACY_SUFFIX)

    def get(self, key: str, *, products: int | None = None, labels: int | None = None,
            categories: int | None = None) -> FittedTarget | None:
        """The side kept under ``key``, checked against the target the night read (``products``
        target products, ``labels`` label texts, ``categories`` categories; None: not checked);
        None -- with one log line saying why -- when it must be fitted again."""
        legacy = self.legacy_path.exists()
        if legacy:
            log.warning("ignoring %s: an older format taxmig never reads (a pickle can run code); it is "
                        "removed when the target side is next written", self.legacy_path)
        if not self.path.exists() and not self.arrays_path.exists():
            log.info("the target side is fitted: %s", "only the older format was kept" if legacy
                     else f"none kept in {self.path.parent} yet")
            return None
        try:
            fitted = self._read(key, products=products, labels=labels, categories=categories)
        except _Stale:
            log.info("the target catalog, model or settings changed: the target side is fitted again")
            return None
        except Exception as exc:  # a missing half, a torn, foreign or tampered file: never an error, fit again
            reason = str(exc) if isinstance(exc, Unusable) else f"{exc.__class__.__name__}: {str(exc)[:200]}"
            log.warning("ignoring the kept target side in %s (%s): the target side is fitted again",
                        self.path.parent, reason)
            return None
        log.info("target side read from %s (target catalog, model and settings unchanged)", self.path.name)
        return fitted

    def _read(self, key: str, **expected) -> FittedTarget:
        for path in (self.path, self.arrays_path):
            if not path.is_file():
                raise Unusable(f"{path.name} is missing")
        record = json.loads(self.path.read_text(encoding="utf-8"))
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            raise Unusable(f"{self.path.name} is not of format {FORMAT}")
        if record.get("key") != key:
            raise _Stale()
        written = _field(record, "written", str)
        with np.load(self.arrays_path, allow_pickle=False) as arrays:
            stamp = arrays["written"] if "written" in arrays.files else None
            if stamp is None or stamp.dtype.kind != "U" or stamp.ndim != 0 or str(stamp) != written:
                raise Unusable(f"{self.arrays_path.name} and {self.path.name} come from different writes")
            return _from_data(record, arrays, **expected)

    def put(self, key: str, fitted: FittedTarget) -> None:
        """Write ``fitted`` under ``key``: the arrays, then the record (each atomically; a reader
        that finds one without the other fits again), then drop an older format's pickle."""
        record, arrays = _as_data(fitted)
        written = uuid.uuid4().hex
        arrays["written"] = np.array(written)
        with atomic_path(self.arrays_path) as tmp:
            with open(tmp, "wb") as fh:  # a file object: np.savez would add .npz to a name
                np.savez(fh, allow_pickle=False, **arrays)
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps({"format": FORMAT, "key": key, "written": written, **record}, allow_nan=False),
                           encoding="utf-8")
        if self.legacy_path.exists():
            self.legacy_path.unlink(missing_ok=True)
            log.info("removed %s (the older format; the target side is now kept in %s and %s)",
                     self.legacy_path.name, self.path.name, self.arrays_path.name)


TARGET_SIDES_MAX_BYTES = 2 << 30
"""The user's cache of fitted target sides keeps at most this many bytes (2 GiB), the least
recently used dropped first; a 22,085-product target side takes about 90 MB (BENCHMARKS.md,
"whole runs: where the seconds go")."""


class UserTargetSides:
    """The fitted target sides of every run of this user (:func:`models.cache.target_sides_dir`):
    a :class:`FittedTargetStore` per key, so a second migration onto the same labelled target
    catalog with the same model and settings reads its vectors, classifier and calibration back
    instead of encoding and fitting them. Same ``get``/``put`` as a state's store; reading touches
    the files (least recently used first out once past ``max_bytes``); runs side by side are safe
    (each file is written atomically, a reader checks that the two halves come from one write);
    a cache that cannot be used never fails a run (a warning, and the side is fitted)."""

    def __init__(self, folder: str | Path | None = None, *, max_bytes: int = TARGET_SIDES_MAX_BYTES) -> None:
        if folder is None:
            from models.cache import target_sides_dir

            folder = target_sides_dir()
        self.folder = Path(folder)
        self.max_bytes = max_bytes

    def _store(self, key: str) -> FittedTargetStore:
        return FittedTargetStore(self.folder / f"{key[:32]}{RECORD_SUFFIX}")

    def get(self, key: str, **expected) -> FittedTarget | None:
        """The side kept under ``key`` (checked as :meth:`FittedTargetStore.get` checks it), or None."""
        store = self._store(key)
        if not store.path.exists():
            log.info("the target side is fitted: none in the user's cache %s for this target, model and settings",
                     self.folder)
            return None
        fitted = store.get(key, **expected)
        if fitted is not None:
            for path in (store.path, store.arrays_path):
                try:
                    os.utime(path)
                except OSError:
                    pass
        return fitted

    def put(self, key: str, fitted: FittedTarget) -> None:
        """Keep ``fitted`` under ``key``, then trim the cache to ``max_bytes``."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._store(key).put(key, fitted)
            self.trim()
        except OSError as exc:
            log.warning("the fitted target side was not kept in the user's cache %s: %s", self.folder, exc)

    def trim(self) -> None:
        """Drop the least recently used sides until the cache holds at most ``max_bytes`` (the one
        just written stays, whatever its size)."""
        sides = []
        for record in self.folder.glob(f"*{RECORD_SUFFIX}"):
            files = [record, record.with_suffix(ARRAYS_SUFFIX)]
            try:
                stats = [f.stat() for f in files if f.exists()]
            except OSError:
                continue
            sides.append((max(st.st_mtime for st in stats), sum(st.st_size for st in stats), files))
        sides.sort(key=lambda side: side[0], reverse=True)
        total = 0
        for i, (_, size, files) in enumerate(sides):
            total += size
            if i and total > self.max_bytes:
                for f in files:
                    f.unlink(missing_ok=True)
                log.info("dropped %s from the user's cache of target sides (past %d MB)", files[0].name,
                         self.max_bytes >> 20)
