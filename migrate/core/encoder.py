"""The encoder a run uses, for every command (training included): named by :class:`EncoderSettings`,
resolved, loaded (lazily for the nightly job) and fingerprinted once, by :mod:`models.registry`."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from models.registry import ModelRef, check_backend, lazy_encoder, load_encoder, resolve_model


@dataclass
class EncoderSettings:
    """Which encoder a command uses and how it runs it: one definition for migrate, reconcile,
    crosswalk and match, whose settings objects nest it as ``encoder``.

    >>> EncoderSettings(batch_size=0, backend="tensorrt").problems()[0]
    '--batch-size must be at least 1'
    """

    model: str | None = None  # None: the bundled all-MiniLM-L6-v2
    allow_download: bool = False
    trust_remote_code: bool = False
    device: str | None = None
    precision: str = "auto"  # models.registry.resolve_precision: bf16 on a CPU that computes it, else fp32
    backend: str = "torch"
    batch_size: int = 64

    def problems(self) -> list[str]:
        """Every problem with these fields, in the CLI's words (the settings objects add them to theirs)."""
        problems = ["--batch-size must be at least 1"] if self.batch_size < 1 else []
        return problems + check_backend(self.backend, self.precision)

    def resolve(self) -> ModelRef:
        """The model these settings name (a folder, the bundled encoder, or a hub id), resolved
        by :func:`models.registry.resolve_model`; nothing is loaded."""
        return resolve_model(self.model)

    def load_options(self) -> dict[str, Any]:
        """How :func:`models.registry.load_encoder` loads it: device, downloads, remote code,
        precision and backend (``batch_size`` is the encoding's, not the load's)."""
        return {"device": self.device, "allow_download": self.allow_download,
                "trust_remote_code": self.trust_remote_code, "precision": self.precision, "backend": self.backend}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EncoderSettings":
        """The fields :func:`dataclasses.asdict` gave (unknown keys ignored)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


ENCODER_FIELDS = tuple(f.name for f in fields(EncoderSettings))
"""Also the names of the CLI options that set them (``--model``, ``--batch-size``, ...)."""


@dataclass
class Encoder:
    """A loaded sentence-transformers model with the name and fingerprint outputs record."""

    model: Any
    name: str
    fingerprint: str


def load_model(settings: EncoderSettings, *, lazy: bool = False) -> Encoder:
    """The encoder ``settings`` name, loaded and fingerprinted. ``lazy``: a local model loads when
    first used (a nightly run with every text in the embedding cache never loads it)."""
    ref = settings.resolve()
    options = settings.load_options()
    deferred = lazy_encoder(ref, **options) if lazy else None
    model, fp = deferred if deferred is not None else load_encoder(ref, **options)
    return Encoder(model, ref.name, fp)
