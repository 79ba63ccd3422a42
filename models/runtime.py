"""Encode an exported model folder without sentence-transformers: the OpenVINO runtime,
onnxruntime or a TorchScript file, with ``tokenizers`` and numpy around it.

Why it exists: a nightly reconcile that must encode a handful of changed products would spend
most of its time importing the model stack, not encoding. So a night encodes with these classes:
:class:`OpenVINORuntimeEncoder` when its state was made with ``--backend openvino``,
:class:`ONNXRuntimeEncoder` with ``--backend onnx``, :class:`TorchScriptRuntimeEncoder` with torch
on the CPU in fp32. ``--backend openvino`` / ``onnx`` runs use the first two by day as well.
What a fresh process pays is timed by ``/usr/bin/time python -c "from models.registry import
lazy_encoder, resolve_model; m, _ = lazy_encoder(resolve_model(None)); m.encode(['Amul Taaza Toned
Milk 1 L'] * 200, normalize_embeddings=True)"`` with an empty ``$TAXMIG_CACHE_DIR``, run twice
(the first run loads sentence-transformers and writes the trace, the second runs the trace), and
constructing the OpenVINO encoder as :func:`_compile_config` says.

All run the model's own transformer -- converted to an OpenVINO IR by :func:`export_openvino`
(``openvino.convert_model``; ``taxmig quantize`` writes an int8 one) and compiled with
``PERFORMANCE_HINT=LATENCY``, exported to ONNX by :func:`export_onnx` (``torch.onnx.export``, fused
by onnxruntime's transformer optimizer; ``taxmig quantize --backend onnx`` writes an int8 one), or
traced by ``torch.jit.trace`` (:func:`export_torchscript`) --
on the tokenisation sentence-transformers uses (the folder's ``tokenizer.json``, truncated to the model's
``max_seq_length``), the same length-sorted batches and the same pooling, so they give the same
vectors (tests/test_backends.py holds the trace to sentence-transformers within 1e-5, and the IR
compiled in fp32 as well; compiled as a run compiles it, OpenVINO computes in bf16 on a CPU with
AMX / AVX512-BF16 -- its own default there -- and the vectors stay within cosine 0.9999;
tests/test_onnx_backend.py holds the ONNX export to cosine 0.99999). Only the plain
layout is supported -- Transformer, then mean/CLS/max Pooling, then optionally Normalize, no
prompts, no lower-casing flag; :func:`runtime_problem` says why any other folder is left to
sentence-transformers.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from models.cache import compiled_dir

log = logging.getLogger(__name__)

IR_FILE = "openvino/openvino_model.xml"  # where export_openvino (and taxmig quantize) writes the IR
ONNX_FILE = "onnx/model.onnx"  # where export_onnx (and taxmig quantize --backend onnx) writes the model
BACKEND_FILES = {"openvino": IR_FILE, "onnx": ONNX_FILE}  # the file each runtime encoder runs
TORCHSCRIPT_FILE = "torchscript/model.pt"  # where export_torchscript writes the traced transformer
TORCHSCRIPT_INPUTS = "torchscript/inputs.json"  # the traced module's input names, in order
POOLING_MODES = ("mean", "cls", "max")
# what sentence-transformers' Pooling config calls each mode in the older, flag-per-mode format
LEGACY_POOLING_FLAGS = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls",
                        "pooling_mode_max_tokens": "max"}
# how a run compiles an IR: for one caller's batches, as optimum-intel compiled it when taxmig exported
# through it (OVBaseModel._set_ov_config_parameters); the precision is OpenVINO's default for the CPU
COMPILE_CONFIG = {"PERFORMANCE_HINT": "LATENCY"}
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")  # what a BERT-like transformer takes
HIDDEN_STATE = "last_hidden_state"  # the IR's output name, which the runtime encoder reads


def _compile_config() -> dict[str, str]:
    """:data:`COMPILE_CONFIG`, plus OpenVINO's model cache where it can be written: a process that
    reads the compiled blob skips compiling: timed by constructing the runtime encoder in a fresh
    process (``python -c "...; OpenVINORuntimeEncoder(export_folder)"`` timed around the call, in
    taxmig[openvino]'s environment) with the compiled blobs deleted first, then again reading them.
    The cache leaves the vectors as they are (tests/test_backends.py)."""
    config = dict(COMPILE_CONFIG)
    folder = compiled_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        log.info("OpenVINO model cache %s cannot be made (%s); compiling every run", folder, exc)
    else:
        config["CACHE_DIR"] = str(folder)
    return config


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _module_kind(entry: dict) -> str:
    return str(entry.get("type", "")).rsplit(".", 1)[-1]


def _pooling_mode(config: dict) -> str | None:
    if "pooling_mode" in config:
        return config["pooling_mode"]
    modes = [mode for flag, mode in LEGACY_POOLING_FLAGS.items() if config.get(flag)]
    others = [k for k, v in config.items() if k.startswith("pooling_mode_") and v and k not in LEGACY_POOLING_FLAGS]
    return modes[0] if len(modes) == 1 and not others else None


def runtime_problem(folder: str | Path, model_file: str | None = IR_FILE) -> str | None:
    """Why ``folder`` cannot be encoded by a runtime encoder (None when it can): ``model_file`` is
    the file the encoder runs (:data:`IR_FILE` or :data:`TORCHSCRIPT_FILE`); None checks the
    layout alone (a folder about to be exported)."""
    root = Path(folder)
    if model_file and not (root / model_file).is_file():
        return f"no {model_file}"
    if not (root / "tokenizer.json").is_file():
        return "no tokenizer.json"
    try:
        modules = json.loads((root / "modules.json").read_text(encoding="utf-8"))
        kinds = [_module_kind(m) for m in modules]
        if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
            return f"modules {kinds} are not Transformer, Pooling[, Normalize]"
        if modules[0].get("path", "") != "":
            return "the Transformer module is not at the folder's root"
        pooling = _read_json(root / modules[1]["path"] / "config.json")
        if _pooling_mode(pooling) not in POOLING_MODES or pooling.get("include_prompt", True) is not True:
            return f"pooling {pooling} is not plain mean, cls or max"
        if _read_json(root / "sentence_bert_config.json").get("do_lower_case"):
            return "do_lower_case is set"
        st_config = _read_json(root / "config_sentence_transformers.json")
        if st_config.get("default_prompt_name") or any((st_config.get("prompts") or {}).values()):
            return "the model has prompts"
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        return f"unreadable sentence-transformers config ({exc})"
    return None


def _max_length(root: Path) -> int:
    """sentence-transformers' rule: the Transformer config's max_seq_length, else the tokenizer's
    model_max_length, capped by the model's position embeddings."""
    length = _read_json(root / "sentence_bert_config.json").get("max_seq_length")
    if not length:
        length = _read_json(root / "tokenizer_config.json").get("model_max_length")
    positions = _read_json(root / "config.json").get("max_position_embeddings")
    if not length or length > 1_000_000:  # transformers' "no limit" sentinel is a huge integer
        length = positions or 512
    return int(min(length, positions) if positions else length)


def load_tokenizer(folder: str | Path, max_length: int | None = None):
    """The folder's ``tokenizer.json`` as sentence-transformers runs it: truncated to ``max_length``
    (default: :func:`_max_length`'s rule), padded with the tokenizer's pad token."""
    from tokenizers import Tokenizer

    root = Path(folder)
    tokenizer = Tokenizer.from_file(str(root / "tokenizer.json"))
    tokenizer.enable_truncation(max_length or _max_length(root))
    pad = _read_json(root / "tokenizer_config.json").get("pad_token") or "[PAD]"
    pad_id = tokenizer.token_to_id(pad)
    tokenizer.enable_padding(pad_id=pad_id if pad_id is not None else 0, pad_token=pad)
    return tokenizer


def token_feed(tokenizer, texts: Sequence[str]) -> dict[str, np.ndarray]:
    """One padded batch as the transformer's inputs (int64, named as :data:`INPUT_NAMES`)."""
    encodings = tokenizer.encode_batch(list(texts))
    return {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64)}


