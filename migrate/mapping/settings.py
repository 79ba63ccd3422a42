"""Everything a migration run needs, validated in one place before any work starts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from migrate.core.encoder import ENCODER_FIELDS, EncoderSettings
from migrate.errors import TaxmigError
from migrate.mapping.flags import Thresholds
from migrate.mapping.scoring import ScoringParams


@dataclass
class MigrationSettings:
    """Inputs and knobs of :func:`migrate.mapping.pipeline.run_migration`.

    >>> MigrationSettings(source="a.csv").validate()
    Traceback (most recent call last):
    ...
    migrate.errors.TaxmigError: a.csv: file not found; no target given: pass --target-catalog FILE and/or --target-taxonomy FILE (fix: see taxmig migrate --help)
    """

    source: str | Path
    target_catalog: str | Path | None = None
    target_taxonomy: str | Path | None = None
    source_id: str | None = None
    source_text: str | None = None
    source_category: str | None = None
    target_id: str | None = None
    target_text: str | None = None
    target_category: str | None = None
    taxonomy_column: str | None = None
    leaves_only: bool = False
    category_context: bool = True
    encoder: EncoderSettings = field(default_factory=EncoderSettings)
    encoding: str = "utf-8"
    delimiter: str | None = None  # text files' field separator (None: sniffed per file)
    scoring: ScoringParams = field(default_factory=ScoringParams)
    thresholds: Thresholds = field(default_factory=Thresholds)
    calibration_limit: int = 20_000
    ask: int | None = None  # questions a taxonomy-only round asks (None: questions.default_ask)
    category_cache: bool = True  # a taxonomy's category texts read from / kept in the user's cache
    target_cache: bool = True  # a labelled target's fitted side read from / kept in the user's cache
    progress: bool = True
    seed: int = 0

    def validate(self, *, source_folder: bool = False) -> "MigrationSettings":
        """Collect every problem and raise one :class:`TaxmigError` naming them all
        (``source_folder``: the source may be a folder of files, as the Ray engine reads)."""
        problems: list[str] = []
        for label, value in (("source", self.source), ("target catalog", self.target_catalog),
                             ("target taxonomy", self.target_taxonomy)):
            folder_ok = source_folder and label == "source" and Path(value).is_dir()
            if label == "source" and not folder_ok and Path(value).is_dir():
                problems.append(f"{value} is a folder: give a file (--engine ray reads a folder of Parquet files)")
            elif value is not None and not folder_ok and not Path(value).is_file():
                problems.append(f"{value}: file not found" if label == "source" else f"{label} {value}: file not found")
        if self.target_catalog is None and self.target_taxonomy is None:
            problems.append("no target given: pass --target-catalog FILE and/or --target-taxonomy FILE")
        if self.delimiter is not None and len(self.delimiter) != 1:
            problems.append(f"--delimiter must be one character (got {self.delimiter!r}); e.g. ';' or '\\t'")
        if self.scoring.top_n < 1:
            problems.append("--top-n must be at least 1")
        if self.scoring.neighbours < 1:
            problems.append("--neighbours must be at least 1")
        if self.ask is not None and self.ask < 0:
            problems.append("--ask must be at least 0")
        if self.scoring.label_ancestor_weight < 0:
            problems.append("scoring label_ancestor_weight must be at least 0")
        if not self.scoring.zero_shot_label_templates or not all(
                "{}" in t for t in self.scoring.zero_shot_label_templates):
            problems.append("scoring zero_shot_label_templates must each contain {} (where the category name goes)")
        if not 0 <= self.scoring.zero_shot_label_centering <= 1:
            problems.append("scoring zero_shot_label_centering must lie between 0 and 1")
        problems.extend(self.encoder.problems())
        for name, value in self.thresholds.as_dict().items():
            if name in ("split_min_products", "lexical_min_ratio") or value is None:
                continue
            if not (-1.0 if name.endswith("similarity") else 0.0) <= value <= 1.0:
                problems.append(f"threshold {name}={value} is out of range")
        if not 0 <= self.thresholds.lexical_min_ratio <= 100:
            problems.append("--lexical-min-ratio must lie between 0 and 100")
        if problems:
            raise TaxmigError("; ".join(problems), hint="see taxmig migrate --help")
        return self

    # --- persistence (the nightly job's state remembers these) -------------------------------

    REMEMBERED_EXCLUDE = ("source", "progress", "ask", "category_cache", "target_cache")

    def to_dict(self) -> dict[str, Any]:
        """Everything but the source file and progress, JSON-ready; file paths made absolute.

        >>> MigrationSettings(source="a.csv", target_taxonomy="t.txt").to_dict()["target_taxonomy"].endswith("t.txt")
        True
        """
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name in self.REMEMBERED_EXCLUDE:
                continue
            value = getattr(self, f.name)
            if f.name in ("target_catalog", "target_taxonomy") and value is not None:
                value = str(Path(value).resolve())
            elif f.name in ("scoring", "thresholds", "encoder"):
                value = asdict(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str | Path, progress: bool = True,
                  **overrides: Any) -> "MigrationSettings":
        """Settings remembered by :meth:`to_dict`, for a new ``source``, with ``overrides`` applied."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known and k not in cls.REMEMBERED_EXCLUDE}
        values["scoring"] = ScoringParams.from_dict(data.get("scoring", {}))  # old state folders: "k" too
        values["thresholds"] = Thresholds(**data.get("thresholds", {}))
        values["encoder"] = EncoderSettings.from_dict(with_nested_encoder(data)["encoder"])
        settings = cls(source=source, progress=progress, **values)
        return replace(settings, **overrides) if overrides else settings


def with_nested_encoder(data: dict[str, Any]) -> dict[str, Any]:
    """Remembered settings with the encoder fields under ``encoder``: state folders of format 1
    kept them at the top level (a copy; ``data`` is left as it is)."""
    if "encoder" in data:
        return data
    flat = {k: v for k, v in data.items() if k not in ENCODER_FIELDS}
    return {**flat, "encoder": {k: data[k] for k in ENCODER_FIELDS if k in data}}
