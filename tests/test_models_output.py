"""models.resolve_model / fingerprint on the bundled model folder (never loaded), and output safety."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from migrate.core.files import atomic_path, check_output, output_paths
from migrate.errors import ModelError, OutputExistsError, TaxmigError
from models import BASE_MODEL_NAME, fingerprint, resolve_model
from models.registry import bundled_model_path


@pytest.fixture(scope="module")
def bundled() -> Path:
    return bundled_model_path()


@pytest.mark.parametrize("value", [None, "", "base", "default", "all-MiniLM-L6-v2", "ALL-MINILM-L6-V2",
                                   "sentence-transformers/all-MiniLM-L6-v2", "  base  "])
def test_base_aliases_resolve_to_the_bundled_folder(value, bundled):
    ref = resolve_model(value)
    assert ref.is_local
    assert ref.name == f"{BASE_MODEL_NAME} (bundled)"
    assert Path(ref.location) == bundled
    assert (bundled / "modules.json").is_file()
    assert (bundled / "model.safetensors").is_file()
    modules = json.loads((bundled / "modules.json").read_text())
    assert [m["type"] for m in modules][:2] == ["sentence_transformers.models.Transformer",
                                                "sentence_transformers.models.Pooling"]


@pytest.mark.parametrize("value", ["./nope", "models/nope", "/no/such/model", "~/no-such-model-folder",
                                   "a/b/c", "..\\nope"])
def test_missing_folder_is_an_error_not_a_download(value, monkeypatch):
    # any network use would fail loudly: the hub client is never touched by resolve_model
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub

    def no_hub(*args, **kwargs):
        raise AssertionError("resolve_model reached the model hub")

    for name in ("snapshot_download", "hf_hub_download", "model_info", "repo_exists"):
        monkeypatch.setattr(huggingface_hub, name, no_hub, raising=False)
    with pytest.raises(ModelError) as err:
        resolve_model(value)
    assert "does not exist" in str(err.value)
    assert value.strip() in str(err.value)
    assert "--model" in str(err.value)


def test_hub_id_stays_a_hub_reference_without_network():
    ref = resolve_model("someone/some-model")
    assert not ref.is_local and ref.location == "someone/some-model"


def test_folder_without_modules_json_is_rejected(tmp_path):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "README.md").write_text("not a model")
    with pytest.raises(ModelError, match="not a sentence-transformers model folder"):
        resolve_model(tmp_path / "half")


def test_fingerprint_is_content_based(bundled, tmp_path):
    fp = fingerprint(bundled)
    assert re.fullmatch(r"[0-9a-f]{16}", fp)
    assert fingerprint(str(bundled)) == fp  # str and Path alike

    copy = tmp_path / "my-copy-under-another-name"
    shutil.copytree(bundled, copy)
    assert resolve_model(copy).location == str(copy.resolve())
    assert resolve_model(copy).name == copy.name
    assert fingerprint(copy) == fp

    # training checkpoints inside the folder do not count
    (copy / "checkpoint-500").mkdir()
    (copy / "checkpoint-500" / "model.safetensors").write_bytes(b"\0" * 64)
    assert fingerprint(copy) == fp
    # non-weight files do not count either
    (copy / "README.md").write_text("edited card")
    assert fingerprint(copy) == fp

    weights = copy / "model.safetensors"
    size = weights.stat().st_size
    with weights.open("r+b") as fh:
        fh.seek(size - 100)
        byte = fh.read(1)
        fh.seek(size - 100)
        fh.write(bytes([byte[0] ^ 0xFF]))
    flipped = fingerprint(copy)
    assert re.fullmatch(r"[0-9a-f]{16}", flipped)
    assert flipped != fp
    assert fingerprint(bundled) == fp  # the original is untouched


def test_fingerprint_of_a_folder_without_weights(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelError, match="no weight files"):
        fingerprint(tmp_path)


# --- output ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["mapping.xlsx", "mapping.csv", "mapping.parquet", "MAPPING.CSV"])
def test_check_output_accepts_new_paths(tmp_path, name):
    assert check_output(tmp_path / "sub" / name, overwrite=False) == tmp_path / "sub" / name


@pytest.mark.parametrize("name", ["mapping.xlsx", "mapping.csv", "mapping.parquet"])
def test_existing_output_needs_overwrite(tmp_path, name):
    path = tmp_path / name
    path.write_text("previous run")
    with pytest.raises(OutputExistsError) as err:
        check_output(path, overwrite=False)
    assert str(path) in str(err.value)
    assert "--overwrite" in str(err.value)
    assert check_output(path, overwrite=True) == path
    assert path.read_text() == "previous run"  # checking never touches the file


@pytest.mark.parametrize("name", ["mapping.json", "mapping.xls", "mapping", "mapping.txt"])
def test_unknown_output_extension(tmp_path, name):
    with pytest.raises(TaxmigError) as err:
        check_output(tmp_path / name, overwrite=True)
    assert not isinstance(err.value, OutputExistsError)
    msg = str(err.value)
    assert "unknown output format" in msg and name in msg
    assert ".xlsx" in msg and ".csv" in msg and ".parquet" in msg


@pytest.mark.parametrize("sidecar", ["mapping.rejects.csv", "mapping.summary.json"])
def test_csv_output_refuses_when_a_sidecar_exists(tmp_path, sidecar):
    (tmp_path / sidecar).write_text("from an earlier run")
    with pytest.raises(OutputExistsError) as err:
        check_output(tmp_path / "mapping.csv", overwrite=False)
    assert str(tmp_path / sidecar) in str(err.value)
    check_output(tmp_path / "mapping.csv", overwrite=True)
    # an .xlsx output has no sidecars
    check_output(tmp_path / "mapping.xlsx", overwrite=False)


def test_output_paths():
    assert output_paths(Path("out/m.parquet")) == [Path("out/m.parquet"), Path("out/m.rejects.parquet"),
                                                   Path("out/m.summary.json")]
    assert output_paths(Path("out/m.xlsx")) == [Path("out/m.xlsx")]


def test_output_path_that_is_a_folder(tmp_path):
    (tmp_path / "out.xlsx").mkdir()
    with pytest.raises(TaxmigError, match="is a folder"):
        check_output(tmp_path / "out.xlsx", overwrite=True)


def test_atomic_path_leaves_the_target_untouched_when_the_block_fails(tmp_path):
    target = tmp_path / "mapping.csv"
    target.write_text("original,content\n1,2\n")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as tmp:
            assert tmp.parent == tmp_path and tmp != target
            tmp.write_text("half written")
            raise RuntimeError("disk full")
    assert target.read_text() == "original,content\n1,2\n"
    assert sorted(os.listdir(tmp_path)) == ["mapping.csv"]  # no temporary file left behind


def test_atomic_path_with_no_previous_file_creates_nothing_on_failure(tmp_path):
    target = tmp_path / "new" / "mapping.parquet"
    with pytest.raises(ValueError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"PAR1")
            raise ValueError("boom")
    assert not target.exists()
    assert os.listdir(tmp_path / "new") == []


def test_atomic_path_replaces_on_success(tmp_path):
    target = tmp_path / "mapping.csv"
    target.write_text("old")
    with atomic_path(target) as tmp:
        tmp.write_text("new")
        assert target.read_text() == "old"  # not replaced until the block ends
    assert target.read_text() == "new"
    assert os.listdir(tmp_path) == ["mapping.csv"]
