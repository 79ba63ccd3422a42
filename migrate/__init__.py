"""taxmig: move retail product catalogs from one taxonomy to another.

The library is usable without the CLI::

    from migrate import MigrationSettings, run_migration
    result = run_migration(MigrationSettings(source="products.csv", target_taxonomy="taxonomy.txt"))
    result.mapping  # a polars DataFrame, one row per mapped source product
"""

from migrate.errors import InputError, ModelError, OutputExistsError, TaxmigError

__version__ = "0.1.0"

__all__ = ["TaxmigError", "InputError", "ModelError", "OutputExistsError", "__version__"]
