"""One progress display per run (issue 37, item 3): its stages in order, each stage's count equal to
the work done (rows read, texts encoded, rounds of self-training, rows written), nothing drawn under
--quiet or when stderr is not a terminal, log lines above the bar, and vectors unchanged by it.
Real data: BigBasket rows of the sample onto Google's food branch; the session's model."""

from __future__ import annotations

import io
import re

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from migrate.cli import main
from migrate.core.embedding import Embedder
from migrate.core.progress import Progress
from migrate.mapping.pipeline import run_migration
from migrate.mapping.scoring import ScoringParams
from migrate.mapping.settings import MigrationSettings
from tests.conftest import SAMPLES, data_file

FOOD = ("Snacks & Branded Foods", "Foodgrains, Oil & Masala", "Bakery, Cakes & Dairy")
ROWS = 60

TAXONOMY_RUN = ["reading", "loading the model", "encoding products", "encoding categories", "scoring",
                "finding neighbours", "self-training", "writing"]


@pytest.fixture(scope="module")
def food(tmp_path_factory):
    """(source, taxonomy): 60 food products of the BigBasket sample, Google's food branch."""
    folder = tmp_path_factory.mktemp("food")
    sample = pl.read_csv(SAMPLES / "bigbasket_sample.csv", infer_schema=False)
    sample.filter(pl.col("category").is_in(FOOD)).head(ROWS).write_csv(folder / "source.csv")
    lines = (SAMPLES / "google_taxonomy_subset.txt").read_text().splitlines(keepends=True)
    (folder / "food.txt").write_text("".join(line for line in lines if "Food, Beverages" in line))
    return folder / "source.csv", folder / "food.txt"


@pytest.fixture
def displays(monkeypatch):
    """Every display made while the test runs."""
    made: list[Progress] = []
    init = Progress.__init__

    def recording(self, *args, **kwargs):
        init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(Progress, "__init__", recording)
    return made


@pytest.fixture
def encoded(monkeypatch):
    """(stage name, texts) of every Embedder.encode call while the test runs."""
    calls: list[tuple[str, int]] = []
    encode = Embedder.encode

    def recording(self, texts, **kwargs):
        calls.append((kwargs.get("stage") or f"encoding {kwargs.get('label', 'texts')}", len(texts)))
        return encode(self, texts, **kwargs)

    monkeypatch.setattr(Embedder, "encode", recording)
    return calls


@pytest.fixture
def drawn(monkeypatch):
    """Displays draw on stderr though it is not a terminal here (CliRunner's)."""
    monkeypatch.setattr(Progress, "FORCE", True)


def _migrate(food, out, *options):
    source, taxonomy = food
    return CliRunner().invoke(main, ["migrate", str(source), "--target-taxonomy", str(taxonomy), "--source-category",
                                     "category,sub_category", "--no-category-cache", "-o", str(out), *options])


def _counts(display: Progress) -> dict[str, tuple[int, int | None]]:
    return {s.name: (s.n, s.total) for s in display.stages}


def test_a_migration_shows_one_display_stage_by_stage_counting_what_it_did(food, tmp_path, displays, encoded, drawn):
    done = _migrate(food, tmp_path / "out.csv")
    assert done.exit_code == 0, done.output
    assert len(displays) == 1  # one display for the whole run, writing included
    display = displays[0]
    assert [s.name for s in display.stages] == TAXONOMY_RUN
    counts = _counts(display)
    rows = pl.read_csv(tmp_path / "out.csv").height
    assert rows == ROWS and counts["reading"] == (ROWS, None)
    assert [name for name, _ in encoded] == ["encoding products", "encoding categories"]
    for name, texts in encoded:  # each encoding stage counted exactly the texts it encoded
        assert counts[name] == (texts, texts)
    assert counts["encoding products"] == (ROWS, ROWS) and counts["encoding categories"][0] > 364  # 3 phrasings
    assert counts["scoring"] == counts["finding neighbours"] == (ROWS, ROWS)
    rounds = ScoringParams().self_training_rounds
    assert counts["self-training"] == (rounds, rounds)  # the step that was silent
    assert counts["writing"] == (ROWS, None)
    stderr = done.stderr
    for name in TAXONOMY_RUN:
        assert f"{name}:" in stderr
    assert "Batches" not in stderr  # sentence-transformers' bars are gone
    # log lines are written above the bar, each on a line of its own (never glued to the bar's text)
    pieces = re.split(r"[\r\n]", stderr)
    assert f"embedded {ROWS} source texts ({ROWS} distinct, 0 read from the cache)" in pieces
    assert any(p.startswith("self-training: 3 rounds,") for p in pieces)
    assert f"{ROWS}/{ROWS} texts" in stderr and "texts/s" in stderr  # count and rate


