"""The pieces under the nightly job, without the model: embedding cache, state generations and
history, decision staleness, target diffs, remembered settings."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from migrate.core.embedding import Embedder
from migrate.core.embedding_cache import EmbeddingCache
from migrate.mapping.settings import MigrationSettings
from migrate.nightly.changes import diff_targets, target_snapshot
from migrate.nightly.decisions import material_change, without_quantities
from migrate.nightly.reconcile import settings_for_night
from migrate.nightly.state import DECISION_SCHEMA, PRODUCT_SCHEMA, TARGET_SCHEMA, NewGeneration, StateError, StateStore
from tests.conftest import SAMPLES, data_file


class CountingModel:
    """A stand-in encoder that records what it was asked to encode."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def encode(self, texts, **kw):
        self.seen += list(texts)
        rng = np.random.default_rng(len(self.seen))
        v = rng.normal(size=(len(texts), 8)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def get_embedding_dimension(self) -> int:
        return 8


def test_embedding_cache_encodes_each_text_once_per_model(tmp_path):
    texts = pl.read_csv(SAMPLES / "bigbasket_sample.csv", infer_schema=False)["product"].to_list()[:50]
    model = CountingModel()
    with EmbeddingCache(tmp_path / "e.sqlite") as cache:
        first = Embedder(model, progress=False, cache=cache, cache_key="fp-a").encode(texts)
    assert len(model.seen) == len(set(texts))
    with EmbeddingCache(tmp_path / "e.sqlite") as cache:  # reopened: persisted
        again = Embedder(model, progress=False, cache=cache, cache_key="fp-a")
        second = again.encode([*texts[10:], "A new product"])
        assert again.stats["encoded"] == 1 and again.stats["cached"] == len(set(texts[10:]))
        np.testing.assert_array_equal(second[: len(texts) - 10], first[10:])
        other = Embedder(model, progress=False, cache=cache, cache_key="fp-b")  # another model: nothing reused
        other.encode(texts[:5])
        assert other.stats["encoded"] == 5
        assert cache.count("fp-a") == len(set(texts)) + 1 and cache.count("fp-b") == 5


def test_embedding_cache_scan_and_lookups_give_the_same_vectors(tmp_path, monkeypatch):
    """Many texts are read in one scan of the model's rows, few by lookups: the same rows either way,
    in the order asked, repeats and missing texts included, other models' vectors never mixed in."""
    import migrate.core.embedding_cache as embedding_cache

    texts = pl.read_csv(SAMPLES / "bigbasket_sample.csv", infer_schema=False)["product"].to_list()
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(texts), 8)).astype(np.float32)
    asked = [*texts[:40], "not cached", texts[3], *texts[-30:]]
    with EmbeddingCache(tmp_path / "e.sqlite") as cache:
        cache.put("fp-a", texts, vectors)
        cache.put("fp-b", texts, -vectors)
        monkeypatch.setattr(embedding_cache, "SCAN_FROM", 10 ** 9)
        looked_up, missing = cache.get("fp-a", asked)
        monkeypatch.setattr(embedding_cache, "SCAN_FROM", 1)
        monkeypatch.setattr(embedding_cache, "SCAN_SHARE", 0.0)
        scanned, missing_scanned = cache.get("fp-a", asked)
        assert cache._size("fp-a") == cache.count("fp-a") == len(set(texts))  # the size hint, counted once
        cache.put("fp-a", ["a text not seen before", texts[0]], vectors[:2])  # one new, one kept as it was
        assert cache._size("fp-a") == cache.count("fp-a") == len(set(texts)) + 1
    assert missing == missing_scanned == [40]
    np.testing.assert_array_equal(scanned, looked_up)
    first = {t: i for i, t in reversed(list(enumerate(texts)))}
    np.testing.assert_array_equal(scanned, vectors[[first[t] for t in asked if t != "not cached"]])


def _generation(n: int, run: str) -> NewGeneration:
    products = pl.DataFrame({"product_id": [str(i) for i in range(n)], "needs_review": [False] * n})
    return NewGeneration(meta={"settings": {}, "run": {"run_id": run}}, products=products,
                         decisions=pl.DataFrame(schema=DECISION_SCHEMA), targets=pl.DataFrame(schema=TARGET_SCHEMA))


def test_generations_commit_atomically_and_old_ones_are_pruned(tmp_path):
    store = StateStore.create(tmp_path / "s")
    store.commit(_generation(1, "r1"))
    with pytest.raises(StateError, match="already holds"):
        StateStore.create(tmp_path / "s")
    for i in range(2, 9):
        store.commit(_generation(i, f"r{i}"))
    assert store.load().run_id == "r8" and store.load().products.height == 8
    assert len(store.generation_names()) == 5
    assert list(store.load().products.columns) == list(PRODUCT_SCHEMA)  # conformed to the schema
    (tmp_path / "s" / "CURRENT").write_text("000099-gone\n")
    with pytest.raises(StateError, match="which is missing"):
        store.load()
    with pytest.raises(StateError, match="does not exist"):
        StateStore.open(tmp_path / "nothing")


