"""The quantized tier: an encoder with int8 weights and activations, run by OpenVINO or onnxruntime.

Which one (:func:`int8_backend_here`): OpenVINO's static int8 where the CPU has int8 dot products
(VNNI, AMX), onnxruntime's dynamic int8 elsewhere -- on an AVX2-only CPU OpenVINO's int8 encoded
slower than torch fp32 and onnxruntime's faster (BENCHMARKS.md, "speed tiers: torch fp32 against
OpenVINO, ONNX and distilled static models").

``quantize_openvino`` exports the encoder to OpenVINO (the fp32 export ``--backend openvino`` runs:
:func:`models.registry.export_backend`) and applies post-training static quantization with NNCF
directly (``nncf.quantize`` on the IR, with the settings optimum-intel's ``OVQuantizationConfig``
used by default, which taxmig called before: :data:`NNCF_SETTINGS`): every linear layer's weights
and inputs in int8, the activation ranges measured on example texts. sentence-transformers' helper for this (``export_static_quantized_openvino_model``)
calibrates on a hub dataset (GLUE SST-2), which a machine without the hub cannot fetch and which
is not retail text, so the calibration texts here come from catalog or taxonomy files the user
gives (their product texts or category paths, no labels needed).

The result is a model folder: ``--model FOLDER --backend openvino`` takes it wherever an encoder
is taken (its speed and accuracy against torch fp32: BENCHMARKS.md, "speed tiers: torch fp32
against OpenVINO and distilled static models").

``quantize_onnx`` exports the encoder to ONNX (the fp32 export ``--backend onnx`` runs) and applies
onnxruntime's dynamic quantization: every linear layer's weights in int8 (per output channel, 7-bit
so that AVX2's 16-bit accumulation of u8 x s8 products cannot saturate), activations quantized per
batch as they come, so it needs no calibration texts. ``--model FOLDER --backend onnx`` takes it.

>>> quantize_openvino("models/retail-int8", calibration_files=["source.csv"])  # doctest: +SKIP
>>> quantize_onnx("models/retail-int8")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from migrate.errors import ModelError, TaxmigError
from models.card import provenance, write_card
from models.registry import (BACKEND_INSTALL, export_backend, fingerprint, has_backend_files, int8_slow_here,
                             quiet_backend_logs)
from models.runtime import IR_FILE, ONNX_FILE, copy_configuration, load_tokenizer, token_feed
from train.derived import check_new_folder, local_model, sources_line, staged_folder, texts_with_sources

log = logging.getLogger(__name__)

RECORD = "quantize.json"
# NNCF's own default subset size for post-training quantization (nncf.quantize subset_size=300)
DEFAULT_SAMPLES = 300
# calibration texts are cut to this many tokens: catalog texts are short (BigBasket's longest
# product text is under 100 tokens), and the ranges of longer inputs follow from the same layers
CALIBRATION_MAX_TOKENS = 128
# nncf.quantize's settings: optimum-intel 2.2's OVQuantizationConfig defaults, which taxmig's int8
# folders were built with until it called NNCF directly (OVQuantizationConfig.to_nncf_dict: sym=False
# -> preset "mixed", model_type "transformer", fast_bias_correction True, overflow_fix "disable", no
# smooth_quant_alpha -> NNCF's own SmoothQuant alpha for a transformer's MatMuls)
NNCF_SETTINGS = {"preset": "mixed", "model_type": "transformer", "fast_bias_correction": True,
                 "overflow_fix": "disable"}
QUANTIZATION = "static int8 (NNCF 'nncf.quantize' on the OpenVINO IR, preset mixed, transformer patterns)"
ONNX_QUANTIZATION = ("dynamic int8 (onnxruntime 'quantize_dynamic' on the fused ONNX model: int8 weights per channel, "
                     "7-bit range, activations quantized per batch)")
# quantize_dynamic's settings: per-channel 7-bit weights; onnxruntime's default (8-bit per tensor)
# saturates on AVX2 and cost zero-shot top-1 (BENCHMARKS.md, "speed tiers: torch fp32 against
# OpenVINO, ONNX and distilled static models")
ONNX_SETTINGS = {"per_channel": True, "reduce_range": True}


def int8_backend_here() -> str:
    """The int8 backend ``taxmig quantize --backend auto`` writes on this machine: ``openvino`` where
    the CPU has int8 dot products (or its flags cannot be read), else ``onnx``."""
    return "onnx" if int8_slow_here() else "openvino"


@dataclass(frozen=True)
class QuantizeResult:
    """What ``quantize_openvino`` wrote: the folder, its fingerprint and where its ranges came from."""

    output_dir: Path
    fingerprint: str
    base_model: str
    samples: int
    seconds: float
    sources: list[dict[str, str]] = field(default_factory=list)


def calibration_sample(texts: Sequence[str], samples: int, seed: int = 0) -> list[str]:
    """Up to ``samples`` distinct non-empty texts, drawn at random (seeded) from ``texts``."""
    distinct = sorted({t.strip() for t in texts if t and t.strip()})
    random.Random(seed).shuffle(distinct)
    return distinct[:samples]


def quantize_openvino(output_dir: str | Path, *, calibration_files: Sequence[str | Path], model: str | None = None,
                      calibration_text: str | None = None, samples: int = DEFAULT_SAMPLES, seed: int = 0,
                      overwrite: bool = False, encoding: str = "utf-8", progress: bool = True) -> QuantizeResult:
    """Write an int8 OpenVINO copy of ``model`` (default: the bundled encoder) to ``output_dir``.

    ``calibration_files``: catalogs (their product texts; ``calibration_text`` names the columns,
    default as in ``migrate``) or taxonomy files (their paths) like the ones the model will map.
    The folder is built beside ``output_dir`` and renamed into place when complete; an existing
    non-empty ``output_dir`` is replaced only with ``overwrite``. ``progress=False`` hides NNCF's
    progress bars.
    """
    output_dir = Path(output_dir)
    check_new_folder(output_dir, overwrite)
    if not calibration_files:
        raise TaxmigError("no calibration texts given",
                          hint="pass --calibration FILE: a catalog or taxonomy like the ones you will map "
                               "(static int8 measures activation ranges on example texts)")
    if not 1 <= samples <= 100_000:
        raise TaxmigError(f"--samples {samples} is out of range", hint="use e.g. 300 (NNCF's default)")
    try:
        import nncf
        import openvino
    except ImportError as exc:
        raise ModelError(f"the quantized tier needs OpenVINO and NNCF ({exc})",
                         hint="pip install 'taxmig[openvino]' (README, Speed tiers)") from None
    ref = local_model(model, "quantize")
    started = time.perf_counter()
    texts, sources = texts_with_sources(calibration_files, text=calibration_text, encoding=encoding)
    sample = calibration_sample(texts, samples, seed)
    if not sample:
        raise TaxmigError("the calibration files hold no text", hint="check --calibration and --calibration-text")
    # the fp32 IR: the folder's own, else its export (made once per weights, as --backend openvino's)
    exported = Path(ref.location if has_backend_files(ref.location, "openvino") else export_backend(ref, "openvino"))
    ov_model = openvino.Core().read_model(str(exported / IR_FILE))
    names = [port.get_any_name() for port in ov_model.inputs]
    tokenizer = load_tokenizer(exported, CALIBRATION_MAX_TOKENS)
    feeds = [{name: feed[name] for name in names} for feed in (token_feed(tokenizer, [text]) for text in sample)]
    with staged_folder(output_dir) as staging:
        log.info("quantizing %s to int8 on %d calibration texts", ref.name, len(sample))
        with quiet_backend_logs(), _progress_shown(progress):
            quantized = nncf.quantize(
                ov_model, nncf.Dataset(feeds), subset_size=len(sample),
                preset=nncf.QuantizationPreset(NNCF_SETTINGS["preset"]),
                model_type=nncf.ModelType(NNCF_SETTINGS["model_type"]),
                fast_bias_correction=NNCF_SETTINGS["fast_bias_correction"],
                advanced_parameters=nncf.AdvancedQuantizationParameters(
                    overflow_fix=nncf.OverflowFix(NNCF_SETTINGS["overflow_fix"])))
        copy_configuration(exported, staging)  # modules, tokenizer, pooling: the folder describes its model
        (staging / IR_FILE).parent.mkdir(parents=True, exist_ok=True)
        openvino.save_model(quantized, str(staging / IR_FILE), compress_to_fp16=False)
        seconds = round(time.perf_counter() - started, 1)
        result = QuantizeResult(output_dir, fingerprint(staging), ref.name, len(sample), seconds, sources)
        record = {"base_model": ref.name, "base_model_fingerprint": fingerprint(ref.location),
                  "backend": "openvino", "quantization": QUANTIZATION,
                  "samples": len(sample), "seed": seed, "calibration_files": sources, "seconds": seconds}
        (staging / RECORD).write_text(json.dumps(record, indent=2))
        _write_card(staging, output_dir, result, record)
    log.info("saved %s (fingerprint %s) in %.1f s", output_dir, result.fingerprint, seconds)
    return result


def quantize_onnx(output_dir: str | Path, *, model: str | None = None, overwrite: bool = False) -> QuantizeResult:
    """Write an int8 ONNX copy of ``model`` (default: the bundled encoder) to ``output_dir``:
    onnxruntime's dynamic quantization (:data:`ONNX_SETTINGS`) of the fp32 export ``--backend onnx``
    runs. No calibration texts. Built beside ``output_dir`` and renamed into place; an existing
    non-empty ``output_dir`` is replaced only with ``overwrite``."""
    output_dir = Path(output_dir)
    check_new_folder(output_dir, overwrite)
    try:
        import onnx  # noqa: F401
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise ModelError(f"the ONNX int8 tier needs onnxruntime and onnx ({exc})",
                         hint=BACKEND_INSTALL["onnx"].split(",")[0]) from None
    ref = local_model(model, "quantize")
    started = time.perf_counter()
    exported = Path(ref.location if has_backend_files(ref.location, "onnx") else export_backend(ref, "onnx"))
    with staged_folder(output_dir) as staging:
        log.info("quantizing %s to int8 (onnxruntime, dynamic)", ref.name)
        copy_configuration(exported, staging)
        (staging / ONNX_FILE).parent.mkdir(parents=True, exist_ok=True)
        with quiet_backend_logs(), _root_warnings_held():
            # DefaultTensorType: the fused operators' outputs have no inferred type; they are float
            quantize_dynamic(str(exported / ONNX_FILE), str(staging / ONNX_FILE), weight_type=QuantType.QInt8,
                             extra_options={"DefaultTensorType": 1}, **ONNX_SETTINGS)
        seconds = round(time.perf_counter() - started, 1)
        result = QuantizeResult(output_dir, fingerprint(staging), ref.name, 0, seconds)
        record = {"base_model": ref.name, "base_model_fingerprint": fingerprint(ref.location), "backend": "onnx",
                  "quantization": ONNX_QUANTIZATION, "samples": 0, "calibration_files": [], "seconds": seconds}
        (staging / RECORD).write_text(json.dumps(record, indent=2))
        _write_card(staging, output_dir, result, record)
    log.info("saved %s (fingerprint %s) in %.1f s", output_dir, result.fingerprint, seconds)
    return result


@contextlib.contextmanager
def _root_warnings_held() -> Iterator[None]:
    """onnxruntime's quantizer warns through the root logger (``logging.warning``) about a
    pre-processing step that does not apply to a fused transformer: hold those records back."""
    root = logging.getLogger()
    drop = logging.Filter("\0")  # matches no logger name: every record logged on the root is dropped
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


@contextlib.contextmanager
def _progress_shown(progress: bool) -> Iterator[None]:
    """NNCF draws its bars with rich on the console streams and has no switch: hide them there."""
    if progress:
        yield
        return
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield


def _write_card(folder: Path, output_dir: Path, result: QuantizeResult, record: dict) -> None:
    backend = record["backend"]
    how = (f"- {record['quantization']}: activation ranges from {result.samples} texts drawn (seed "
           f"{record['seed']}) from " + sources_line(record["calibration_files"]) if backend == "openvino"
           else f"- {record['quantization']}: no calibration texts")
    write_card(folder, title=output_dir.name,
               intro=f"An int8 {'OpenVINO' if backend == 'openvino' else 'ONNX'} encoder written by `taxmig quantize` "
                     f"for the quantized tier: `taxmig migrate --model {output_dir} --backend {backend}`.",
               provenance=[*provenance(record, result.fingerprint, derived="quantized from"), how,
                           f"- built in {result.seconds} s"],
               closing=["No catalog rows are stored here: only the model."])