def test_quiet_draws_nothing(food, tmp_path, displays, drawn):
    done = _migrate(food, tmp_path / "out.csv", "--quiet")
    assert done.exit_code == 0, done.output
    assert len(displays) == 1 and not displays[0].enabled and not displays[0].drawn
    assert done.stderr == ""
    assert "mapped 60 of 60 source rows" in done.stdout


def test_nothing_is_drawn_when_stderr_is_not_a_terminal(food, tmp_path, displays):
    done = _migrate(food, tmp_path / "out.csv")  # CliRunner's stderr is no terminal
    assert done.exit_code == 0, done.output
    assert len(displays) == 1 and displays[0].enabled and not displays[0].drawn
    assert [s.name for s in displays[0].stages] == TAXONOMY_RUN  # the run went through its stages ...
    assert "\r" not in done.stderr and "%|" not in done.stderr  # ... and only the log lines were written
    assert f"embedded {ROWS} source texts" in done.stderr


def test_a_labelled_target_catalog_encodes_fits_and_calibrates_on_the_run_display(food, tmp_path, migrator, encoded):
    target = tmp_path / "target.csv"
    pl.read_csv(data_file("bigbasket", "products.csv"), infer_schema=False).filter(
        pl.col("category").is_in(FOOD)).slice(500, 400).write_csv(target)
    settings = MigrationSettings(source=food[0], target_catalog=target, target_category="category,sub_category",
                                 source_category="category,sub_category")
    screen = io.StringIO()
    with Progress(file=screen, force=True) as display:
        result = run_migration(settings, migrator)
    assert [s.name for s in display.stages] == ["reading", "encoding the target catalog", "fitting the classifier",
                                                "calibrating", "encoding products", "scoring"]
    counts = _counts(display)
    for name, texts in encoded:
        assert counts[name] == (texts, texts)
    # every target product: the classifier learns from them all, calibration leaves each out in turn
    assert counts["fitting the classifier"] == counts["calibrating"] == (400, 400)
    assert counts["encoding products"] == (ROWS, ROWS)
    assert counts["scoring"] == (ROWS, ROWS) and result.mapping.height == ROWS
    assert "encoding the target catalog:" in screen.getvalue()


def test_a_night_shows_one_display_from_reading_to_writing(food, tmp_path, displays, encoded, drawn):
    source, taxonomy = food
    done = CliRunner().invoke(main, ["reconcile", str(source), "--state", str(tmp_path / "state"), "--init",
                                     "--target-taxonomy", str(taxonomy), "--source-category", "category,sub_category",
                                     "-o", str(tmp_path / "night.xlsx")])
    assert done.exit_code in (0, 2), done.output
    assert len(displays) == 1
    display = displays[0]
    assert [s.name for s in display.stages] == ["reading", "encoding products", "encoding categories", "scoring",
                                                "finding neighbours", "self-training", "writing"]
    counts = _counts(display)
    for name, texts in encoded:
        if name in counts:
            assert counts[name] == (texts, texts)
    assert counts["encoding products"] == (ROWS, ROWS)
    assert counts["writing"][0] == counts["writing"][1] >= 3  # report, its JSON, the kept scores
    assert "writing:" in done.stderr


