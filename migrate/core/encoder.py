"""The encoder a run uses: resolved, loaded (lazily for the nightly job) and fingerprinted once,
by :mod:`models.registry`, for every command."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from models.registry import lazy_encoder, load_encoder, resolve_model


class EncoderFields(Protocol):
    """The encoder fields every settings object has (migration, crosswalk, match)."""

    model: str | None
    device: str | None
    allow_download: bool
    trust_remote_code: bool
    precision: str
    backend: str


@dataclass
class Encoder:
    """A loaded sentence-transformers model with the name and fingerprint outputs record."""

    model: Any
    name: str
    fingerprint: str


def load_model(settings: EncoderFields, *, lazy: bool = False) -> Encoder:
    """The encoder ``settings`` name (its fields model, device, allow_download, trust_remote_code;
    the crosswalk's settings have the same ones). ``lazy``: a local model loads when first used
    (a nightly run with every text in the embedding cache never loads it)."""
    ref = resolve_model(settings.model)
    options = {"device": settings.device, "allow_download": settings.allow_download,
               "trust_remote_code": settings.trust_remote_code, "precision": settings.precision,
               "backend": settings.backend}
    deferred = lazy_encoder(ref, **options) if lazy else None
    model, fp = deferred if deferred is not None else load_encoder(ref, **options)
    return Encoder(model, ref.name, fp)
