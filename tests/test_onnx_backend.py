"""The ONNX tier: ``--backend onnx`` (exported by torch, fused by onnxruntime, exported once and
cached) and ``taxmig quantize --backend onnx`` (onnxruntime's dynamic int8), on the bundled model
and real BigBasket rows.

The ONNX tests need the extra ``taxmig[onnx]`` (onnxruntime and onnx), which ``make test``
installs; the checks of what happens without it, and of which int8 ``--backend auto`` writes, run
everywhere."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys

import pytest
from click.testing import CliRunner

from migrate.cli import main
from migrate.errors import ModelError
from models import fingerprint, load_encoder, resolve_model
from models.runtime import ONNX_FILE, ONNXRuntimeEncoder, runtime_problem
from tests.conftest import SAMPLES
from tests.test_backends import _edited_night_in_a_fresh_process, labelled_top1_beside_torch
from train.quantize import RECORD

SAMPLE = SAMPLES / "bigbasket_sample.csv"
HAS_ONNX = importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None
needs_onnx = pytest.mark.skipif(not HAS_ONNX, reason="needs onnxruntime: pip install 'taxmig[onnx]'")


def _hide_onnx(monkeypatch) -> None:
    for name in ("onnxruntime", "onnx"):
        monkeypatch.setitem(sys.modules, name, None)  # an import of it now fails as if not installed


# --- everywhere --------------------------------------------------------------------------------

def test_quantize_writes_onnx_int8_only_where_the_cpu_lacks_int8_dot_products(monkeypatch):
    """--backend auto: OpenVINO's static int8 where the CPU has VNNI / AMX (or says nothing), onnxruntime's
    dynamic int8 on a CPU known to lack them (where OpenVINO's int8 encoded slower than torch fp32)."""
    import train.quantize as quantize

    for slow, expected in ((True, "onnx"), (False, "openvino")):
        monkeypatch.setattr(quantize, "int8_slow_here", lambda slow=slow: slow)
        assert quantize.int8_backend_here() == expected


def test_quantize_for_openvino_needs_calibration_texts_and_onnx_does_not(monkeypatch, tmp_path):
    result = CliRunner().invoke(main, ["quantize", "--backend", "openvino", "-o", str(tmp_path / "int8")])
    assert result.exit_code == 64 and "--calibration" in result.output and "--backend onnx" in result.output
    _hide_onnx(monkeypatch)  # gets as far as the import: no usage error for the missing --calibration
    result = CliRunner().invoke(main, ["quantize", "--backend", "onnx", "-o", str(tmp_path / "int8")])
    assert result.exit_code == 1 and "taxmig[onnx]" in result.output, result.output
    assert not (tmp_path / "int8").exists()


def _onnx_only_folder(folder):
    """The bundled model's configuration and tokenizer with a stand-in (unreadable) ONNX file, no weights."""
    shutil.copytree(resolve_model(None).location, folder,
                    ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.pt", "onnx", "openvino"))
    (folder / ONNX_FILE).parent.mkdir()
    (folder / ONNX_FILE).write_bytes(b"\0" * 16)
    return folder


def test_an_onnx_only_folder_loaded_with_torch_says_which_backend(tmp_path):
    folder = _onnx_only_folder(tmp_path / "retail-int8")
    with pytest.raises(ModelError) as caught:
        load_encoder(resolve_model(str(folder)))
    assert "ONNX model only" in str(caught.value) and "--backend onnx" in caught.value.hint


# --- with taxmig[onnx] -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def onnx_model(export_cache):
    return load_encoder(resolve_model(None), backend="onnx")


@needs_onnx
def test_onnx_export_is_fused_cached_once_and_gives_torch_vectors(onnx_model, export_cache, migrator, bigbasket):
    """The export: an fp32 ONNX model beside the model's configuration and tokenizer, no torch
    weights, attention fused into onnxruntime's own operator, inputs named as the runtime encoder
    feeds them; made once per weights; the same vectors as sentence-transformers."""
    import onnx

    model, fp = onnx_model
    weights = fingerprint(resolve_model(None).location)
    assert fp == f"{weights}-onnx" and isinstance(model, ONNXRuntimeEncoder)
    folder = export_cache / "exports" / fp
    assert runtime_problem(folder, ONNX_FILE) is None and not list(folder.rglob("*.safetensors"))
    graph = onnx.load(str(folder / ONNX_FILE)).graph
    assert sorted(i.name for i in graph.input) == ["attention_mask", "input_ids", "token_type_ids"]
    assert [o.name for o in graph.output] == ["last_hidden_state"]
    assert sum(node.op_type == "Attention" for node in graph.node) == 6  # MiniLM-L6's six layers, fused
    before = (folder / ONNX_FILE).stat().st_mtime_ns
    _, again = load_encoder(resolve_model(None), backend="onnx")
    assert again == fp and (folder / ONNX_FILE).stat().st_mtime_ns == before  # read back, not exported again
    texts = bigbasket["product"].drop_nulls().head(300).to_list()
    cosine = (model.encode(texts, normalize_embeddings=True)
              * migrator.encoder.model.encode(texts, normalize_embeddings=True)).sum(axis=1)
    assert cosine.min() > 0.99999, cosine.min()


@pytest.fixture(scope="module")
def onnx_int8(export_cache, tmp_path_factory):
    """The bundled encoder quantized by onnxruntime through the CLI (no calibration texts)."""
    out = tmp_path_factory.mktemp("quantized") / "retail-int8"
    result = CliRunner().invoke(main, ["quantize", "--backend", "onnx", "-o", str(out), "-q"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out, result.output


@needs_onnx
def test_quantize_writes_an_onnx_int8_folder_with_its_card(onnx_int8):
    import onnx

    out, output = onnx_int8
    record = json.loads((out / RECORD).read_text())
    assert record["backend"] == "onnx" and "dynamic int8" in record["quantization"] and record["samples"] == 0
    assert (out / ONNX_FILE).is_file() and not list(out.glob("*.safetensors"))
    card = (out / "README.md").read_text()
    assert record["base_model_fingerprint"] in card and "--backend onnx" in card
    assert f"saved {out}" in output and fingerprint(out) in output and "--backend onnx" in output
    ops = {node.op_type for node in onnx.load(str(out / ONNX_FILE)).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops or "DynamicQuantizeMatMul" in ops


@needs_onnx
def test_onnx_int8_folder_maps_bigbasket_like_torch(onnx_int8, bigbasket, migrator, tmp_path):
    """Onto a labelled target catalog the int8 tier's top-1 stays within a point of torch's, and its
    vectors close to torch's (per-channel 7-bit weights: no saturation on an AVX2 CPU)."""
    out, _ = onnx_int8
    int8, base = labelled_top1_beside_torch(out, "onnx", bigbasket, migrator, tmp_path)
    assert int8 >= base - 0.01, (int8, base)
    texts = bigbasket["product"].drop_nulls().sample(300, seed=1).to_list()
    int8 = ONNXRuntimeEncoder(out).encode(texts, normalize_embeddings=True)
    cosine = (int8 * migrator.encoder.model.encode(texts, normalize_embeddings=True)).sum(axis=1)
    assert cosine.mean() > 0.98 and cosine.min() > 0.9, (cosine.mean(), cosine.min())


@needs_onnx
def test_onnx_night_encodes_without_importing_torch(export_cache, tmp_path):
    """A night that encodes a few changed products of an --backend onnx state runs in a fresh process
    that never imports torch, transformers or sentence-transformers."""
    heavy, report = _edited_night_in_a_fresh_process(tmp_path, export_cache, "--backend", "onnx")
    assert heavy == []
    assert report["embedding"]["encoded"] == 3 and report["counts"]["text_changed"] == 3


@needs_onnx
def test_a_damaged_onnx_folder_is_refused_with_the_fix(tmp_path):
    """onnxruntime's own errors (its exceptions are not RuntimeErrors) become a ModelError naming the
    folder and how to rebuild it."""
    folder = _onnx_only_folder(tmp_path / "damaged")
    with pytest.raises(ModelError) as caught:
        load_encoder(resolve_model(str(folder)), backend="onnx")
    assert "ONNX cannot load" in str(caught.value) and "taxmig quantize" in caught.value.hint
