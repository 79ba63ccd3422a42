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


ROW_KEY_COLUMN = "row_key"


def row_key(run_id: str, source_id: str, source_text: str) -> str:
    """A short hash tying a review row to its run, product id and text.

    The review workbook carries it in a hidden column; ``taxmig review apply`` recomputes it to
    catch a product id or text edited after export (a decision would land on the wrong product).

    >>> row_key("run1", "42", "Sugar 1 kg") == row_key("run1", "42", "Sugar 1 kg") != row_key("run1", "43", "Sugar 1 kg")
    True
    """
    return short_key(run_id, source_id, source_text)


def short_key(*parts: str) -> str:
    """12 hex digits of the SHA-1 of ``parts`` joined by NUL: the hidden keys of decision sheets."""
    return hashlib.sha1("\x00".join(parts).encode("utf-8")).hexdigest()[:12]
