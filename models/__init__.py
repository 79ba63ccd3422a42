"""Where encoders live: the bundled offline base model, fine-tuned folders, and their cards;
resolving, loading and running them. The lowest layer: it imports nothing of taxmig but
``migrate.errors`` (tests/test_layout.py).

>>> ref = resolve_model(None)          # the bundled all-MiniLM-L6-v2, no network
>>> ref.name, ref.is_local             # doctest: +SKIP
('all-MiniLM-L6-v2 (bundled)', True)
"""

from models.registry import BASE_MODEL_NAME, ModelRef, fingerprint, load_encoder, resolve_model

__all__ = ["BASE_MODEL_NAME", "ModelRef", "resolve_model", "load_encoder", "fingerprint"]