class Recording(Progress):
    """A display that keeps every step it was advanced by."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.steps: list[int] = []

    def _advance(self, n: int) -> None:
        self.steps.append(n)
        super()._advance(n)


def test_encoding_counts_batch_by_batch_and_the_vectors_do_not_change(food, migrator):
    products = pl.read_csv(food[0], infer_schema=False)["product"].to_list()
    texts = [f"{p} (progress check)" for p in products[:40]]  # texts no other test encodes: the model sees them
    with Recording(file=io.StringIO(), force=True) as display:
        vectors = Embedder(migrator.encoder.model, batch_size=16, progress=display).encode(
            texts + texts[:5], label="source texts", stage="encoding products")
    assert display.steps == [16, 16, 8, 5]  # three batches as the model encoded them, then the repeats
    assert display.stages[0].n == display.stages[0].total == 45
    model = migrator.encoder.model._model  # the SentenceTransformer itself, asked as the Embedder asks it
    alone = model.encode(texts, batch_size=16, normalize_embeddings=True, convert_to_numpy=True,
                         show_progress_bar=False)
    assert np.array_equal(vectors[:40], alone) and np.array_equal(vectors[40:], alone[:5])


def test_a_runtime_without_torch_hooks_counts_per_call(food, migrator):
    class Runtime:  # a model that is no torch module (OpenVINO, a static model2vec): no hook to see its batches
        def __init__(self, model):
            self.model = model

        def get_sentence_embedding_dimension(self):
            return self.model.get_sentence_embedding_dimension()

        def encode(self, texts, **options):
            return self.model.encode(texts, **options)

    texts = pl.read_csv(food[0], infer_schema=False)["product"].to_list()[:20]
    with Recording(file=io.StringIO(), force=True) as display:
        vectors = Embedder(Runtime(migrator.encoder.model), batch_size=8, progress=display).encode(texts + texts[:2])
    assert display.steps == [20, 2] and vectors.shape[0] == 22


def test_a_match_shows_one_display_stage_by_stage(tmp_path, displays, encoded, drawn):
    folder = data_file("entity_matching", "deepmatcher_format", "abt_buy", "tableA.csv").parent
    for name, table in (("abt.csv", "tableA.csv"), ("buy.csv", "tableB.csv")):
        pl.read_csv(folder / table, infer_schema=False).head(40).write_csv(tmp_path / name)
    done = CliRunner().invoke(main, ["match", str(tmp_path / "abt.csv"), str(tmp_path / "buy.csv"),
                                     "-o", str(tmp_path / "matches.csv")])
    assert done.exit_code == 0, done.output
    assert len(displays) == 1
    display = displays[0]
    assert [s.name for s in display.stages] == ["reading", "loading the model", "encoding products",
                                                "searching candidates", "scoring pairs", "writing"]
    counts = _counts(display)
    assert encoded == [("encoding products", 80)] and counts["reading"] == (80, None)
    assert counts["encoding products"] == counts["searching candidates"] == (80, 80)
    assert counts["scoring pairs"][0] == counts["scoring pairs"][1] >= 40  # every left product's candidates
    assert counts["writing"] == (pl.read_csv(tmp_path / "matches.csv").height, None)


def test_a_crosswalk_shows_one_display(food, tmp_path, displays, encoded, drawn):
    _, taxonomy = food
    old = tmp_path / "old.txt"
    old.write_text("".join(taxonomy.read_text().splitlines(keepends=True)[:50]))
    done = CliRunner().invoke(main, ["crosswalk", str(old), str(taxonomy), "-o", str(tmp_path / "crosswalk.csv")])
    assert done.exit_code == 0, done.output
    assert len(displays) == 1
    stages = displays[0].stages
    assert [s.name for s in stages] == ["encoding category paths and products", "writing"]
    assert [(s.n, s.total) for s in stages] == [(encoded[0][1], encoded[0][1]), (50, None)]
