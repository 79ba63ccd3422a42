"""taxmig's cache folder and what lives in it: exported backend models, TorchScript traces and
OpenVINO's compiled blobs, all derived from model folders and safe to delete.

The lowest module of :mod:`models`: paths only, no imports of taxmig, so the registry, the runtime
encoders and the worker process all read one layout.
"""

from __future__ import annotations

import os
from pathlib import Path

EXPORTS_ENV = "TAXMIG_CACHE_DIR"
"""The environment variable that moves the cache folder (default ``~/.cache/taxmig``)."""


def cache_dir() -> Path:
    """taxmig's cache folder: ``$TAXMIG_CACHE_DIR``, by default ``~/.cache/taxmig``."""
    return Path(os.environ.get(EXPORTS_ENV) or Path.home() / ".cache" / "taxmig").expanduser()


def category_cache_path() -> Path:
    """The category-text embedding cache shared by every run of this user:
    ``$TAXMIG_CACHE_DIR/category-embeddings.sqlite`` (vectors only; safe to delete)."""
    return cache_dir() / "category-embeddings.sqlite"


def target_sides_dir() -> Path:
    """The fitted target sides of labelled target catalogs this user mapped onto (vectors,
    classifier, calibration; JSON and npz, never code): ``$TAXMIG_CACHE_DIR/target-sides``, one
    pair of files per target catalog, model and settings (safe to delete)."""
    return cache_dir() / "target-sides"


def exports_dir() -> Path:
    """Where exported backend models are cached: ``$TAXMIG_CACHE_DIR/exports``, by default
    ``~/.cache/taxmig/exports`` (one folder per weights fingerprint and backend)."""
    return cache_dir() / "exports"


def compiled_dir() -> Path:
    """Where OpenVINO keeps models compiled for this machine (its ``CACHE_DIR``, blobs named by a
    hash of the model, the device and the settings): ``$TAXMIG_CACHE_DIR/openvino-compiled``."""
    return cache_dir() / "openvino-compiled"


def torchscript_dir(weights: str, torch_version: str | None = None) -> Path:
    """Where the TorchScript export of the weights ``weights`` lives: under :func:`exports_dir`, per
    torch version (a trace is read back by the torch that wrote it; by default this process's)."""
    if torch_version is None:
        import torch

        torch_version = torch.__version__
    return exports_dir() / f"{weights}-torchscript-torch{torch_version}"
