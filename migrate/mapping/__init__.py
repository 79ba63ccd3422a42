"""Mapping products onto a target taxonomy or labelled catalog: scoring, labels, the lexical and
classifier votes, calibration, flags, the pipeline and its outputs. Depends on :mod:`migrate.core`."""
