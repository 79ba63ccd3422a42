"""The quantized tier: ``--backend openvino`` (exported once and cached) and ``taxmig quantize``
(static int8), on the bundled model and real BigBasket rows.

The OpenVINO tests need the extra ``taxmig[openvino]`` (OpenVINO and NNCF), which ``make test``
installs; the checks of what happens without it run everywhere."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from migrate import MigrationSettings, run_migration
from migrate.core.encoder import EncoderSettings
from migrate.cli import main
from migrate.errors import ModelError, TaxmigError
from models import fingerprint, load_encoder, resolve_model, side_worker
from models.cache import EXPORTS_ENV, exports_dir
from models.registry import backend_fingerprint, check_backend, lazy_encoder
from models.runtime import IR_FILE, OpenVINORuntimeEncoder, runtime_problem
from tests.conftest import SAMPLES
from train.quantize import RECORD

SAMPLE = SAMPLES / "bigbasket_sample.csv"
TAXONOMY = SAMPLES / "google_taxonomy_subset.txt"
HAS_OPENVINO = importlib.util.find_spec("openvino") is not None and importlib.util.find_spec("nncf") is not None
needs_openvino = pytest.mark.skipif(not HAS_OPENVINO, reason="needs OpenVINO: pip install 'taxmig[openvino]'")
WITHOUT_OPENVINO = ("nncf", "openvino")


def _hide_openvino(monkeypatch) -> None:
    for name in WITHOUT_OPENVINO:
        monkeypatch.setitem(sys.modules, name, None)  # an import of it now fails as if not installed


# --- everywhere --------------------------------------------------------------------------------

def test_backend_and_precision_problems_are_named():
    assert check_backend("torch", "fp16") == [] and check_backend("openvino", "fp32") == []
    [problem] = check_backend("openvino", "fp16")
    assert "--precision fp16" in problem and "taxmig quantize" in problem
    [problem] = check_backend("onnx", "bf16")
    assert "--precision bf16" in problem
    [problem] = check_backend("tensorrt", "fp32")
    assert "'tensorrt'" in problem and "torch, openvino, onnx" in problem


def test_backend_fingerprint_keeps_vectors_of_other_backends_apart():
    assert backend_fingerprint("abc", "torch") == "abc"
    assert backend_fingerprint("abc", "openvino") == "abc-openvino"
    assert backend_fingerprint("abc", "onnx") == "abc-onnx"
    assert backend_fingerprint("abc", "torch", "bf16") == "abc-bf16"


def test_settings_report_a_bad_backend_with_every_other_problem(tmp_path):
    settings = MigrationSettings(source=tmp_path / "missing.csv", target_taxonomy=TAXONOMY,
                                 encoder=EncoderSettings(backend="tensorrt", batch_size=0))
    with pytest.raises(TaxmigError) as caught:
        settings.validate()
    message = str(caught.value)
    assert "missing.csv: file not found" in message and "'tensorrt'" in message and "--batch-size" in message


def test_exports_are_cached_under_taxmig_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv(EXPORTS_ENV, str(tmp_path))
    assert exports_dir() == tmp_path / "exports"
    monkeypatch.delenv(EXPORTS_ENV)
    assert exports_dir().parts[-3:] == (".cache", "taxmig", "exports")


@pytest.mark.parametrize("backend, modules, model_files", [("openvino", WITHOUT_OPENVINO, "*.xml"),
                                                            ("onnx", ("onnxruntime", "onnx"), "*.onnx")])
def test_a_backend_without_its_extra_names_it(monkeypatch, tmp_path, backend, modules, model_files):
    """migrate --backend B without B's extra: exit 1 naming the extra, nothing written, no half
    export; the nightly job's lazy load says the same on first use (the runtime encoder's
    ImportError is not what the user sees)."""
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)  # an import of it now fails as if not installed
    monkeypatch.setenv(EXPORTS_ENV, str(tmp_path / "cache"))
    out = tmp_path / "mapping.csv"
    result = CliRunner().invoke(main, ["migrate", str(SAMPLE), "--target-taxonomy", str(TAXONOMY),
                                       "--backend", backend, "-o", str(out), "-q"])
    assert result.exit_code == 1, result.output
    assert f"{backend} backend is not installed" in result.output and f"taxmig[{backend}]" in result.output
    assert "Traceback" not in result.output and not out.exists()
    assert not list((tmp_path / "cache").rglob(model_files))  # no half export left behind
    model, fp = lazy_encoder(resolve_model(None), backend=backend)
    assert fp.endswith(f"-{backend}") and not model.loaded
    with pytest.raises(ModelError) as caught:
        model.encode(["Amul Taaza Toned Milk 1 L"])
    assert f"taxmig[{backend}]" in caught.value.hint


def test_quantize_without_the_extra_names_it(monkeypatch, tmp_path):
    _hide_openvino(monkeypatch)
    result = CliRunner().invoke(main, ["quantize", "--backend", "openvino", "--calibration", str(SAMPLE),
                                       "-o", str(tmp_path / "int8")])
    assert result.exit_code == 1, result.output
    assert "taxmig[openvino]" in result.output and not (tmp_path / "int8").exists()


def test_an_openvino_only_folder_loaded_with_torch_says_which_backend(tmp_path):
    """A folder written by ``taxmig quantize`` has no torch weights: loading it with torch is refused
    with the flag to pass, not a transformers stack trace."""
    bundled = resolve_model(None).location
    folder = tmp_path / "retail-int8"
    shutil.copytree(bundled, folder, ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.pt", "onnx", "openvino"))
    (folder / "openvino").mkdir()
    (folder / "openvino" / "openvino_model.xml").write_text("<net/>")
    (folder / "openvino" / "openvino_model.bin").write_bytes(b"\0" * 16)
    with pytest.raises(ModelError) as caught:
        load_encoder(resolve_model(str(folder)))
    assert "OpenVINO model only" in str(caught.value) and "--backend openvino" in caught.value.hint


def _plain_openvino_folder(tmp_path):
    """The bundled model's configs with a stand-in IR: the layout the runtime encoder checks."""
    folder = tmp_path / "plain"
    shutil.copytree(resolve_model(None).location, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    (folder / IR_FILE).parent.mkdir()
    (folder / IR_FILE).write_text("<net/>")
    return folder


def test_runtime_encoder_takes_only_the_plain_layout(tmp_path):
    """Transformer + mean/CLS/max pooling (+ Normalize) only; anything else is left to
    sentence-transformers, with the reason."""
    folder = _plain_openvino_folder(tmp_path)
    assert runtime_problem(folder) is None
    assert runtime_problem(resolve_model(None).location) == f"no {IR_FILE}"
    pooling = folder / "1_Pooling" / "config.json"
    config = json.loads(pooling.read_text())
    pooling.write_text(json.dumps({**config, "pooling_mode_mean_tokens": False, "pooling_mode_weightedmean_tokens": True}))
    assert "pooling" in runtime_problem(folder)
    pooling.write_text(json.dumps(config))
    st_config = folder / "config_sentence_transformers.json"
    st_config.write_text(json.dumps({**json.loads(st_config.read_text()), "prompts": {"query": "query: "}}))
    assert runtime_problem(folder) == "the model has prompts"
    modules = json.loads((folder / "modules.json").read_text())
    (folder / "modules.json").write_text(json.dumps([*modules, {"idx": 3, "name": "3", "path": "3_Dense",
                                                                 "type": "sentence_transformers.models.Dense"}]))
    assert "Dense" in runtime_problem(folder)


def _started_state(folder: Path, *init_options: str) -> Path:
    """In ``folder``: a state started in-process on the demo sample (``init_options`` added), and the
    next night's catalog, the sample with three product names edited (``night2.csv``)."""
    import polars as pl

    frame = pl.read_csv(SAMPLE, infer_schema=False)
    frame.write_csv(folder / "night1.csv")
    taxonomy = folder / "food.txt"  # Google's food branch: what the sample maps onto, a quarter of the labels
    taxonomy.write_text("".join(line for line in TAXONOMY.read_text().splitlines(keepends=True)
                                if "Food, Beverages" in line))
    frame.with_columns(pl.when(pl.int_range(pl.len()) < 3).then(pl.col("product") + " - Pack of 2")
                       .otherwise(pl.col("product")).alias("product")).write_csv(folder / "night2.csv")
    first = CliRunner().invoke(main, ["reconcile", str(folder / "night1.csv"), "--state", str(folder / "state"),
                                      "--init", "--target-taxonomy", str(taxonomy), "--source-category",
                                      "category,sub_category", *init_options, "-o", str(folder / "r1.xlsx"), "-q"])
    assert first.exit_code in (0, 2), first.output
    return folder


def _edited_night_in_a_fresh_process(tmp_path: Path, cache: Path, *init_options: str,
                                     env: dict[str, str] | None = None,
                                     started: Path | None = None) -> tuple[list[str], dict]:
    """A state started in-process on the demo sample (``init_options`` added; or a copy of
    ``started``, a folder :func:`_started_state` made), then a night with three product names edited
    in a fresh process (``env`` added to its environment): (the heavy modules it imported, its report)."""
    import subprocess

    if started is None:
        _started_state(tmp_path, *init_options)
    else:  # the same state, copied: each night changes its own
        shutil.copytree(started, tmp_path, dirs_exist_ok=True)
    night = ("import sys, json; from migrate.cli import main\n"
             "try:\n    main(sys.argv[1:])\nexcept SystemExit as done:\n    code = done.code\n"
             "heavy = [m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules]\n"
             "print(json.dumps({'code': code, 'heavy': heavy}))")
    done = subprocess.run([sys.executable, "-c", night, "reconcile", str(tmp_path / "night2.csv"), "--state",
                           str(tmp_path / "state"), "-o", str(tmp_path / "r2.xlsx"), "-q"], capture_output=True,
                          text=True, env={**os.environ, EXPORTS_ENV: str(cache), **(env or {})},
                          cwd=Path(__file__).resolve().parents[1])
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["code"] in (0, 2), done.stderr
    return outcome["heavy"], json.loads((tmp_path / "r2.json").read_text())


# --- the TorchScript runtime (torch on the CPU, everywhere) ------------------------------------

def _transformers_version() -> tuple[int, ...]:
    import importlib.metadata

    return tuple(int(p) for p in importlib.metadata.version("transformers").split(".")[:2] if p.isdigit())


# transformers 5.5 (what taxmig[openvino] pinned while it went through optimum-intel) reads the traced sequence length as a tensor in its
# mask code and the trace fails (IndexError in masking_utils.sdpa_mask): there a night loads the
# model with sentence-transformers, as the log says. 5.25 (make test's environment) traces.
traceable = pytest.mark.skipif(_transformers_version() < (5, 6),
                               reason="transformers < 5.6 cannot be traced (its nights use sentence-transformers)")

@pytest.fixture(scope="module")
def torchscript_cache(traced_bundled_model, private_cache):
    """The session's export cache, holding the session model traced where a night looks for it
    (conftest's ``traced_bundled_model``): (the cache, the trace's folder). Its category cache is the
    session's too, so a state started on the demo sample reads the sample taxonomy's category
    vectors as a user's second run does."""
    return private_cache, traced_bundled_model


@traceable
def test_torchscript_runtime_gives_sentence_transformers_vectors(torchscript_cache, migrator, bigbasket):
    """The bundled model traced to TorchScript and run by torch alone: the vectors
    sentence-transformers gives, long, padded, empty and single texts included."""
    from models.runtime import TorchScriptRuntimeEncoder

    _, folder = torchscript_cache
    runtime = TorchScriptRuntimeEncoder(folder)
    model = migrator.encoder.model._model  # not the session's memory of vectors: the model itself
    assert runtime.max_seq_length == model.max_seq_length and runtime.get_sentence_embedding_dimension() == 384
    texts = [*bigbasket["product"].drop_nulls().head(60).to_list(), "  padded  ", "", "x " * 400,
             "Café crème brûlée 250g"]
    ours = runtime.encode(texts, batch_size=16, normalize_embeddings=True)
    theirs = model.encode(texts, batch_size=16, normalize_embeddings=True, convert_to_numpy=True)
    assert np.abs(ours - theirs).max() < 1e-5, np.abs(ours - theirs).max()  # 4e-8 when written
    one = runtime.encode(texts[:1], normalize_embeddings=True)  # a batch with no padding
    assert np.abs(one - theirs[:1]).max() < 1e-5
    assert not (folder / "model.safetensors").exists()  # configuration and the trace, not the weights again


@traceable
def test_the_first_torch_load_traces_the_model_and_the_next_loads_the_trace(monkeypatch, tmp_path, migrator):
    """A nightly run's lazy load with torch on the CPU: the first one loads sentence-transformers and
    leaves a trace in the exports cache; the next one encodes with the trace, the same vectors."""
    import models.registry as registry
    from models.runtime import TORCHSCRIPT_FILE, TorchScriptRuntimeEncoder

    monkeypatch.setenv(EXPORTS_ENV, str(tmp_path))
    monkeypatch.setattr(registry, "load_encoder", registry.load_encoder.__wrapped__)  # not the session's model
    ref = resolve_model(None)
    first, fp = lazy_encoder(ref, device="cpu")
    texts = ["Amul Taaza Toned Milk 1 L", "Dark Chocolate 70%", "Wireless Earbuds"]
    theirs = first.encode(texts, normalize_embeddings=True)
    assert type(first._model).__name__ == "SentenceTransformer" and fp == migrator.encoder.fingerprint
    assert (registry.torchscript_dir(fp) / TORCHSCRIPT_FILE).is_file()
    second, fp2 = lazy_encoder(ref, device="cpu")
    ours = second.encode(texts, normalize_embeddings=True)
    assert isinstance(second._model, TorchScriptRuntimeEncoder) and fp2 == fp
    assert np.abs(ours - theirs).max() < 1e-5
    # fp16, another backend or remote code: never the trace
    assert lazy_encoder(ref, device="cpu", precision="bf16")[1].endswith("-bf16")


def test_a_model_the_tracer_cannot_reproduce_stays_with_sentence_transformers(monkeypatch, tmp_path, caplog):
    """When tracing fails (an architecture or a transformers release the tracer mishandles), the run
    goes on with sentence-transformers, says so in the log, and leaves no export behind."""
    import logging

    import models.registry as registry
    import models.runtime as runtime

    def refuse(model, source, staging):
        (staging / "half-written").write_text("x")
        raise ValueError("the traced model differs from the model by 0.3")

    monkeypatch.setenv(EXPORTS_ENV, str(tmp_path))
    monkeypatch.setattr(registry, "load_encoder", registry.load_encoder.__wrapped__)
    monkeypatch.setattr(runtime, "export_torchscript", refuse)
    model, fp = lazy_encoder(resolve_model(None), device="cpu")
    with caplog.at_level(logging.INFO, logger="models.registry"):
        assert model.encode(["Dark Chocolate 70%"]).shape == (1, 384)
    assert type(model._model).__name__ == "SentenceTransformer"
    assert "not traced to TorchScript (the traced model differs" in caplog.text
    assert not registry.torchscript_dir(fp).exists() and not any((tmp_path / "exports").iterdir())


@pytest.fixture(scope="module")
def torch_state(torchscript_cache, tmp_path_factory) -> Path:
    """A torch state started on the demo sample (with the trace in the cache), for each night to copy."""
    return _started_state(tmp_path_factory.mktemp("torch-state"))


@traceable
@pytest.mark.parametrize("worker", ["1", "0"])
def test_torch_night_encodes_without_importing_sentence_transformers(torchscript_cache, torch_state, tmp_path,
                                                                      worker):
    """A night that encodes a few changed products of a torch state, in a fresh process, with the
    trace in the cache: torch runs the trace; transformers and sentence-transformers are never
    imported (importing them was most of such a night). With the encoder worker (the default on
    two or more cores) the night's own process does not even import torch."""
    heavy, report = _edited_night_in_a_fresh_process(tmp_path, torchscript_cache[0], env={side_worker.ENV: worker},
                                                     started=torch_state)
    assert heavy == ([] if worker == "1" and (os.cpu_count() or 1) >= 2 else ["torch"])
    assert report["embedding"]["encoded"] == 3 and report["counts"]["text_changed"] == 3


@traceable
def test_the_encoder_worker_gives_the_runtime_vectors(torchscript_cache, bigbasket):
    """The trace loaded and run in the worker process: the very vectors of the trace run here, from
    the same worker all night, and from this process when the worker dies."""
    import time

    from models.runtime import TorchScriptRuntimeEncoder

    _, folder = torchscript_cache
    texts = [*bigbasket["product"].drop_nulls().head(40).to_list(), "", "x " * 400]
    worker = side_worker.SideWorker()
    try:
        assert worker.on_cpu("cpu") and worker.torch_version == __import__("torch").__version__
        remote = worker.encoder(str(folder))
        assert remote.get_embedding_dimension() == 384
        here = TorchScriptRuntimeEncoder(folder).encode(texts, batch_size=16, normalize_embeddings=True)
        np.testing.assert_array_equal(remote.encode(texts, batch_size=16, normalize_embeddings=True), here)
        pid = worker._pool.submit(os.getpid).result()
        time.sleep(1.1)  # past loky's memory check: a worker holding a model is not restarted as a leak
        remote.encode(texts[:5])
        assert worker._pool.submit(os.getpid).result() == pid
        os.kill(pid, 9)  # the worker dies mid-night: encoded here instead
        np.testing.assert_array_equal(remote.encode(texts, batch_size=16, normalize_embeddings=True), here)
    finally:
        worker.close()


def test_the_encoder_worker_ends_with_the_night_that_started_it(tmp_path):
    """A night killed (SIGKILL: no clean-up runs) leaves no worker behind holding the model's memory."""
    import signal
    import subprocess
    import time

    if not hasattr(signal, "SIGKILL"):
        pytest.skip("SIGKILL is POSIX")
    night = ("import os, sys, time; from models.side_worker import SideWorker\n"
             "worker = SideWorker(); worker.on_cpu('cpu')\n"
             "print(worker._pool.submit(os.getpid).result(), flush=True); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", night], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[1])
    child = int(parent.stdout.readline())

    def alive(pid: int) -> bool:  # a process that has exited but is not yet reaped (a zombie) is gone
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        stat = Path(f"/proc/{pid}/stat")
        return not (stat.exists() and stat.read_text().rsplit(")", 1)[-1].split()[0] == "Z")

    assert alive(child)  # while its night is
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not alive(child):
            return
        time.sleep(0.2)
    os.kill(child, signal.SIGKILL)
    pytest.fail("the encoder worker outlived its night by 10 s")