def test_history_survives_a_line_cut_short_by_a_crash(tmp_path):
    store = StateStore.create(tmp_path / "s")
    store.append_history({"run_id": "a", "outcome": "ok"})
    with open(store.history_path, "a") as fh:
        fh.write('{"run_id": "b", "outc')  # the process died mid-write
    store.append_history({"run_id": "c", "outcome": "ok"})
    assert [h["run_id"] for h in store.history()] == ["a", "c"]


@pytest.mark.parametrize("old, new, changed", [
    ("Tru Mango", "Tru Mango - Pack of 2", False),
    ("Ponds Starlight Talc 300 g", "Ponds Starlight Talc", False),
    ("Amul Butter 500 g", "AMUL butter, 1 kg", False),
    ("Toor/Arhar Dal", "Dark Chocolate Truffle Cake", True),
])
def test_pack_sizes_never_make_a_decision_stale(old, new, changed):
    assert material_change(old, "A > B", new, "A > B", 0.85, similarity=0.5 if changed else None)[0] is changed
    assert material_change(old, "A > B", old, "A > C", 0.85, similarity=1.0) == (True, 0.0)


def test_target_renames_by_taxonomy_id_and_by_products_moving_together():
    google = data_file("google_product_taxonomy", "taxonomy-with-ids.en-US.txt")
    lines = [ln.split(" - ", 1) for ln in google.read_text(encoding="utf-8").splitlines()[1:400] if " - " in ln]
    ids = {path: i for i, path in lines}
    cats = list(ids)
    before = target_snapshot(cats, ids, [])
    renamed = cats[5] + " (new name)"
    after_cats = [renamed if c == cats[5] else c for c in cats if c != cats[7]] + ["Brand New > Category"]
    after_ids = {renamed if c == cats[5] else c: i for c, i in ids.items()}
    changes = diff_targets(before, target_snapshot(after_cats, after_ids, []))
    assert changes.renamed == {cats[5]: renamed} and "taxonomy id" in changes.rename_basis[cats[5]]
    assert changes.removed == [cats[7]] and changes.added == ["Brand New > Category"]
    # a catalog target: no ids, the products of "A > Old" now all sit under "A > New"
    prods = [(str(i), f"product {i}", "A > Old" if i < 10 else "A > Keep") for i in range(30)]
    moved = [(p, t, "A > New" if c == "A > Old" else c) for p, t, c in prods]
    changes = diff_targets(target_snapshot(["A > Old", "A > Keep"], {}, prods),
                           target_snapshot(["A > New", "A > Keep"], {}, moved))
    assert changes.renamed == {"A > Old": "A > New"} and changes.products_changed == 10
    # half of them moving is a removal plus an addition, not a rename
    split = [(p, t, ("A > New" if int(p) < 5 else "A > Keep") if c == "A > Old" else c) for p, t, c in prods]
    changes = diff_targets(target_snapshot(["A > Old", "A > Keep"], {}, prods),
                           target_snapshot(["A > New", "A > Keep"], {}, split))
    assert changes.renamed == {} and changes.removed == ["A > Old"] and changes.added == ["A > New"]


def test_a_new_target_option_replaces_the_remembered_target(tmp_path):
    remembered = MigrationSettings(source="a.csv", target_catalog=SAMPLES / "bigbasket_sample.csv",
                                   target_category="category,sub_category", source_category="category,sub_category",
                                   ).to_dict()
    night = settings_for_night(json.loads(json.dumps(remembered)), "b.csv", {})
    assert night.target_catalog == remembered["target_catalog"] and night.source_category == "category,sub_category"
    night = settings_for_night(remembered, "b.csv", {"target_taxonomy": "t.txt", "thresholds": {"min_margin": 0.2}})
    assert night.target_catalog is None and night.target_category is None and night.target_taxonomy == "t.txt"
    assert night.thresholds.min_margin == 0.2 and night.thresholds.target_precision == 0.97
    assert night.source_category == "category,sub_category" and str(night.source) == "b.csv"
    assert without_quantities("Coca Cola 2 x 750 ml") == "coca cola"


