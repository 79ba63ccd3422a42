"""A state folder holds numbers and text, never code (issue 36): a payload planted in any of its
files -- a pickle whose unpickling creates a marker file, written under the file's name, an
object array in the .npz, an old-format ``target_side.pkl`` -- never runs when the next night reads
the folder; the night completes (fitting again what it cannot read) or stops with a one-line
taxmig error. And the fitted target side, kept as JSON and npz, is read back by the next night
and checked field by field."""

from __future__ import annotations

import json
import logging
import pickle
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from migrate.cli import main
from migrate.mapping.fitted_target import FittedTargetStore
from migrate.mapping.report import TARGET_SIDE_FITTED, TARGET_SIDE_READ
from migrate.nightly.reconcile import EXIT_OK, EXIT_REVIEW

SUBCATS = ["Skin Care", "Biscuits & Cookies", "Chocolates & Candies", "Tea", "Hair Care"]
COLUMNS = ["index", "product", "category", "sub_category", "brand"]
LIVE, TARGET = 6, 24  # products per subcategory: 30 live, 120 labelled target products
CATEGORY = "category,sub_category"


class Payload:
    """Unpickled, it opens (creates) ``marker``: any code could stand in its place."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "a")


def plant(path: Path, marker: Path) -> None:
    """Replace ``path`` by a payload: an npz whose array is an object array of it (what
    ``np.load(allow_pickle=True)`` would unpickle), any other file by the pickle itself."""
    path.unlink(missing_ok=True)
    if path.suffix == ".npz":
        with open(path, "wb") as fh:
            np.savez(fh, target_vectors=np.array([Payload(marker)], dtype=object))
    else:
        path.write_bytes(pickle.dumps(Payload(marker)))


def night(catalog: Path, state: Path, report: Path, *extra: object):
    return CliRunner().invoke(main, ["reconcile", str(catalog), "--state", str(state), "-o", str(report),
                                     *map(str, extra)])


def clean_ending(result) -> bool:
    """Completed (0 or 2), or stopped with a taxmig error: exit 1, one ``Error:`` line, no traceback,
    not the CLI's "a bug in taxmig" line for an unexpected exception."""
    if result.exit_code in (EXIT_OK, EXIT_REVIEW):
        return True
    return (result.exit_code == 1 and isinstance(result.exception, SystemExit) and "Error: " in result.output
            and "a bug in taxmig" not in result.output and "Traceback" not in result.output)


@pytest.fixture(scope="module")
def first_night(bigbasket, tmp_path_factory):
    """A state folder after ``taxmig reconcile --init --target-catalog`` on 30 live BigBasket
    products and 120 labelled target products (5 subcategories); the catalogs beside it."""
    frame = (bigbasket.filter(pl.col("product").is_not_null() & pl.col("sub_category").is_in(SUBCATS))
             .select(COLUMNS).unique(subset="product", keep="first", maintain_order=True)
             .with_columns(pl.int_range(pl.len()).over("sub_category").alias("n")))
    folder = tmp_path_factory.mktemp("no-code")
    live, target = folder / "live.csv", folder / "target.csv"
    frame.filter(pl.col("n") < LIVE).drop("n").write_csv(live)
    frame.filter((pl.col("n") >= LIVE) & (pl.col("n") < LIVE + TARGET)).drop("n").write_csv(target)
    state = folder / "state"
    result = night(live, state, folder / "r1.xlsx", "--init", "--target-catalog", target, "--target-category",
                   CATEGORY, "--source-category", CATEGORY, "-q")
    assert result.exit_code in (EXIT_OK, EXIT_REVIEW), result.output
    assert json.loads((folder / "r1.json").read_text())["target_side"] == TARGET_SIDE_FITTED
    return {"folder": folder, "live": live, "state": state}


def _copy(first_night, dest: Path) -> Path:
    shutil.copytree(first_night["state"], dest)
    return dest


def _files(state: Path) -> list[Path]:
    return sorted(p.relative_to(state) for p in state.rglob("*") if p.is_file())


def test_the_payload_runs_when_unpickled(tmp_path):
    """The planted files are live: unpickled, each would have run (so their not running below is the fix)."""
    for name in ("products.parquet", "target_side.npz"):
        marker = tmp_path / f"ran-{name}"
        plant(tmp_path / name, marker)
        if name.endswith(".npz"):
            with np.load(tmp_path / name, allow_pickle=True) as arrays:
                arrays["target_vectors"]
        else:
            pickle.loads((tmp_path / name).read_bytes())
        assert marker.exists()


