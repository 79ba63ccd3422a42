"""Product matching (``taxmig match``): inputs, candidates, pair features, scoring, clusters and the
match workbook. Depends on :mod:`migrate.core` only."""