class EvaluationMetrics:
    """Where sentence-transformers' evaluators leave their metrics on a model
    (``model.model_card_data.set_evaluation_metrics``): kept in :attr:`metrics`, by evaluator name."""

    def __init__(self) -> None:
        self.metrics: dict[str, dict] = {}

    def set_evaluation_metrics(self, evaluator, metrics: dict, epoch: int = 0, step: int = 0) -> None:
        self.metrics[getattr(evaluator, "name", "") or type(evaluator).__name__] = dict(metrics)


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


class RuntimeEncoder:
    """The subset of SentenceTransformer that taxmig's Embedder uses, over an exported folder:
    tokenisation, length-sorted batches and pooling here, the transformer in a subclass."""

    engine = ""  # for the log line

    def __init__(self, folder: str | Path, model_file: str) -> None:
        problem = runtime_problem(folder, model_file)
        if problem:
            raise ValueError(f"{folder}: {problem}")
        root = Path(folder)
        self.folder = str(root)
        self.max_seq_length = _max_length(root)
        self.tokenizer = load_tokenizer(root, self.max_seq_length)
        self.similarity_fn_name = _read_json(root / "config_sentence_transformers.json").get(
            "similarity_fn_name") or "cosine"
        self.model_card_data = EvaluationMetrics()  # sentence-transformers' evaluators write here
        modules = json.loads((root / "modules.json").read_text(encoding="utf-8"))
        pooling = _read_json(root / modules[1]["path"] / "config.json")
        self.pooling = _pooling_mode(pooling)
        self.normalize = len(modules) == 3
        self.dimension = int(pooling.get("embedding_dimension") or pooling.get("word_embedding_dimension") or 0)
        self._load(root)
        log.info("loaded %s with the %s runtime (%s pooling, max %d tokens)",
                 self.folder, self.engine, self.pooling, self.max_seq_length)

    def _load(self, root: Path) -> None:
        raise NotImplementedError

    def _token_vectors(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        """The transformer's last hidden state, (batch, tokens, dim) float32."""
        raise NotImplementedError

    def get_sentence_embedding_dimension(self) -> int:
        return self.dimension

    get_embedding_dimension = get_sentence_embedding_dimension

    def encode(self, texts: Sequence[str] | str, *, batch_size: int = 32, normalize_embeddings: bool = False,
               convert_to_numpy: bool = True, show_progress_bar: bool = False, precision: str | None = "float32",
               truncate_dim: int | None = None, **_: object) -> np.ndarray:
        """float32 array (len(texts), dim) -- (dim,) for one string; longest texts first in batches,
        as sentence-transformers does; ``truncate_dim`` keeps the first dimensions (before
        normalising). Quantized outputs (``precision`` other than float32) are not offered."""
        if precision not in (None, "float32"):
            raise ValueError(f"the {self.engine} runtime encodes float32 only, not {precision}")
        if isinstance(texts, str):
            return self.encode([texts], batch_size=batch_size, normalize_embeddings=normalize_embeddings,
                               show_progress_bar=show_progress_bar, truncate_dim=truncate_dim)[0]
        texts = [str(t) for t in texts]
        order = np.argsort([-len(t) for t in texts])
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        starts = range(0, len(texts), batch_size)
        if show_progress_bar:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="Batches")
        for start in starts:
            rows = order[start:start + batch_size]
            out[rows] = self._encode_batch([texts[i] for i in rows])
        if self.normalize:  # the model's Normalize module, before any truncation (as sentence-transformers)
            out = _unit_rows(out)
        if truncate_dim:
            out = np.ascontiguousarray(out[:, :truncate_dim])
        return _unit_rows(out) if normalize_embeddings else out

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        feed = token_feed(self.tokenizer, texts)
        tokens = self._token_vectors(feed)
        mask = feed["attention_mask"][..., None].astype(np.float32)
        if self.pooling == "cls":
            return tokens[:, 0]
        if self.pooling == "max":
            return np.where(mask > 0, tokens, -1e9).max(axis=1)
        return (tokens * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)


