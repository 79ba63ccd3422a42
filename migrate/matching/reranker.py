"""A cross-encoder re-ranker for match candidates: ``taxmig train-match --cross-encoder`` trains
one, ``taxmig match --reranker DIR`` reads each candidate pair through it.

A bi-encoder embeds each product alone; a cross-encoder reads the two products together, so it
can see that "NP-FH100" on one side is "npfh100" on the other, or that two titles differ only in
a model number. This is what Ditto does (a fine-tuned cross-encoder over serialised records); we
follow its input format: every known attribute as ``[COL] name [VAL] value``, codes kept whole.

The re-ranker's probability joins the pair features as ``cross_encoder`` (:data:`FEATURE`), with its
gaps to each product's best (:data:`~migrate.matching.features.RERANKER_FEATURES`): with
``--labels``, the matcher fits their weights with the others; without, the score is the joined one
``train-match`` fitted (:func:`migrate.matching.scoring.fit_join`: the hybrid fitted on the training
pairs, joined to the re-ranker on the validation pairs; both sets' features are kept in
:data:`JOIN_FILE`), with its threshold. When ``match`` embeds with another encoder than the join was
fitted with, or matches in another mode (two catalogs, duplicates within one) than it was trained
in, the re-ranker's probability alone is the score, at the threshold of best F1 on the validation
pairs (``reranker.json``).

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
from migrate.matching.features import FEATURES, RERANKER_FEATURES
from migrate.matching.inputs import MatchCatalog

log = logging.getLogger(__name__)

FEATURE = RERANKER_FEATURES[0]
RECORD = "reranker.json"
"""What ``train-match --cross-encoder`` wrote beside the model: base model, serialisation,
threshold chosen on the validation pairs, metrics, the joined score's record."""
JOIN_FILE = "joined_score.npz"
"""The pair features and labels the joined score is fitted on: the training pairs' (the hybrid half)
and the validation pairs' (the join). Numbers only: refitted on loading, nothing unpickled."""
SERIALISATION = "ditto-v1"  # [COL] name [VAL] value; a re-ranker trained on another format is refused
MAX_LENGTH = 64
"""Tokens per pair (``train-match --cross-encoder``'s default): both records' title, brand and code
fit, descriptions are cut (twice as many tokens trained much slower on a CPU, and no better).
Measured with it: BENCHMARKS.md, "match: Abt-Buy and Amazon-Google (DeepMatcher splits)", the re-ranker rows."""
LEARNING_RATE = 5e-5
"""``train-match --cross-encoder``'s default learning rate: the re-ranker learns from the first steps
(at three times this rate the training loss stayed flat until the linear decay brought it down).
Measured with it: BENCHMARKS.md, "match: Abt-Buy and Amazon-Google (DeepMatcher splits)", the re-ranker rows."""
EPOCHS = 6.0
"""``train-match --cross-encoder``'s default epochs (the bi-encoder's is 2): at this many the best
checkpoint was still the last one evaluated on both benchmarks, and fewer epochs scored lower.
Measured with it: BENCHMARKS.md, "match: Abt-Buy and Amazon-Google (DeepMatcher splits)", the re-ranker rows."""
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

    @property
    def within(self) -> bool:
        """Whether it was trained on duplicates within one catalog (``train-match --within``)."""
        return self.record.get("right_file") is None

    def trained_on(self, path: str | Path | None) -> bool:
        """Whether the labelled pairs file at ``path`` is one the re-ranker was trained on (by content)."""
        if path is None or not Path(path).is_file():
            return False
        from migrate.core.hashing import file_fingerprint

        return file_fingerprint(path) in str(self.record.get("data_fingerprint", "")).split(", ")

    def join_problem(self, encoder_fingerprint: str, within: bool = False) -> str | None:
        """Why the joined score cannot be used with the encoder of this fingerprint, matching two
        catalogs (or, ``within``, one catalog's duplicates); ``None`` when it can. A join fitted on
        two catalogs' pairs misreads a catalog against itself, where every product's best candidate
        is another product."""
        join = self.record.get("join")
        if not join:
            return "train-match fitted no joined score (too few matches or non-matches)"
        from migrate.matching.scoring import JOIN_COLUMNS

        if (join.get("features") != list(FEATURES) or join.get("columns") != list(JOIN_COLUMNS)
                or not (self.path / JOIN_FILE).is_file()):
            return "its joined score was fitted by another version of taxmig: train it again to use one"
        if join.get("encoder_fingerprint") != encoder_fingerprint:
            return f"its joined score was fitted with the encoder {join.get('encoder')}, not this one"
        if self.within != within:
            fitted = "duplicates within one catalog" if self.within else "two catalogs"
            return f"its joined score was fitted on {fitted}, not what this run matches"
        return None

    def mode_problem(self, within: bool) -> str | None:
        """A warning when the re-ranker learned from pairs of another kind than this run matches (None
        when it did not): one trained across two catalogs, read on one catalog's duplicates, takes
        colour and model variants for duplicates (more clusters than without a re-ranker on a
        catalog with none)."""
        if self.within == within:
            return None
        if within:
            return ("it learned from pairs across two catalogs: within one catalog it may take variants (colours, "
                    "sizes, models of one series) for duplicates. Train one on duplicates with train-match --within")
        return ("it learned from duplicates within one catalog, not from pairs across two: check its matches, or "
                "train one on pairs of these catalogs")

    def joined(self, encoder_fingerprint: str, within: bool = False) -> tuple[Any, float] | None:
        """The joined scorer (:class:`~migrate.matching.scoring.PairScorer`) and its threshold, when
        ``train-match`` fitted one with the encoder of this fingerprint in this mode; else ``None``."""
        if self.join_problem(encoder_fingerprint, within) is not None:
            return None
        join = self.record["join"]
        if not hasattr(self, "_joined"):
            from migrate.matching.scoring import joined_scorer

            with np.load(self.path / JOIN_FILE, allow_pickle=False) as saved:
                self._joined = joined_scorer(saved["train_features"], saved["train_labels"],
                                             saved["valid_features"], saved["valid_labels"], seed=join.get("seed", 0))
        return self._joined, float(join["threshold"])

    def describe(self, encoder_fingerprint: str | None = None, within: bool = False,
                 through_estimate: bool = False) -> str:
        """One line for the Summary: how its score is used with the encoder of ``encoder_fingerprint``
        (``within``: on one catalog's duplicates; ``through_estimate``: as a comparison of the
        no-labels estimate, :mod:`migrate.matching.unsupervised`)."""
        valid = self.record.get("valid", {})
        line = (f"{self.path.name} (cross-encoder from {self.record.get('base_model')}, threshold "
                f"{self.threshold:.3f} chosen on {valid.get('pairs', '?')} validation pairs)")
        if through_estimate:
            return (line + "; trained on other tables than these: its probability joins the no-labels estimate as "
                    "one more comparison, whose worth the estimate learns from this run's pairs (the joined score "
                    "train-match fitted is for the tables it was trained on)")
        problem = None if encoder_fingerprint is None else self.join_problem(encoder_fingerprint, within)
        if problem is not None:
            line += f"; {problem}: without --labels the re-ranker's probability alone is the score"
        return line