# --- with taxmig[openvino] ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def openvino_model(export_cache):
    ref = resolve_model(None)
    return load_encoder(ref, backend="openvino")


@needs_openvino
def test_openvino_export_is_cached_once_by_fingerprint(openvino_model, export_cache):
    """The export (OpenVINO's own converter): an fp32 IR beside the model's configuration and
    tokenizer, no torch weights, inputs named as the runtime encoder feeds them; loaded by the
    runtime encoder; made once per weights."""
    import openvino

    model, fp = openvino_model
    weights = fingerprint(resolve_model(None).location)
    assert fp == f"{weights}-openvino" and isinstance(model, OpenVINORuntimeEncoder)
    folder = export_cache / "exports" / fp
    [xml] = folder.glob("openvino/openvino_model*.xml")
    assert runtime_problem(folder) is None and not list(folder.rglob("*.safetensors"))
    ir = openvino.Core().read_model(str(xml))
    assert sorted(p.get_any_name() for p in ir.inputs) == ["attention_mask", "input_ids", "token_type_ids"]
    assert "last_hidden_state" in ir.outputs[0].get_names()
    constants = {op.get_output_element_type(0) for op in ir.get_ops() if op.get_type_name() == "Constant"}
    assert openvino.Type.f32 in constants and openvino.Type.f16 not in constants  # saved in fp32
    before = xml.stat().st_mtime_ns
    again, fp_again = load_encoder(resolve_model(None), backend="openvino")
    assert fp_again == fp and xml.stat().st_mtime_ns == before  # loaded from the cache, not exported again
    assert [p.name for p in (export_cache / "exports").iterdir()] == [fp]  # no staging folder left


