"""Fingerprints of texts and files: what the cache, the state and model cards key things by.

>>> text_hash("a") == text_hash("a") != text_hash("a ")
True
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def text_hash(text: str) -> str:
    """sha256 of the exact text (first 32 hex digits: collisions are not a practical concern)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def file_fingerprint(path: str | Path) -> str:
    """sha256 of a file's bytes (first 16 hex digits), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]