def test_the_state_holds_no_pickle_and_the_next_night_reads_the_target_side(first_night, tmp_path):
    state = _copy(first_night, tmp_path / "state")
    files = _files(state)
    assert Path("target_side.json") in files and Path("target_side.npz") in files
    assert not any(f.suffix in (".pkl", ".pickle", ".pt", ".pth", ".joblib") for f in files)
    for name in files:
        head = (state / name).read_bytes()[:2]
        assert not head.startswith(b"\x80"), f"{name} looks like a pickle"
    with np.load(state / "target_side.npz", allow_pickle=False) as arrays:
        assert all(arrays[name].dtype != object for name in arrays.files)
    record = json.loads((state / "target_side.json").read_text())
    assert record["format"] == 3 and len(record["key"]) == 64 and record["classifier"] and record["lexical"]

    result = night(first_night["live"], state, tmp_path / "r2.xlsx", "-q")
    assert result.exit_code in (EXIT_OK, EXIT_REVIEW), result.output
    report = json.loads((tmp_path / "r2.json").read_text())
    assert report["target_side"] == TARGET_SIDE_READ  # the night's speed: the side is not fitted again
    assert report["counts"]["assignment_changed"] == 0 and report["embedding"]["encoded"] == 0


def test_a_payload_in_any_file_of_the_state_never_runs(first_night, tmp_path):
    """Each file of the state folder in turn (and an old-format target_side.pkl beside it every
    time) replaced by a payload, then the next night: no payload runs, and the night completes
    or stops with a taxmig error. A broken target side is fitted again; the night goes on."""
    marker = tmp_path / "payload-ran"
    files = _files(first_night["state"])
    assert len(files) >= 10 and Path("CURRENT") in files
    outcomes, unclean = {}, []
    for i, name in enumerate(files):
        state = _copy(first_night, tmp_path / f"state{i}")
        plant(state / name, marker)
        plant(state / "target_side.pkl", marker)
        report = tmp_path / f"r{i}.xlsx"
        result = night(first_night["live"], state, report)
        assert not marker.exists(), f"the payload in {name} ran"
        if not clean_ending(result):
            unclean.append(f"{name}: exit {result.exit_code}: {result.output[-1000:]}")
            continue
        outcomes[str(name)] = result.exit_code
        if name.name.startswith("target_side"):
            assert result.exit_code in (EXIT_OK, EXIT_REVIEW), result.output
            assert json.loads(report.with_suffix(".json").read_text())["target_side"] == TARGET_SIDE_FITTED
            assert "ignoring the kept target side" in result.output and "target_side.pkl" in result.output
            assert not (state / "target_side.pkl").exists()  # the new files replaced it
            with np.load(state / "target_side.npz", allow_pickle=False) as arrays:
                assert arrays["target_vectors"].dtype == np.float32
    assert not unclean, "\n".join(unclean)
    # the night read past what it can do without: the target side, the kept scores, the lock's record
    kept_scores = next(n for n in outcomes if n.endswith("/scores.parquet"))
    assert all(outcomes[n] in (EXIT_OK, EXIT_REVIEW)
               for n in ("target_side.json", "target_side.npz", "lock.owner", kept_scores))


def test_an_old_pickled_target_side_is_never_read(first_night, tmp_path):
    """A state written before format 3 keeps ``target_side.pkl`` only: ignored with a log line, the
    side fitted again and kept in the new files, the pickle removed."""
    state = _copy(first_night, tmp_path / "state")
    marker = tmp_path / "payload-ran"
    for name in ("target_side.json", "target_side.npz"):
        (state / name).unlink()
    plant(state / "target_side.pkl", marker)
    result = night(first_night["live"], state, tmp_path / "r2.xlsx")
    assert result.exit_code in (EXIT_OK, EXIT_REVIEW), result.output
    assert not marker.exists()
    assert "only the older format was kept" in result.output
    assert json.loads((tmp_path / "r2.json").read_text())["target_side"] == TARGET_SIDE_FITTED
    assert not (state / "target_side.pkl").exists() and (state / "target_side.npz").is_file()


# --- the store itself: every field checked -------------------------------------------------------

@pytest.fixture
def kept(first_night, tmp_path):
    """A copy of the first night's kept target side, its key and the target's sizes."""
    for name in ("target_side.json", "target_side.npz"):
        shutil.copy(first_night["state"] / name, tmp_path / name)
    record = json.loads((tmp_path / "target_side.json").read_text())
    with np.load(tmp_path / "target_side.npz") as arrays:
        sizes = {"products": len(arrays["target_vectors"]), "labels": len(arrays["label_vectors"]),
                 "categories": int(arrays["classifier.classes"].max()) + 1}
    return FittedTargetStore(tmp_path / "target_side.json"), record["key"], sizes


def _rewrite_arrays(store: FittedTargetStore, **changes) -> None:
    with np.load(store.arrays_path) as arrays:
        data = {name: arrays[name] for name in arrays.files}
    data.update(changes)
    data = {k: v for k, v in data.items() if v is not None}
    with open(store.arrays_path, "wb") as fh:
        np.savez(fh, **data)