@needs_openvino
def test_openvino_vectors_match_torch(openvino_model, migrator, bigbasket):
    """As a run compiles it (OpenVINO's default precision: bf16 on a CPU with AMX / AVX512-BF16)."""
    texts = bigbasket["product"].drop_nulls().head(300).to_list()
    model, _ = openvino_model
    ov = model.encode(texts, normalize_embeddings=True)
    pt = migrator.encoder.model.encode(texts, normalize_embeddings=True)
    cosine = (ov * pt).sum(axis=1)
    assert cosine.min() > 0.9999, cosine.min()  # 0.99997 when written (bf16 there), 1.0 in fp32


@needs_openvino
def _food_branch(folder: Path) -> Path:
    """The sample taxonomy's food branch (364 categories): the sample's products are groceries, and
    a run with another backend encodes every category text again (its own fingerprint)."""
    lines = TAXONOMY.read_text(encoding="utf-8").splitlines(keepends=True)
    path = folder / "food.txt"
    path.write_text("".join(line for line in lines if line.startswith("#")
                            or " - Food, Beverages & Tobacco" in line), encoding="utf-8")
    return path


def test_migrate_with_openvino_maps_like_torch(export_cache, migrator, tmp_path):
    food = _food_branch(tmp_path)
    settings = MigrationSettings(source=SAMPLE, target_taxonomy=food, source_category="category,sub_category",
                                 progress=False)
    torch_run = run_migration(settings, migrator)
    result = CliRunner().invoke(main, ["migrate", str(SAMPLE), "--target-taxonomy", str(food),
                                       "--source-category", "category,sub_category", "--backend", "openvino",
                                       "-o", str(tmp_path / "mapping.csv"), "-q"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    import polars as pl

    ov = pl.read_csv(tmp_path / "mapping.csv", infer_schema=False)
    assert ov.height == torch_run.mapping.height
    same = dict(zip(torch_run.mapping["source_id"], torch_run.mapping["target_category"]))
    agree = np.mean([same[i] == c for i, c in zip(ov["source_id"], ov["target_category"])])
    assert agree >= 0.99, agree


@pytest.fixture(scope="module")
def int8_model(export_cache, tmp_path_factory):
    """The bundled encoder quantized to int8 through the CLI, calibrated on 100 of the sample catalog's
    texts (NNCF runs the model on each: 200 took 5 s more for the same top-1 in the BigBasket check,
    0.694 against torch's 0.697)."""
    out = tmp_path_factory.mktemp("quantized") / "retail-int8"
    result = CliRunner().invoke(main, ["quantize", "--backend", "openvino", "--calibration", str(SAMPLE), "--samples",
                                       "100", "-o", str(out), "-q"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out, result.output


@needs_openvino
def test_quantize_writes_an_int8_model_folder_with_its_card(int8_model):
    out, output = int8_model
    record = json.loads((out / RECORD).read_text())
    assert record["samples"] == 100 and record["backend"] == "openvino" and "NNCF" in record["quantization"]
    assert [f["file"] for f in record["calibration_files"]] == [SAMPLE.name]
    assert list(out.glob("openvino/openvino_model*.xml")) and not list(out.glob("*.safetensors"))
    card = (out / "README.md").read_text()
    assert record["base_model_fingerprint"] in card and "--backend openvino" in card
    assert f"saved {out}" in output and fingerprint(out) in output
    xml = next(out.glob("openvino/openvino_model*.xml")).read_text()
    assert "FakeQuantize" in xml or "FakeConvert" in xml or "i8" in xml  # int8 ranges are in the graph


def labelled_top1_beside_torch(folder: Path, backend: str, bigbasket, migrator,
                               tmp_path: Path) -> tuple[float, float]:
    """(top-1 of ``folder`` run with ``backend``, top-1 of torch fp32) of 320 BigBasket products onto
    1,280 labelled ones (a seeded sample): an int8 folder's accuracy beside the model it came from."""
    frame = bigbasket.select("index", "product", "brand", "category", "sub_category").sample(1600, seed=1)
    frame.head(1280).write_csv(tmp_path / "target.csv")
    frame.tail(320).drop("category", "sub_category").write_csv(tmp_path / "source.csv")
    settings = MigrationSettings(source=tmp_path / "source.csv", target_catalog=tmp_path / "target.csv",
                                 target_category="category,sub_category",
                                 encoder=EncoderSettings(model=str(folder), backend=backend), progress=False)
    result = run_migration(settings)
    assert result.summary_dict()["Model fingerprint"] == f"{fingerprint(folder)}-{backend}"
    truth = dict(zip(frame["index"], frame["category"] + " > " + frame["sub_category"]))

    def top1(mapping) -> float:
        return float(np.mean([truth[i] == t for i, t in zip(mapping["source_id"], mapping["target_category"])]))

    base = run_migration(replace(settings, encoder=EncoderSettings()), migrator)
    assert result.mapping.height == base.mapping.height
    return top1(result.mapping), top1(base.mapping)


@needs_openvino
def test_int8_folder_maps_bigbasket_like_torch(int8_model, bigbasket, migrator, tmp_path):
    """Onto a labelled target catalog the int8 tier's top-1 stays within a point of torch's (0.694 and
    0.697 when written)."""
    int8, base = labelled_top1_beside_torch(int8_model[0], "openvino", bigbasket, migrator, tmp_path)
    assert int8 >= base - 0.01, (int8, base)


@needs_openvino
def test_quantize_refuses_an_existing_folder_before_any_work(int8_model):
    out, _ = int8_model
    xml = next(out.glob("openvino/openvino_model*.xml"))
    before = xml.stat().st_mtime_ns
    result = CliRunner().invoke(main, ["quantize", "--backend", "openvino", "--calibration", str(SAMPLE), "-o",
                                       str(out)])
    assert result.exit_code == 1 and "already exists" in result.output and "--overwrite" in result.output
    assert xml.stat().st_mtime_ns == before



@needs_openvino
def test_runtime_encoder_gives_sentence_transformers_vectors(openvino_model, export_cache, migrator, bigbasket):
    """The OpenVINO runtime encoder (no torch) on the exported IR, computing in fp32: the vectors of
    sentence-transformers in torch fp32, long, padded and empty texts included."""
    model, fp = openvino_model
    texts = [*bigbasket["product"].drop_nulls().head(120).to_list(), "  padded  ", "", "x " * 400,
             "Café crème brûlée 250g"]
    runtime = OpenVINORuntimeEncoder(export_cache / "exports" / fp, inference_precision="f32")
    torch_model = migrator.encoder.model._model  # not the session's memory of vectors: the model itself
    assert runtime.max_seq_length == torch_model.max_seq_length == model.max_seq_length
    assert runtime.get_sentence_embedding_dimension() == 384
    # batches of 16, as the TorchScript runtime's test: the batch holding the 400-word text is padded
    # to the 256 tokens it keeps, and its cost is the batch's size (64: 14.7 s for this test, 16: 5.5 s)
    ours = runtime.encode(texts, batch_size=16, normalize_embeddings=True)
    theirs = torch_model.encode(texts, batch_size=16, normalize_embeddings=True, convert_to_numpy=True)
    assert np.abs(ours - theirs).max() < 1e-5, np.abs(ours - theirs).max()  # 2e-7 when written
    one = runtime.encode(texts[0], normalize_embeddings=True)  # one string: one vector, as sentence-transformers
    assert one.shape == (384,) and np.abs(one - theirs[0]).max() < 1e-5
    # the next process reads the model compiled for this machine, and gets the same vectors
    assert any((export_cache / "openvino-compiled").iterdir())
    again = OpenVINORuntimeEncoder(export_cache / "exports" / fp, inference_precision="f32")
    assert np.array_equal(again.encode(texts, batch_size=16, normalize_embeddings=True), ours)


@needs_openvino
def test_the_openvino_encoder_serves_sentence_transformers_evaluators(openvino_model, migrator):
    """taxmig evaluate --backend openvino hands the model to sentence-transformers' evaluators: they
    read its similarity function, pass their own encode options and leave their metrics on it."""
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

    model, _ = openvino_model
    left = ["Amul Taaza Toned Milk 1 L", "Dark Chocolate 70% Cocoa Bar", "Basmati Rice 5 kg", "Dettol Soap"]
    right = ["Toned milk, 1 litre pouch", "Cocoa dark chocolate bar", "Wireless earbuds", "Shampoo 200 ml"]
    scores = [1.0, 0.9, 0.0, 0.2]
    evaluator = EmbeddingSimilarityEvaluator(left, right, scores, name="pairs", show_progress_bar=False)
    ours = evaluator(model)
    theirs = EmbeddingSimilarityEvaluator(left, right, scores, name="pairs", show_progress_bar=False)(
        migrator.encoder.model._model)
    assert model.similarity_fn_name == "cosine"
    assert ours["pairs_spearman_cosine"] == pytest.approx(theirs["pairs_spearman_cosine"])
    assert model.model_card_data.metrics["pairs"] == ours
    short = model.encode(left, truncate_dim=64, normalize_embeddings=True)
    assert short.shape == (4, 64) and np.allclose(np.linalg.norm(short, axis=1), 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="float32 only"):
        model.encode(left, precision="int8")


@needs_openvino
def test_a_layout_openvino_cannot_run_is_refused_with_the_reason(monkeypatch, tmp_path):
    """A model the runtime encoder cannot run (here: a Dense layer after the pooling) with --backend
    openvino: a ModelError naming why, before any export, and the flag that runs it."""
    monkeypatch.setenv(EXPORTS_ENV, str(tmp_path / "cache"))
    folder = tmp_path / "dense"
    shutil.copytree(resolve_model(None).location, folder)
    modules = json.loads((folder / "modules.json").read_text())
    (folder / "modules.json").write_text(json.dumps([*modules, {"idx": 3, "name": "3", "path": "3_Dense",
                                                                 "type": "sentence_transformers.models.Dense"}]))
    with pytest.raises(ModelError) as caught:
        load_encoder(resolve_model(str(folder)), backend="openvino")
    assert "cannot be exported to OpenVINO" in str(caught.value) and "Dense" in str(caught.value)
    assert "--backend torch" in caught.value.hint
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").rglob("*.xml"))
    # a folder holding an IR of another layout (prompts) is refused the same way
    plain = _plain_openvino_folder(tmp_path)
    (plain / "openvino" / "openvino_model.bin").write_bytes(b"\0" * 16)  # the stand-in IR's weights
    st_config = plain / "config_sentence_transformers.json"
    st_config.write_text(json.dumps({**json.loads(st_config.read_text()), "prompts": {"query": "query: "}}))
    with pytest.raises(ModelError) as caught:
        load_encoder(resolve_model(str(plain)), backend="openvino")
    assert "cannot run with --backend openvino: the model has prompts" in str(caught.value)


@needs_openvino
def test_openvino_night_encodes_without_importing_torch(export_cache, tmp_path):
    """A night that encodes a few changed products of an --backend openvino state runs in a fresh
    process that never imports torch, transformers or sentence-transformers (the 8-9 s they cost
    is most of such a night)."""
    heavy, report = _edited_night_in_a_fresh_process(tmp_path, export_cache, "--backend", "openvino")
    assert heavy == []
    assert report["embedding"]["encoded"] == 3 and report["counts"]["text_changed"] == 3


def test_precision_auto_is_bf16_only_where_the_cpu_computes_it(monkeypatch):
    """--precision auto (the default): $TAXMIG_PRECISION when set, else bf16 for torch on a CPU with
    AMX / AVX512-BF16, fp32 on a CPU that would emulate bf16, on a GPU and with OpenVINO; the
    fingerprint says which (caches apart); an explicit precision is kept as given."""
    import models.registry as registry
    from models.registry import PRECISION_ENV, lazy_encoder, resolve_model, resolve_precision

    ref = resolve_model(None)
    assert resolve_precision("auto", "torch", "cpu") == "fp32"  # the suite's TAXMIG_PRECISION
    monkeypatch.setenv(PRECISION_ENV, "bf16")
    assert resolve_precision("auto", "torch", "cpu") == "bf16" and resolve_precision("fp32") == "fp32"
    monkeypatch.delenv(PRECISION_ENV)
    for computes, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(registry, "cpu_computes_bf16", lambda computes=computes: computes)
        assert resolve_precision("auto", "torch", "cpu") == expected
        assert resolve_precision("auto", "openvino", "cpu") == "fp32"
        assert resolve_precision("auto", "torch", "cuda") == "fp32"
        assert resolve_precision("fp32", "torch", "cpu") == "fp32"
        assert resolve_precision("bf16", "torch", "cpu") == "bf16"
        fp = lazy_encoder(ref, device="cpu")[1]
        assert fp.endswith("-bf16") == (expected == "bf16")
        assert lazy_encoder(ref, device="cpu", precision="fp32")[1] == fp.removesuffix("-bf16")


def test_the_cpu_flags_say_whether_bf16_is_computed_in_hardware(tmp_path):
    """cpu_flags reads the flags line of /proc/cpuinfo; amx_bf16 or avx512_bf16 among them: bf16
    in hardware; no such file: None (torch's probes decide)."""
    from models.registry import BF16_CPU_FLAGS, cpu_flags

    for flags, expected in (("fpu sse avx2 avx512f avx512_bf16", True), ("fpu sse amx_tile amx_bf16", True),
                            ("fpu sse avx2 avx512f avx512_vnni", False)):
        info = tmp_path / "cpuinfo"
        info.write_text(f"processor\t: 0\nvendor_id\t: x\nflags\t\t: {flags}\nbugs\t\t: spectre\n")
        assert cpu_flags(info) == frozenset(flags.split())
        assert bool(BF16_CPU_FLAGS & cpu_flags(info)) is expected
    assert cpu_flags(tmp_path / "missing") is None


def test_int8_is_called_slow_only_on_a_cpu_known_to_lack_int8_dot_products(tmp_path):
    """int8_slow_here: the flags list none of VNNI / AVX-VNNI / AMX-INT8 (an AVX2-only CPU, where the
    int8 model measured slower than torch fp32); unreadable flags claim nothing."""
    from models.registry import int8_slow_here

    info = tmp_path / "cpuinfo"
    for flags, expected in (("fpu sse avx2 fma", True), ("fpu avx2 avx512f avx512_vnni", False),
                            ("fpu avx2 avx_vnni", False), ("fpu amx_tile amx_int8 amx_bf16", False)):
        info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        assert int8_slow_here(info) is expected, flags
    assert int8_slow_here(tmp_path / "missing") is False
