"""taxmig: move retail product catalogs from one taxonomy to another.

The library is usable without the CLI::

    from migrate import MigrationSettings, run_migration, write_output
    result = run_migration(MigrationSettings(source="products.csv", target_taxonomy="taxonomy.txt"))
    result.mapping  # a polars DataFrame, one row per mapped source product
    write_output(result, "mapping.xlsx")

    from migrate import MatchSettings, run_match, write_match_output
    matches = run_match(MatchSettings(left="shop_a.csv", right="shop_b.csv"))
    write_match_output(matches, "matches.xlsx")

The package draws the architecture; dependencies point one way::

    migrate.core      read catalogs and taxonomies, encode (+ embedding cache), index, write files and sheets
    migrate.mapping   score, label, classify, calibrate, flag: the pipeline and its outputs   (uses core)
    migrate.nightly   state, lock, decisions, changes, reconcile, review, export, crosswalk  (uses mapping, core)
    migrate.matching  product matching: inputs, candidates, features, scoring, clusters      (uses core)
    migrate.cli       the click commands over all of them

The names below are the public API; they import on first use (PEP 562), so ``import migrate``
stays light (no torch) for the CLI's ``--help`` and for error types.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from migrate.errors import InputError, ModelError, OutputExistsError, TaxmigError

__version__ = "0.1.0"

_PUBLIC = {
    "EncoderSettings": "migrate.core.encoder", "MigrationSettings": "migrate.mapping.settings", "ScoringParams": "migrate.mapping.scoring",
    "Thresholds": "migrate.mapping.flags", "run_migration": "migrate.mapping.pipeline",
    "Migrator": "migrate.mapping.pipeline", "MigrationResult": "migrate.mapping.result",
    "write_output": "migrate.mapping.output", "Feedback": "migrate.mapping.feedback",
    "reconcile": "migrate.nightly.reconcile", "apply_review": "migrate.nightly.review",
    "export_mapping": "migrate.nightly.export",
    "MatchSettings": "migrate.matching.settings", "run_match": "migrate.matching.matcher",
    "Matcher": "migrate.matching.matcher", "MatchResult": "migrate.matching.result",
    "write_match_output": "migrate.matching.output",
}

__all__ = ["TaxmigError", "InputError", "ModelError", "OutputExistsError", "__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'migrate' has no attribute '{name}'")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
