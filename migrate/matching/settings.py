"""Everything a match run needs, validated in one place before any work starts: the settings, and
the input files they name, read and checked before the model is loaded."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from migrate.core.encoder import EncoderSettings
from migrate.errors import TaxmigError
from migrate.matching.inputs import MatchCatalog, MatchInputs, load_labels, load_match_catalog
from migrate.matching.reranker import RECORD as RERANKER_RECORD
from migrate.matching.reranker import read_record, trained_on_tables
from migrate.matching.scoring import SCORERS


@dataclass
class MatchSettings:
    """Inputs and knobs of :func:`migrate.matching.matcher.run_match`; :meth:`validate` reports every
    problem at once."""

    left: str | Path
    right: str | Path | None = None
    within: bool = False
    labels: str | Path | None = None
    left_id: str | None = None
    left_text: str | None = None
    left_brand: str | None = None
    left_code: str | None = None
    right_id: str | None = None
    right_text: str | None = None
    right_brand: str | None = None
    right_code: str | None = None
    encoder: EncoderSettings = field(default_factory=EncoderSettings)
    encoding: str = "utf-8"
    candidates: int = 10
    threshold: float | None = None
    min_precision: float | None = None
    scorer: str = "logistic"
    review_margin: float = 0.1
    max_cluster_size: int = 10
    reranker: str | Path | None = None
    """A folder from ``taxmig train-match --cross-encoder``: its probability joins the features (with
    labels, or without on the tables it was trained on), or the no-labels estimate (without labels, on
    other tables: :attr:`reranker_through_estimate`)."""
    one_to_one: bool | None = None
    """A pair is a match only when each product is the other's best candidate (and the score reaches
    the threshold). None: one to one for two catalogs without labelled pairs or a re-ranker trained on
    them, whose scores are uncalibrated (:data:`~migrate.matching.scoring.NO_LABEL_FLOOR`); False: the best
    candidate of each left product (several left products may match one right product)."""
    cut_by_estimate: bool = False
    """Without labelled pairs (one to one): a mutual best pair is a match only when its estimated match
    probability reaches the expected-F1 cut or its score reaches
    :data:`~migrate.matching.scoring.DEFAULT_THRESHOLD` (:mod:`migrate.matching.unsupervised`). Off by
    default: it beat the plain mutual best at low overlap but not at every removal level, BENCHMARKS.md,
    "match: whole tables, no labels (issue 38)" (with a re-ranker trained on other tables too: "match:
    whole tables, no labels, a re-ranker trained on the other benchmark")."""
    progress: bool = True
    seed: int = 0

    def validate(self) -> "MatchSettings":
        problems: list[str] = self.encoder.problems()
        for label, value in (("", self.left), ("", self.right), ("labels ", self.labels)):
            if value is not None and not Path(value).is_file():
                problems.append(f"{label}{value}: file not found")
        if self.within and self.right is not None:
            problems.append("--within matches one catalog: give LEFT only")
        if not self.within and self.right is None:
            problems.append("no RIGHT catalog: give LEFT RIGHT, or --within to find duplicates in LEFT")
        if not 1 <= self.candidates <= 200:
            problems.append("--candidates must be between 1 and 200")
        if self.threshold is not None and not 0 <= self.threshold <= 1:
            problems.append("--threshold must be between 0 and 1")
        if self.min_precision is not None and not 0 < self.min_precision <= 1:
            problems.append("--min-precision must be in (0, 1]")
        if self.min_precision is not None and self.labels is None:
            problems.append("--min-precision needs --labels (labelled pairs to measure precision on)")
        if self.scorer not in SCORERS:
            problems.append(f"--scorer must be one of {', '.join(SCORERS)}")
        if not 0 <= self.review_margin < 1:
            problems.append("--review-margin must be in [0, 1)")
        if self.within and self.one_to_one:
            problems.append("--one-to-one pairs two catalogs: not with --within")
        if self.max_cluster_size < 2:
            problems.append("--max-cluster-size must be at least 2")
        if self.reranker is not None and not (Path(self.reranker) / RERANKER_RECORD).is_file():
            problems.append(f"--reranker {self.reranker}: not a re-ranker folder (no {RERANKER_RECORD}; "
                            f"taxmig train-match --cross-encoder writes one)")
        if self.cut_by_estimate and not self.estimates_overlap:
            problems.append("--cut-by-estimate cuts by the no-labels estimate: two catalogs, one to one, without "
                            "--labels (and without a --reranker trained on these tables)")
        if self.cut_by_estimate and self.threshold is not None:
            problems.append("--cut-by-estimate chooses the cut itself: not with --threshold")
        if problems:
            raise TaxmigError("; ".join(problems), hint="see taxmig match --help")
        return self

    @property
    def pairs_one_to_one(self) -> bool:
        """Whether matches pair one to one (:attr:`one_to_one`, or its default)."""
        if self.one_to_one is not None:
            return self.one_to_one
        return not self.within and self.labels is None and (self.reranker is None or self.reranker_through_estimate)

    @cached_property
    def reranker_through_estimate(self) -> bool:
        """Whether the re-ranker joins the no-labels estimate (:mod:`migrate.matching.unsupervised`) as
        one more comparison rather than through the joined score ``train-match`` fitted: two catalogs,
        no labelled pairs, not ``--many-to-one``, and a re-ranker trained on other tables than these
        (:func:`~migrate.matching.reranker.trained_on_tables`): the pairing is then the one without a
        re-ranker, and the estimate (its overlap, probabilities and ``--cut-by-estimate``) reads the
        re-ranker on each left product's best pair. Why: BENCHMARKS.md, "match: whole tables, no labels,
        a re-ranker trained on the other benchmark". Read once per settings object (it fingerprints both
        tables)."""
        if self.reranker is None or self.within or self.labels is not None or self.right is None:
            return False
        if self.one_to_one is False:  # --many-to-one asks for scores: the joined score, or the re-ranker's own
            return False
        return not trained_on_tables(read_record(self.reranker), self.left, self.right)

    @property
    def estimates_overlap(self) -> bool:
        """Whether the run estimates the overlap without labels (two catalogs, one to one, no labels,
        no re-ranker or one trained on other tables)."""
        return (not self.within and self.labels is None and self.pairs_one_to_one
                and (self.reranker is None or self.reranker_through_estimate))


def read_match_inputs(settings: MatchSettings) -> MatchInputs:
    """Read and check every input file; bad input fails here, before the model is loaded."""
    settings.validate()
    left = load_match_catalog(settings.left, role="left", id=settings.left_id, text=settings.left_text,
                              brand=settings.left_brand, code=settings.left_code, encoding=settings.encoding)
    _need_rows(left)
    if settings.within:
        right = left
    else:
        right = load_match_catalog(settings.right, role="right", id=settings.right_id, text=settings.right_text,
                                   brand=settings.right_brand, code=settings.right_code, encoding=settings.encoding)
        _need_rows(right)
    labels = None
    if settings.labels is not None:
        labels = load_labels(settings.labels, left, right, encoding=settings.encoding, within=settings.within)
    return MatchInputs(left, right, labels, settings.within)


def _need_rows(cat: MatchCatalog) -> None:
    if len(cat) == 0:
        examples = "; ".join(f"row {r.row}: {r.reason}" for r in cat.catalog.rejects[:3])
        raise TaxmigError(f"{cat.path}: none of its {cat.catalog.n_records} rows can be matched ({examples})",
                          hint="fix those rows, or name the right columns with --left-id/--left-text "
                               "(--right-id/--right-text)")
