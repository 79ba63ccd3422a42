"""Shared pieces of the benchmarks: data location, the BigBasket split, the BENCHMARKS.md writer."""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import polars as pl

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("TAXMIG_DATA_DIR", ROOT.parent / "shared" / "data"))
BIGBASKET = DATA / "bigbasket" / "products.csv"


def normalised_name(name: str | None) -> str:
    return re.sub(r"\s+", " ", (name or "").lower()).strip()


def in_test_split(name: str | None, test_percent: int = 20) -> bool:
    """Deterministic split by normalised product name: near-duplicate listings stay together.

    One implementation with training: ``train.splits.split_of`` (seed 0) puts exactly these rows in
    its test split, and its train + eval splits are the benchmark's target catalog.
    """
    from train.splits import split_of

    return split_of(name, eval_percent=0, test_percent=test_percent) == "test"


def bigbasket_split(limit: int | None = None, test_percent: int = 20) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(target 80%, source 20%) of BigBasket, split by normalised product name; columns as in the file."""
    import polars as pl

    frame = pl.read_csv(BIGBASKET, infer_schema=False).select(
        ["index", "product", "category", "sub_category", "brand"])
    if limit:
        frame = frame.sample(n=min(limit, frame.height), seed=0, shuffle=True).sort(
            pl.col("index").cast(pl.Int64))
    test = pl.Series([in_test_split(n, test_percent) for n in frame["product"]])
    return frame.filter(~test), frame.filter(test)


def instacart_products(limit: int | None = None) -> pl.DataFrame:
    """Instacart's products with their aisle and department names, ``missing``/``other`` left out
    (no category to be right about); ``limit`` samples that many (seed 0)."""
    import polars as pl

    folder = DATA / "instacart"
    frame = (pl.read_csv(folder / "products.csv").join(pl.read_csv(folder / "aisles.csv"), on="aisle_id")
             .join(pl.read_csv(folder / "departments.csv"), on="department_id")
             .filter(~pl.col("department").is_in(["missing", "other"])))
    return frame.sample(n=min(limit, frame.height), seed=0) if limit else frame


def write_split(folder: Path, target: pl.DataFrame, source: pl.DataFrame) -> tuple[Path, Path]:
    """Write the split as migrate reads it: the target with its categories, the source without
    (its categories are the truth, kept aside). Returns (target path, source path)."""
    target_path, source_path = Path(folder) / "target.csv", Path(folder) / "source.csv"
    target.write_csv(target_path)
    source.select(["index", "product", "brand"]).write_csv(source_path)
    return target_path, source_path


def machine() -> str:
    cpus = os.cpu_count()
    return f"{platform.machine()}, {cpus} cores, Python {platform.python_version()}"


def command_line() -> str:
    return "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])


def publish(section: str, table_md: str, notes: str, *, write: bool) -> None:
    """Print the table and notes; with ``write``, append them to BENCHMARKS.md as well."""
    print(table_md)
    print(notes)
    if write:
        print("appended to", append_benchmark(section, table_md, notes))


def append_benchmark(section: str, table_md: str, notes: str = "") -> Path:
    """Append a dated section with the command and machine to BENCHMARKS.md."""
    path = ROOT / "BENCHMARKS.md"
    if not path.exists():
        path.write_text("# Benchmarks\n\nEvery table below was written by the command shown above it, "
                        "on the machine named, on the date given. Rows in one table come from one run.\n")
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    block = (f"\n## {section} — {stamp}\n\n"
             f"- command: `{command_line()}`\n- machine: {machine()}\n\n{table_md}\n")
    if notes:
        block += f"\n{notes}\n"
    with path.open("a") as fh:
        fh.write(block)
    return path