def test_the_kept_side_reads_back_as_it_was_written(kept, tmp_path):
    store, key, sizes = kept
    fitted = store.get(key, **sizes)
    assert fitted is not None and fitted.classifier.usable and fitted.lexical.size == sizes["products"]
    again = FittedTargetStore(tmp_path / "again" / "target_side.json")
    again.put(key, fitted)
    refitted = again.get(key, **sizes)
    texts = ["Cadbury Dairy Milk Silk", "Tata Tea Premium 500 g", "Himalaya Neem Face Wash"]
    a, b = fitted, refitted
    for one, other in zip(a.classifier.vote(texts, 3), b.classifier.vote(texts, 3)):
        assert np.array_equal(one, other)
    for one, other in zip(a.lexical.search(texts, 5), b.lexical.search(texts, 5)):
        assert np.array_equal(one, other)
    features = np.array([[0.9, 0.3, 0.8, 0.5, 0.4, 0.7][: a.calibrator.coef.shape[1]]])
    assert np.array_equal(a.calibrator.predict(features), b.calibrator.predict(features))
    assert a.loo.thresholds == b.loo.thresholds and a.loo.products == b.loo.products
    assert np.array_equal(a.target_vectors, b.target_vectors) and np.array_equal(a.label_vectors, b.label_vectors)
    written, rewritten = (json.loads(s.path.read_text()) for s in (store, again))
    written.pop("written"), rewritten.pop("written")
    assert written == rewritten


@pytest.mark.parametrize("damage, why", [
    (lambda s: s.path.write_text("{not json"), "JSONDecodeError"),
    (lambda s: s.arrays_path.unlink(), "target_side.npz is missing"),
    (lambda s: s.arrays_path.write_bytes(b"PK\x03\x04 torn"), "ignoring the kept target side"),
    (lambda s: _rewrite_arrays(s, written=np.array("another write")), "come from different writes"),
    (lambda s: _rewrite_arrays(s, **{"classifier.coef": None}), "no classifier.coef"),
    (lambda s: _rewrite_arrays(s, target_vectors=np.array([Payload(s.path.parent / "payload-ran")], dtype=object)),
     "Object arrays cannot be loaded when allow_pickle=False"),
    (lambda s: _rewrite_arrays(s, target_vectors=np.zeros((3, 4), np.float32)), "target_vectors has shape"),
    (lambda s: _rewrite_arrays(s, label_vectors=np.zeros((1, 1), np.float64)), "label_vectors is float64"),
    (lambda s: _rewrite_arrays(s, **{"lexical.indices": np.array([10 ** 6], np.int32),
                                     "lexical.data": np.ones(1, np.float32)}), "lexical index"),
    (lambda s: _rewrite_arrays(s, **{"calibrator.intercept": np.array([np.nan])}), "not finite"),
    (lambda s: _edit_record(s, lambda r: r.pop("calibrator")), "no field calibrator"),
    (lambda s: _edit_record(s, lambda r: r["classifier"].update(temperature="0.3")), "temperature is str"),
    (lambda s: _edit_record(s, lambda r: r["classifier"]["chars"].update(token_pattern="(a+)+$")), "never fits"),
    (lambda s: _edit_record(s, lambda r: r["classifier"]["words"]["vocabulary"].append(7)), "other than text"),
    (lambda s: _edit_record(s, lambda r: r["loo"]["thresholds"].update(min_margin=None)), "min_margin"),
    (lambda s: _edit_record(s, lambda r: r.update(format=2)), "not of format 3"),
    (lambda s: _edit_record(s, lambda r: r.update(key="0" * 64)), "model or settings changed"),
])
def test_a_kept_side_that_is_off_in_any_way_is_fitted_again(kept, caplog, damage, why):
    store, key, sizes = kept
    damage(store)
    with caplog.at_level(logging.INFO, logger="migrate.mapping.fitted_target"):
        assert store.get(key, **sizes) is None
    assert len(caplog.records) == 1 and why in caplog.records[0].getMessage(), caplog.text
    assert not (store.path.parent / "payload-ran").exists()


def test_a_side_of_another_target_size_is_fitted_again(kept, caplog):
    store, key, sizes = kept
    with caplog.at_level(logging.INFO, logger="migrate.mapping.fitted_target"):
        assert store.get(key, **{**sizes, "categories": 2}) is None
        assert store.get(key, **{**sizes, "products": sizes["products"] + 1}) is None
    assert "classes" in caplog.records[0].getMessage() and "target_vectors" in caplog.records[1].getMessage()


def _edit_record(store: FittedTargetStore, edit) -> None:
    record = json.loads(store.path.read_text())
    edit(record)
    store.path.write_text(json.dumps(record))


def test_a_state_never_turns_trust_remote_code_on(caplog):
    """``trust_remote_code`` runs a model folder's own Python: a state's meta.json (which a tampered
    folder could set, with its model pointing anywhere) never turns it on; the command line does."""
    from migrate.nightly.reconcile import settings_for_night

    remembered = {"encoder": {"model": "/shared/some-model", "trust_remote_code": True}}
    with caplog.at_level(logging.WARNING, logger="migrate.nightly.state"):
        assert not settings_for_night(remembered, "live.csv", {}).encoder.trust_remote_code
        flat = {"model": None, "trust_remote_code": True}  # a state of format 1: encoder fields at the top
        assert not settings_for_night(flat, "live.csv", {}).encoder.trust_remote_code
    assert "pass --trust-remote-code" in caplog.text
    given = {"encoder": {"trust_remote_code": True}}
    assert settings_for_night(remembered, "live.csv", given).encoder.trust_remote_code