def read_record(path: str | Path) -> dict[str, Any]:
    """The ``reranker.json`` of the re-ranker folder at ``path`` ({} when it has none or it is not JSON)."""
    try:
        return json.loads((Path(path) / RECORD).read_text())
    except (OSError, ValueError):
        return {}


def trained_on_tables(record: dict[str, Any], left: str | Path, right: str | Path | None) -> bool:
    """Whether the re-ranker of ``record`` learned from pairs across the tables ``left`` and ``right``:
    their contents, as ``train-match`` fingerprinted them (their paths, for a re-ranker trained before
    taxmig recorded contents). Its joined score was fitted on pairs of those tables; on others the
    re-ranker joins the no-labels estimate instead (BENCHMARKS.md, "match: whole tables, no labels,
    a re-ranker trained on the other benchmark")."""
    from migrate.core.hashing import file_fingerprint

    if right is None or record.get("right_file") is None:
        return False
    if record.get("left_fingerprint"):
        try:
            return (file_fingerprint(left) == record["left_fingerprint"]
                    and file_fingerprint(right) == record.get("right_fingerprint"))
        except OSError:
            return False
    return (Path(left).resolve() == Path(record.get("left_file", "")).resolve()
            and Path(right).resolve() == Path(record.get("right_file", "")).resolve())
