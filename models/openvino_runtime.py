"""Encode with an OpenVINO model folder through the OpenVINO runtime and ``tokenizers`` alone.

Why it exists: a nightly reconcile that must encode a handful of changed products spent most of
its time importing the model stack, not encoding. Measured here (2 cores, fresh process):
importing sentence-transformers with transformers and torch and loading MiniLM takes 8-9 s;
importing ``openvino`` + ``tokenizers``, reading the tokenizer and compiling the same IR takes
0.4-0.5 s (``python /tmp/ovlight.py`` in the closing note of issue 15). So a night whose state was
made with ``--backend openvino`` encodes with this class and never imports torch.

It runs the same IR that ``SentenceTransformer(folder, backend="openvino")`` runs, compiled with
the same setting optimum-intel uses (``PERFORMANCE_HINT=LATENCY``), on the same tokenisation
(the folder's ``tokenizer.json``, truncated to the model's ``max_seq_length``), the same
length-sorted batches and the same pooling, so it gives the same vectors (tests/test_backends.py
holds it to sentence-transformers' own OpenVINO backend). Only the plain layout is supported --
Transformer, then mean/CLS/max Pooling, then optionally Normalize, no prompts, no lower-casing
flag; :func:`runtime_problem` says why any other folder is left to sentence-transformers.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from models.registry import compiled_dir

log = logging.getLogger(__name__)

IR_FILE = "openvino/openvino_model.xml"  # where sentence-transformers saves (and taxmig quantize writes) the IR
POOLING_MODES = ("mean", "cls", "max")
# what sentence-transformers' Pooling config calls each mode in the older, flag-per-mode format
LEGACY_POOLING_FLAGS = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls",
                        "pooling_mode_max_tokens": "max"}
# optimum-intel's default compile setting for an OpenVINO model (OVBaseModel._set_ov_config_parameters)
COMPILE_CONFIG = {"PERFORMANCE_HINT": "LATENCY"}


def _compile_config() -> dict[str, str]:
    """:data:`COMPILE_CONFIG`, plus OpenVINO's model cache where it can be written: a process that
    reads the compiled blob skips compiling, 0.15 s instead of 0.35-0.40 s for MiniLM here (most of a
    small night's model load). The cache leaves the vectors as they are (tests/test_backends.py)."""
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


def runtime_problem(folder: str | Path) -> str | None:
    """Why ``folder`` cannot be encoded by :class:`OpenVINORuntimeEncoder` (None when it can)."""
    root = Path(folder)
    if not (root / IR_FILE).is_file():
        return f"no {IR_FILE}"
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


class OpenVINORuntimeEncoder:
    """The subset of SentenceTransformer that taxmig's Embedder uses, over an OpenVINO IR folder."""

    def __init__(self, folder: str | Path) -> None:
        problem = runtime_problem(folder)
        if problem:
            raise ValueError(f"{folder}: {problem}")
        import openvino
        from tokenizers import Tokenizer

        root = Path(folder)
        self.folder = str(root)
        self.max_seq_length = _max_length(root)
        self.tokenizer = Tokenizer.from_file(str(root / "tokenizer.json"))
        self.tokenizer.enable_truncation(self.max_seq_length)
        pad = _read_json(root / "tokenizer_config.json").get("pad_token") or "[PAD]"
        pad_id = self.tokenizer.token_to_id(pad)
        self.tokenizer.enable_padding(pad_id=pad_id if pad_id is not None else 0, pad_token=pad)
        modules = json.loads((root / "modules.json").read_text(encoding="utf-8"))
        pooling = _read_json(root / modules[1]["path"] / "config.json")
        self.pooling = _pooling_mode(pooling)
        self.normalize = len(modules) == 3
        self.model = openvino.Core().compile_model(str(root / IR_FILE), "CPU", _compile_config())
        self.input_names = [port.get_any_name() for port in self.model.inputs]
        output = next((port for port in self.model.outputs if "last_hidden_state" in port.get_names()),
                      self.model.outputs[0])
        self.output = output
        self.dimension = int(pooling.get("embedding_dimension") or pooling.get("word_embedding_dimension")
                             or output.get_partial_shape()[-1].get_length())
        log.info("encoding with the OpenVINO runtime from %s (%s pooling, max %d tokens)",
                 self.folder, self.pooling, self.max_seq_length)

    def get_sentence_embedding_dimension(self) -> int:
        return self.dimension

    get_embedding_dimension = get_sentence_embedding_dimension

    def encode(self, texts: Sequence[str], *, batch_size: int = 32, normalize_embeddings: bool = False,
               convert_to_numpy: bool = True, show_progress_bar: bool = False, **_: object) -> np.ndarray:
        """float32 array (len(texts), dim); longest texts first in batches, as sentence-transformers does."""
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
        if normalize_embeddings or self.normalize:
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            out /= np.maximum(norms, 1e-12)
        return out

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(texts)
        feed = {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64)}
        tokens = self.model({name: feed[name] for name in self.input_names})[self.output]
        mask = feed["attention_mask"][..., None].astype(np.float32)
        if self.pooling == "cls":
            return tokens[:, 0]
        if self.pooling == "max":
            return np.where(mask > 0, tokens, -1e9).max(axis=1)
        return (tokens * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