def test_a_state_of_format_1_with_flat_encoder_settings_is_read_and_its_encoder_kept(tmp_path):
    """State format 2 nests the encoder fields (EncoderSettings); a folder written before keeps
    working: its generation loads and its remembered model, backend and batch size hold tonight."""
    store = StateStore.create(tmp_path / "s")
    generation = store.commit(_generation(1, "r1"))
    flat = {k: v for k, v in MigrationSettings(source="a.csv", target_taxonomy="t.txt").to_dict().items()
            if k != "encoder"}
    flat.update(model="/models/retail", backend="openvino", batch_size=16, device=None)
    meta = json.loads((generation.folder / "meta.json").read_text())
    (generation.folder / "meta.json").write_text(json.dumps({**meta, "state_format": 1, "settings": flat}))
    loaded = store.load()
    assert loaded.meta["state_format"] == 1
    night = settings_for_night(loaded.meta["settings"], "b.csv", {"encoder": {"batch_size": 8}})
    assert (night.encoder.model, night.encoder.backend, night.encoder.batch_size) == ("/models/retail", "openvino", 8)
    assert MigrationSettings.from_dict(flat, source="b.csv").encoder.backend == "openvino"
    assert night.to_dict()["encoder"]["model"] == "/models/retail" and "model" not in night.to_dict()
    meta["state_format"] = 99
    (generation.folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(StateError, match="state format 99"):
        store.load()


def test_a_state_remembering_the_old_name_k_reads_it_as_neighbours():
    """ScoringParams.k was renamed neighbours (the --neighbours option): the meta.json of a state
    folder written before keeps its value, and a night's --neighbours still replaces it."""
    remembered = MigrationSettings(source="a.csv", target_taxonomy="t.txt").to_dict()
    remembered["scoring"]["k"] = remembered["scoring"].pop("neighbours") + 5
    old = json.loads(json.dumps(remembered))
    assert MigrationSettings.from_dict(old, source="b.csv").scoring.neighbours == 25
    assert settings_for_night(old, "b.csv", {}).scoring.neighbours == 25
    night = settings_for_night(old, "b.csv", {"scoring": {"neighbours": 30}})
    assert night.scoring.neighbours == 30 and "k" not in night.to_dict()["scoring"]


def test_the_cli_scoring_options_are_scoring_params_fields():
    from dataclasses import fields

    from migrate.cli import SCORING_PARAMS
    from migrate.mapping.scoring import ScoringParams

    assert set(SCORING_PARAMS) <= {f.name for f in fields(ScoringParams)}


def test_the_cli_encoder_options_are_the_encoder_settings_fields():
    from migrate.cli import ENCODER_PARAMS
    from migrate.core.encoder import ENCODER_FIELDS

    assert ENCODER_PARAMS == ENCODER_FIELDS


def test_a_night_guesses_whether_it_will_encode_with_torch(tmp_path):
    """The encoder worker is started when tonight's catalog differs from the last night's file and
    the remembered (or given) encoder is torch in fp32; any doubt about the state answers yes."""
    from migrate.core.hashing import file_fingerprint
    from migrate.nightly.state import GENERATIONS, may_encode_with_torch

    catalog = tmp_path / "live.csv"
    catalog.write_text("id,product\n1,Amul Butter\n")
    state = tmp_path / "state"
    assert may_encode_with_torch(state, catalog, {})  # no state to read: yes
    folder = state / GENERATIONS / "g1"
    folder.mkdir(parents=True)
    (state / "CURRENT").write_text("g1")
    meta = {"settings": {"encoder": {"backend": "torch", "precision": "fp32"}},
            "run": {"inputs": {"catalog_fingerprint": file_fingerprint(catalog)}}}
    (folder / "meta.json").write_text(json.dumps(meta))
    assert not may_encode_with_torch(state, catalog, {})  # the same file as last night
    catalog.write_text("id,product\n1,Amul Butter 500 g\n")
    assert may_encode_with_torch(state, catalog, {})
    assert not may_encode_with_torch(state, catalog, {"backend": "openvino"})
    assert not may_encode_with_torch(state, catalog, {"precision": "bf16"})
    assert not may_encode_with_torch(state, catalog, {"device": "cuda"})
    assert not may_encode_with_torch(state, tmp_path / "missing.csv", {})  # the night reports it
    (folder / "meta.json").write_text("{not json")
    assert may_encode_with_torch(state, catalog, {})


def test_a_mistyped_decision_suggests_the_whole_path_it_means():
    from migrate.core.taxonomy import load_taxonomy
    from migrate.nightly.review import near_category
    from tests.conftest import SAMPLES

    categories = load_taxonomy(SAMPLES / "google_taxonomy_subset.txt").categories
    meant = "Health & Beauty > Personal Care > Hair Care > Shampoo & Conditioner"
    assert meant in categories
    assert near_category(meant[:-3], categories) == meant  # a typo in the leaf of a full path
    assert near_category(meant.replace("Hair Care", "Hiar Care"), categories) == meant
    assert near_category("helth & beauty", categories) == "Health & Beauty"
    assert near_category("zzzz qqqq", categories) is None


def test_a_meta_json_of_the_wrong_shape_is_a_state_error_naming_every_problem(tmp_path):
    import json

    from migrate.nightly.state import StateError, StateStore

    folder = tmp_path / "state" / "generations" / "g1"
    folder.mkdir(parents=True)
    (tmp_path / "state" / "CURRENT").write_text("g1")
    (folder / "meta.json").write_text(json.dumps({"settings": ["not", "an", "object"], "run": {"publish": "x"}}))
    with pytest.raises(StateError, match=r"settings is not an object; run\.publish is not a list"):
        StateStore(tmp_path / "state").read_meta("g1")
