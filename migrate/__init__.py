"""taxmig: move retail product catalogs from one taxonomy to another.

The library is usable without the CLI::

    from migrate import MigrationSettings, run_migration, write_output
    result = run_migration(MigrationSettings(source="products.csv", target_taxonomy="taxonomy.txt"))
    result.mapping  # a polars DataFrame, one row per mapped source product
    write_output(result, "mapping.xlsx")

The names below are the public API; they import on first use (PEP 562), so ``import migrate``
stays light (no torch) for the CLI's ``--help`` and for error types.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from migrate.errors import InputError, ModelError, OutputExistsError, TaxmigError

__version__ = "0.1.0"

_PUBLIC = {
    "MigrationSettings": "migrate.settings", "ScoringParams": "migrate.scoring", "Thresholds": "migrate.flags",
    "run_migration": "migrate.pipeline", "Migrator": "migrate.pipeline", "MigrationResult": "migrate.result",
    "write_output": "migrate.output", "reconcile": "migrate.reconcile", "apply_review": "migrate.review",
    "export_mapping": "migrate.export",
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
