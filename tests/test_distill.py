"""The static tier: ``taxmig distill`` on the bundled model with a real catalog's words, and the
distilled folder used as ``--model`` on real BigBasket rows."""

from __future__ import annotations

import json
import sys
from dataclasses import replace

import numpy as np
import pytest
from click.testing import CliRunner

from migrate.cli import main
from tests.conftest import SAMPLES
from train.derived import file_texts
from train.distill import catalog_words

SAMPLE = SAMPLES / "bigbasket_sample.csv"
TAXONOMY = SAMPLES / "google_taxonomy_subset.txt"


@pytest.fixture(scope="module")
def static_model(tmp_path_factory):
    """The bundled encoder distilled through the CLI, with the sample catalog's words (about 30 s)."""
    out = tmp_path_factory.mktemp("static") / "retail-static"
    result = CliRunner().invoke(main, ["distill", "-o", str(out), "--vocabulary", str(SAMPLE),
                                       "--vocabulary", str(TAXONOMY), "--min-count", "3", "-q"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out, result.output


def test_catalog_words_are_frequent_letter_words_most_frequent_first():
    texts = ["Dark Chocolate 70% bar", "dark chocolate-coated almonds 200g", "Dark Roast Coffee", "x1 AB"]
    assert catalog_words(texts, min_count=2) == ["dark", "chocolate"]
    assert catalog_words(texts, min_count=1, max_words=3) == ["dark", "chocolate", "almonds"]
    assert "coated" in catalog_words(texts, min_count=1)  # hyphens split words


def test_distill_writes_a_model_folder_with_its_card(static_model):
    out, output = static_model
    record = json.loads((out / "distill.json").read_text())
    words = catalog_words([*file_texts(SAMPLE), *file_texts(TAXONOMY)], min_count=3)
    assert record["added_words"] == len(words) > 100
    assert record["dimension"] == 256 and record["pca_dims"] == 256
    assert [f["file"] for f in record["vocabulary_files"]] == [SAMPLE.name, TAXONOMY.name]
    assert (out / "modules.json").is_file() and (out / "model.safetensors").is_file()
    card = (out / "README.md").read_text()
    assert record["base_model_fingerprint"] in card and "taxmig distill" in card
    assert f"with {len(words)} catalog words" in output and str(out) in output
    # a catalog word the encoder split into pieces is one token now
    from tokenizers import Tokenizer

    tokens = Tokenizer.from_file(str(out / "tokenizer.json")).encode("Fresho masala").tokens
    assert "masala" in tokens


def test_distilled_folder_is_a_model_for_migrate(static_model, bigbasket, migrator, tmp_path):
    """--model FOLDER with the static model: every row mapped, its name and fingerprint recorded, and
    onto a labelled target catalog its top-1 stays near the transformer's (BENCHMARKS.md, speed tiers)."""
    from migrate import EncoderSettings, MigrationSettings, run_migration
    from models import fingerprint

    out, _ = static_model
    frame = bigbasket.select("index", "product", "brand", "category", "sub_category").sample(2000, seed=1)
    frame.head(1600).write_csv(tmp_path / "target.csv")
    frame.tail(400).drop("category", "sub_category").write_csv(tmp_path / "source.csv")
    settings = MigrationSettings(source=tmp_path / "source.csv", target_catalog=tmp_path / "target.csv",
                                 target_category="category,sub_category",
                                 encoder=EncoderSettings(model=str(out)), progress=False)
    result = run_migration(settings)
    assert result.mapping.height + result.rejects.height == 400  # a BigBasket row with no name is a reject
    assert result.mapping.height >= 398
    assert result.summary_dict()["Model fingerprint"] == fingerprint(out)
    assert result.summary_dict()["Model"] == out.name
    truth = dict(zip(frame["index"], frame["category"] + " > " + frame["sub_category"]))

    def top1(mapping) -> float:
        return float(np.mean([truth[i] == t for i, t in zip(mapping["source_id"], mapping["target_category"])]))

    transformer = run_migration(replace(settings, encoder=EncoderSettings()), migrator)
    static, base = top1(result.mapping), top1(transformer.mapping)
    assert base > 0.6 and static > base - 0.05, (static, base)  # 0.630 vs 0.6525 on these 1,600 targets


def test_distill_refuses_an_existing_folder_before_any_work(static_model):
    out, _ = static_model
    before = (out / "model.safetensors").stat().st_mtime_ns
    result = CliRunner().invoke(main, ["distill", "-o", str(out)])
    assert result.exit_code == 1
    assert "already exists" in result.output and "--overwrite" in result.output
    assert (out / "model.safetensors").stat().st_mtime_ns == before


def test_distill_without_model2vec_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "model2vec.distill", None)
    result = CliRunner().invoke(main, ["distill", "-o", str(tmp_path / "m")])
    assert result.exit_code == 1
    assert "taxmig[static]" in result.output
    assert not (tmp_path / "m").exists()
