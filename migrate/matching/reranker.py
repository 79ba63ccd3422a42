"""A cross-encoder re-ranker for match candidates: ``taxmig train-match --cross-encoder`` trains
one, ``taxmig match --reranker DIR`` reads each candidate pair through it.

A bi-encoder embeds each product alone; a cross-encoder reads the two products together, so it
can see that "NP-FH100" on one side is "npfh100" on the other, or that two titles differ only in
a model number. This is what Ditto does (a fine-tuned cross-encoder over serialised records); we
follow its input format: every known attribute as ``[COL] name [VAL] value``, codes kept whole.

The re-ranker's probability joins the pair features as ``cross_encoder`` (:data:`FEATURE`): with
``--labels``, the matcher fits its weights with the others; without, the re-ranker's probability
is the score and its threshold the one ``train-match`` chose on its validation pairs
(``reranker.json``).

>>> from migrate.matching.reranker import serialise_parts
>>> serialise_parts("Sony NP-FH100 battery", "Sony", ("NP-FH100",), "Sony NP-FH100 battery | 7.2 V pack")
'[COL] title [VAL] Sony NP-FH100 battery [COL] brand [VAL] Sony [COL] code [VAL] NP-FH100 [COL] text [VAL] 7.2 V pack'
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from migrate.core.catalog import TEXT_SEPARATOR
from migrate.errors import ModelError
from migrate.matching.inputs import MatchCatalog

log = logging.getLogger(__name__)

FEATURE = "cross_encoder"
RECORD = "reranker.json"
"""What ``train-match --cross-encoder`` wrote beside the model: base model, serialisation,
threshold chosen on the validation pairs, metrics."""
SERIALISATION = "ditto-v1"  # [COL] name [VAL] value; a re-ranker trained on another format is refused
MAX_LENGTH = 64
"""Tokens per pair: both records' title, brand and code fit, descriptions are cut. 128 made each
training step 1.8x slower on 2 CPU cores (189 vs 108 s for 63 steps of 16 Abt-Buy pairs) and did
not learn faster in them (validation average precision 0.25 at learning rate 1e-4 vs 0.29 at
2e-4 with 64; 2026-12-03). The bench's cross-encoder rows in BENCHMARKS.md use 64."""
LEARNING_RATE = 1.5e-4
"""``train-match --cross-encoder``'s default: the fresh one-logit head learns slowly at the
bi-encoder's 3e-5 (validation average precision 0.21 after 89 steps at 5e-5 on Abt-Buy); the
bench's cross-encoder rows use this value."""
DEFAULT_BATCH = 32


def serialise_parts(title: str, brand: str, codes: Sequence[str], text: str) -> str:
    """One record as the re-ranker reads it: title, brand, codes, then the rest of the text
    (``text`` without its leading title), each as ``[COL] name [VAL] value``; empty ones left out."""
    rest = text[len(title):].lstrip(" " + TEXT_SEPARATOR.strip()) if text.startswith(title) else text
    parts = [("title", title), ("brand", brand), ("code", " ".join(c for c in codes if c)), ("text", rest)]
    return " ".join(f"[COL] {name} [VAL] {value.strip()}" for name, value in parts if value and value.strip())


def serialise(catalog: MatchCatalog) -> list[str]:
    """Every product of ``catalog`` serialised (:func:`serialise_parts`), in catalog order."""
    return [serialise_parts(t, b, c, x) for t, b, c, x in zip(catalog.titles, catalog.brands, catalog.codes,
                                                               catalog.texts)]


@dataclass
class Reranker:
    """A trained cross-encoder and what ``train-match`` recorded about it."""

    model: Any  # sentence_transformers.CrossEncoder
    path: Path
    threshold: float
    record: dict[str, Any]
    batch_size: int = DEFAULT_BATCH

    @classmethod
    def load(cls, path: str | Path, *, device: str | None = None, batch_size: int = DEFAULT_BATCH) -> "Reranker":
        """Load a folder written by ``taxmig train-match --cross-encoder``; anything else is a
        :class:`ModelError` naming what is missing."""
        path = Path(path)
        record_file = path / RECORD
        if not record_file.is_file():
            raise ModelError(f"{path}: not a taxmig re-ranker (no {RECORD})",
                             hint="train one with taxmig train-match --cross-encoder -o DIR")
        record = json.loads(record_file.read_text())
        if record.get("serialisation") != SERIALISATION:
            raise ModelError(f"{path}: the re-ranker reads records as {record.get('serialisation')!r}, "
                             f"this taxmig as {SERIALISATION!r}", hint="train it again with this version")
        from sentence_transformers import CrossEncoder

        try:
            model = CrossEncoder(str(path), device=device, local_files_only=True, max_length=record.get("max_length"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load the re-ranker {path}: {str(exc).splitlines()[0][:200]}",
                             hint="check that the folder is complete") from None
        return cls(model, path, float(record["threshold"]), record, batch_size)

    def score(self, left: Sequence[str], right: Sequence[str], *, progress: bool = False) -> np.ndarray:
        """Probability (0-1) that ``left[n]`` and ``right[n]`` are the same product."""
        if not len(left):
            return np.zeros(0, dtype=np.float32)
        scores = self.model.predict(list(zip(left, right)), batch_size=self.batch_size, show_progress_bar=progress,
                                    convert_to_numpy=True)
        return np.asarray(scores, dtype=np.float32).reshape(-1)

    def describe(self) -> str:
        """One line for the Summary."""
        valid = self.record.get("valid", {})
        return (f"{self.path.name} (cross-encoder from {self.record.get('base_model')}, threshold "
                f"{self.threshold:.3f} chosen on {valid.get('pairs', '?')} validation pairs)")

