"""--engine ray on a local 2-worker Ray: the local engine's mapping, rejects and Summary figures
from a folder of Parquet files cut into many tasks; what it refuses, it refuses before any work."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import ray  # the ray extra: make test installs it (pip install 'taxmig[ray]'); a missing one fails here
from click.testing import CliRunner

from migrate.cli import main
from migrate.errors import InputError, OutputExistsError, TaxmigError
from migrate.mapping.pipeline import run_migration
from migrate.mapping.ray_engine import plan_source, run_ray_migration
from migrate.mapping.settings import MigrationSettings

ROUNDED = ("confidence", "margin", "score", "alt1_score", "alt2_score", "nearest_similarity")


@pytest.fixture(scope="module")
def local_ray(traced_bundled_model):
    ray.init(num_cpus=2, object_store_memory=300 * 2**20, include_dashboard=False, log_to_driver=False,
             logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def files(bigbasket, tmp_path_factory):
    """A 200-row BigBasket source as two Parquet files (a folder) and as one file; an id repeated
    from the first file in the second and an empty name; 500 other products as the target."""
    folder = tmp_path_factory.mktemp("ray")
    source = bigbasket.slice(0, 200).select("index", "product", "brand", "category", "sub_category")
    at = pl.int_range(pl.len())
    source = source.with_columns(pl.when(at == 150).then(pl.lit(source["index"][3])).otherwise("index").alias("index"),
                                 pl.when(at == 60).then(pl.lit("")).otherwise("product").alias("product"))
    (folder / "parts").mkdir()
    source.slice(0, 100).write_parquet(folder / "parts" / "a.parquet")
    source.slice(100).write_parquet(folder / "parts" / "b.parquet")
    source.write_parquet(folder / "whole.parquet")
    bigbasket.slice(5000, 500).write_csv(folder / "target.csv")
    return folder


def settings_for(source, files, **kw) -> MigrationSettings:
    return MigrationSettings(source=source, target_catalog=files / "target.csv", target_category="category,sub_category",
                             source_category="category", progress=False, **kw)


def test_ray_maps_a_folder_as_the_local_engine_maps_the_file(local_ray, files, migrator, tmp_path):
    """Through the CLI, 2 actors, 3 tasks per file, into a folder an earlier run left (--overwrite
    replaces it as a whole): the local engine's rows, rejects, crosswalk and Summary figures."""
    local = run_migration(settings_for(files / "whole.parquet", files), migrator)
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("an earlier run's file")
    result = CliRunner().invoke(main, ["migrate", str(files / "parts"), "--target-catalog", str(files / "target.csv"),
                                       "--target-category", "category,sub_category", "--source-category", "category",
                                       "--engine", "ray", "--workers", "2", "--task-rows", "45", "-o", str(out),
                                       "--overwrite", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "mapped 198 of 200 source rows (2 rejected)" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["crosswalk.parquet", "mapping", "rejects.parquet", "summary.json"]
    assert len(plan_source(settings_for(files / "parts", files), 45).tasks) == 6  # 3 tasks per 100-row file
    got = pl.read_parquet(out / "mapping").sort("source_row")
    want = local.mapping
    assert got.columns == want.columns and got.height == want.height == 198
    for column in want.columns:
        if column in ROUNDED:  # 4 decimals; a batch of other lengths may move the last one
            assert np.allclose(got[column].to_numpy(), want[column].to_numpy(), atol=1.01e-4), column
        else:
            assert got[column].to_list() == want[column].to_list(), column
    assert pl.read_parquet(out / "rejects.parquet").equals(local.rejects)
    assert local.rejects["row"].to_list() == [61, 151]  # the empty name; the id repeated across the files
    assert "first at row 4" in local.rejects["reason"][1]
    crosswalk = pl.read_parquet(out / "crosswalk.parquet")
    exact = [c for c in local.crosswalk.columns if c != "mean_confidence"]
    assert crosswalk.columns == local.crosswalk.columns and crosswalk.select(exact).equals(local.crosswalk.select(exact))
    # the mean of confidences that may differ in their 4th decimal (above), rounded to 4 decimals: at
    # 400 rows onto 1,000 products two of 105 means differed by 0.0001 (0.7017 / 0.7018)
    assert np.allclose(crosswalk["mean_confidence"].to_numpy(), local.crosswalk["mean_confidence"].to_numpy(),
                       atol=1.01e-4)
    summary = json.loads((out / "summary.json").read_text())
    ours = local.summary_dict()
    for key in ("Source rows", "Source rows mapped", "Source rows rejected", "Rows needing review", "Rows unflagged",
                "Flag counts", "Leave-one-out top-1 accuracy", "Target products used"):
        assert summary[key] == ours[key], key
    assert summary["Engine"].startswith("ray: 2 workers") and summary["Source files"] == 2


def test_ray_refuses_before_any_work(local_ray, files, tmp_path):
    taxonomy_only = MigrationSettings(source=files / "parts", target_taxonomy=files / "target.csv", progress=False)
    with pytest.raises(TaxmigError, match="labelled target catalog"):
        run_ray_migration(taxonomy_only, tmp_path / "a")
    csv = files / "target.csv"
    with pytest.raises(InputError, match="reads Parquet"):
        run_ray_migration(settings_for(csv, files), tmp_path / "b")
    with pytest.raises(TaxmigError, match="writes a folder"):
        run_ray_migration(settings_for(files / "parts", files), tmp_path / "c.parquet")
    (tmp_path / "exists").mkdir()
    with pytest.raises(OutputExistsError):
        run_ray_migration(settings_for(files / "parts", files), tmp_path / "exists")
    odd = tmp_path / "odd"
    odd.mkdir()
    pl.DataFrame({"index": ["1"], "product": ["Tea"]}).write_parquet(odd / "a.parquet")
    pl.DataFrame({"id": ["2"], "name": ["Milk"]}).write_parquet(odd / "b.parquet")
    with pytest.raises(InputError, match="same columns"):
        run_ray_migration(settings_for(odd, files), tmp_path / "d")
    assert not (tmp_path / "a").exists() and not (tmp_path / "d").exists()


def test_cli_engine_ray_refuses_what_it_cannot_do_before_any_work(local_ray, files, tmp_path):
    from migrate.mapping.ray_engine import TASK_ROWS

    small = tmp_path / "small.parquet"
    pl.read_parquet(files / "parts" / "a.parquet").head(60).write_parquet(small)
    out = tmp_path / "mapped"
    out.mkdir()
    (out / "stale.txt").write_text("an earlier run's file")
    args = ["migrate", str(small), "--target-catalog", str(files / "target.csv"), "--target-category",
            "category,sub_category", "--engine", "ray", "--workers", "1", "-o", str(out), "--quiet"]
    refused = CliRunner().invoke(main, args)
    assert refused.exit_code != 0 and "already exists" in refused.output
    assert sorted(p.name for p in out.iterdir()) == ["stale.txt"]
    state = CliRunner().invoke(main, [*args, "--overwrite", "--state", str(tmp_path / "st")])
    assert state.exit_code != 0 and "--state works with the local engine" in state.output
    local_folder = CliRunner().invoke(main, ["migrate", str(files / "parts"), "--target-catalog",
                                             str(files / "target.csv"), "-o", str(tmp_path / "m.csv")])
    assert local_folder.exit_code != 0 and "is a folder" in local_folder.output
    local_rows = CliRunner().invoke(main, ["migrate", str(small), "--target-catalog", str(files / "target.csv"),
                                           "--task-rows", "90", "-o", str(tmp_path / "m.csv")])
    assert local_rows.exit_code == 64 and "--task-rows goes with --engine ray" in local_rows.output
    assert f"[default: {TASK_ROWS}]" in CliRunner().invoke(main, ["migrate", "--help"]).output.replace("\n", " ")