class OpenVINORuntimeEncoder(RuntimeEncoder):
    """An OpenVINO IR folder (:func:`export_openvino`'s or ``taxmig quantize``'s) on the CPU."""

    engine = "OpenVINO"

    def __init__(self, folder: str | Path, *, inference_precision: str | None = None) -> None:
        """``inference_precision``: OpenVINO's ``INFERENCE_PRECISION_HINT`` (``"f32"`` computes in
        fp32 on a CPU whose default is bf16); None: OpenVINO's default for the CPU, as runs compile."""
        self.inference_precision = inference_precision
        super().__init__(folder, IR_FILE)

    def _load(self, root: Path) -> None:
        import openvino

        config = _compile_config()
        if self.inference_precision:
            config["INFERENCE_PRECISION_HINT"] = self.inference_precision
        self.model = openvino.Core().compile_model(str(root / IR_FILE), "CPU", config)
        self.input_names = [port.get_any_name() for port in self.model.inputs]
        self.output = next((port for port in self.model.outputs if HIDDEN_STATE in port.get_names()),
                           self.model.outputs[0])
        self.dimension = self.dimension or int(self.output.get_partial_shape()[-1].get_length())

    def _token_vectors(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        return self.model({name: feed[name] for name in self.input_names})[self.output]


class TorchScriptRuntimeEncoder(RuntimeEncoder):
    """A folder written by :func:`export_torchscript`: the transformer traced to TorchScript, run by
    torch alone (no transformers, no sentence-transformers) on the CPU."""

    engine = "TorchScript"

    def __init__(self, folder: str | Path) -> None:
        super().__init__(folder, TORCHSCRIPT_FILE)

    def _load(self, root: Path) -> None:
        import torch

        self._torch = torch
        self.model = torch.jit.load(str(root / TORCHSCRIPT_FILE), map_location="cpu").eval()
        self.input_names = json.loads((root / TORCHSCRIPT_INPUTS).read_text(encoding="utf-8"))
        if not self.dimension:
            raise ValueError(f"{root}: the pooling config names no embedding dimension")

    def _token_vectors(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            out = self.model(*(torch.from_numpy(feed[name]) for name in self.input_names))
        return out.float().numpy()


# a padded batch to trace with (the attention mask must carry padding, or the tracer may record the
# no-padding branch of the mask code) and a differently shaped one to check the trace against
TRACE_TEXTS = ("Dark Chocolate 70% Cocoa Bar, 100 g", "tea")
CHECK_TEXTS = ("Wireless Bluetooth Earbuds with Charging Case and Noise Cancelling Microphone", "Basmati Rice 5 kg",
               "Chocolate Creme Body Lotion")
TRACE_TOLERANCE = 1e-5  # largest difference to the model's own output accepted


def copy_configuration(source_folder: str | Path, staging: Path) -> None:
    """Copy a model folder's configuration and tokenizer files (not its weights, not other exports)
    into ``staging``: an exported folder still describes its model to sentence-transformers and to
    :func:`runtime_problem`."""
    import shutil

    source = Path(source_folder)
    for path in source.rglob("*"):
        relative = path.relative_to(source)
        if (path.is_file() and path.suffix not in (".safetensors", ".bin", ".pt", ".onnx", ".xml")
                and relative.parts[0] not in ("openvino", "onnx", "torchscript")
                and not any(part.startswith("checkpoint-") for part in relative.parts)):
            (staging / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, staging / relative)


def export_torchscript(model, source_folder: str | Path, staging: Path) -> None:
    """Write ``model`` (a SentenceTransformer on the CPU in fp32, loaded from ``source_folder``) to
    ``staging`` as a :class:`TorchScriptRuntimeEncoder` folder: the folder's configuration and
    tokenizer files, its transformer traced by ``torch.jit.trace``, the input names in order.
    Raises ValueError when the layout is not plain or the trace does not reproduce the model."""
    import warnings

    import torch

    problem = runtime_problem(source_folder, None)
    if problem:
        raise ValueError(problem)
    copy_configuration(source_folder, staging)
    transformer = model[0].auto_model.eval()
    tokenizer = model[0].tokenizer
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in tokenizer.model_input_names]

    class LastHiddenState(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return self.inner(**dict(zip(names, inputs))).last_hidden_state

    def batch(texts: Sequence[str]) -> tuple[torch.Tensor, ...]:
        features = tokenizer(list(texts), padding=True, truncation=True, max_length=model.max_seq_length,
                             return_tensors="pt")
        return tuple(features[n] for n in names)

    wrapped = LastHiddenState(transformer).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on Python values it records as constants
        traced = torch.jit.trace(wrapped, batch(TRACE_TEXTS), check_trace=False)
        for texts in (CHECK_TEXTS, CHECK_TEXTS[:1]):  # other shapes, and one batch with no padding
            check = batch(texts)
            gap = float((traced(*check) - wrapped(*check)).abs().max())
            if not gap <= TRACE_TOLERANCE:
                raise ValueError(f"the traced model differs from the model by {gap:.2g}")
    (staging / TORCHSCRIPT_FILE).parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(traced, str(staging / TORCHSCRIPT_FILE))
    (staging / TORCHSCRIPT_INPUTS).write_text(json.dumps(names), encoding="utf-8")


def _named_hidden_state(model):
    """``(module, batch, names)`` for converting ``model`` (a SentenceTransformer on the CPU in fp32):
    its transformer as a module with named tensor inputs (``names``: the tokenizer's, of
    :data:`INPUT_NAMES`) and one output, the last hidden state; ``batch(texts)`` tokenises as
    sentence-transformers does, into a dict of tensors by name."""
    import torch

    transformer = model[0].auto_model.eval()
    tokenizer = model[0].tokenizer
    names = [n for n in INPUT_NAMES if n in tokenizer.model_input_names]

    class LastHiddenState(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
            inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
            return self.inner(**{n: inputs[n] for n in names}).last_hidden_state

    def batch(texts: Sequence[str]) -> dict:
        features = tokenizer(list(texts), padding=True, truncation=True, max_length=model.max_seq_length,
                             return_tensors="pt")
        return {n: features[n] for n in names}

    return LastHiddenState(transformer).eval(), batch, names


OPENVINO_TOLERANCE = 1e-3
"""Largest difference of the converted IR's last hidden state (compiled in fp32) to the model's
own accepted by :func:`export_openvino` (the bundled model: 7e-5 measured, on values up to ~10)."""


def export_openvino(model, source_folder: str | Path, staging: Path) -> None:
    """Write ``model`` (a SentenceTransformer on the CPU in fp32, loaded from ``source_folder``) to
    ``staging`` as an :class:`OpenVINORuntimeEncoder` folder: the folder's configuration and
    tokenizer files, and its transformer converted by ``openvino.convert_model`` and saved in fp32
    at :data:`IR_FILE` (inputs named as the tokenizer's, any batch and length; the output
    :data:`HIDDEN_STATE`). Raises ValueError when the layout is not plain or the IR does not
    reproduce the model (:data:`OPENVINO_TOLERANCE`)."""
    import warnings

    import openvino
    import torch

    problem = runtime_problem(source_folder, None)
    if problem:
        raise ValueError(problem)
    wrapped, batch, names = _named_hidden_state(model)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on Python values it records as constants
        converted = openvino.convert_model(wrapped, example_input=batch(TRACE_TEXTS))
    found = [port.get_any_name() for port in converted.inputs]
    if sorted(found) != sorted(names):
        raise ValueError(f"the converted model takes {found}, not {names}")
    converted.reshape({name: openvino.PartialShape([-1, -1]) for name in found})
    converted.outputs[0].get_tensor().set_names({HIDDEN_STATE})
    compiled = openvino.Core().compile_model(converted, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    for texts in (CHECK_TEXTS, CHECK_TEXTS[:1]):  # other shapes, and one batch with no padding
        check = batch(texts)
        with torch.no_grad():
            expected = wrapped(**check).numpy()
        got = compiled({n: check[n].numpy() for n in found})[compiled.outputs[0]]
        gap = float(np.abs(got - expected).max())
        if not gap <= OPENVINO_TOLERANCE:
            raise ValueError(f"the converted model differs from the model by {gap:.2g}")
    copy_configuration(source_folder, staging)
    (staging / IR_FILE).parent.mkdir(parents=True, exist_ok=True)
    openvino.save_model(converted, str(staging / IR_FILE), compress_to_fp16=False)


class ONNXRuntimeEncoder(RuntimeEncoder):
    """An ONNX folder (:func:`export_onnx`'s, or ``taxmig quantize --backend onnx``'s int8 one) run
    by onnxruntime on the CPU."""

    engine = "onnxruntime"

    def __init__(self, folder: str | Path) -> None:
        super().__init__(folder, ONNX_FILE)

    def _load(self, root: Path) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: its notes on the fused graph are not the user's
        self.model = onnxruntime.InferenceSession(str(root / ONNX_FILE), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.model.get_inputs()]
        self.output = next((o.name for o in self.model.get_outputs() if o.name == HIDDEN_STATE),
                           self.model.get_outputs()[0].name)
        if not self.dimension:
            raise ValueError(f"{root}: the pooling config names no embedding dimension")

    def _token_vectors(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        return self.model.run([self.output], {name: feed[name] for name in self.input_names})[0]


ONNX_TOLERANCE = 1e-3
"""Largest difference of the exported ONNX model's last hidden state to the model's own accepted
by :func:`export_onnx` (as :data:`OPENVINO_TOLERANCE`)."""
ONNX_OPSET = 17  # onnxruntime's fused attention and LayerNormalization need 17 or newer
# onnxruntime.transformers' optimizer fuses these model types' attention, layer norms and GELU into
# its own operators; another model type is exported unfused (slower, the same vectors)
ONNX_FUSED_TYPES = ("bert", "mpnet", "roberta", "xlm-roberta", "distilbert")


def export_onnx(model, source_folder: str | Path, staging: Path) -> None:
    """Write ``model`` (a SentenceTransformer on the CPU in fp32, loaded from ``source_folder``) to
    ``staging`` as an :class:`ONNXRuntimeEncoder` folder: the folder's configuration and tokenizer
    files, and its transformer exported by ``torch.onnx.export`` (the TorchScript exporter, eager
    attention), its attention, layer norms and GELU fused by onnxruntime's transformer optimizer,
    saved in fp32 at :data:`ONNX_FILE` (inputs named as the tokenizer's, any batch and length; the
    output :data:`HIDDEN_STATE`). Raises ValueError when the layout is not plain or the model does
    not reproduce the original (:data:`ONNX_TOLERANCE`)."""
    import shutil
    import tempfile
    import warnings

    import onnxruntime
    import torch
    from onnxruntime.transformers.optimizer import optimize_model

    problem = runtime_problem(source_folder, None)
    if problem:
        raise ValueError(problem)
    wrapped, batch, names = _named_hidden_state(model)
    transformer = model[0].auto_model
    config = transformer.config
    attention = getattr(config, "_attn_implementation", None)
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on Python values it records as constants
        raw = Path(tmp) / "model.onnx"
        try:
            if attention not in (None, "eager") and hasattr(transformer, "set_attn_implementation"):
                transformer.set_attn_implementation("eager")  # the graph onnxruntime's optimizer fuses
            example = batch(TRACE_TEXTS)
            torch.onnx.export(wrapped, tuple(example[n] for n in names), str(raw), input_names=names,
                              output_names=[HIDDEN_STATE], opset_version=ONNX_OPSET, dynamo=False,
                              dynamic_axes={n: {0: "batch", 1: "tokens"} for n in (*names, HIDDEN_STATE)})
        finally:
            if attention not in (None, "eager") and hasattr(transformer, "set_attn_implementation"):
                transformer.set_attn_implementation(attention)
        model_type = getattr(config, "model_type", "")
        if model_type in ONNX_FUSED_TYPES:
            fused = optimize_model(str(raw), model_type="bert" if model_type != "distilbert" else model_type,
                                   num_heads=int(config.num_attention_heads), hidden_size=int(config.hidden_size),
                                   opt_level=1)
            fused.save_model_to_file(str(raw))
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        session = onnxruntime.InferenceSession(str(raw), options, providers=["CPUExecutionProvider"])
        for texts in (CHECK_TEXTS, CHECK_TEXTS[:1]):  # other shapes, and one batch with no padding
            check = batch(texts)
            expected = wrapped(**check).numpy()
            got = session.run(None, {n: check[n].numpy() for n in names})[0]
            gap = float(np.abs(got - expected).max())
            if not gap <= ONNX_TOLERANCE:
                raise ValueError(f"the exported model differs from the model by {gap:.2g}")
        copy_configuration(source_folder, staging)
        (staging / ONNX_FILE).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(raw), str(staging / ONNX_FILE))
