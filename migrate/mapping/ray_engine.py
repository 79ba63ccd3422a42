"""``taxmig migrate --engine ray``: the same migration onto a labelled target catalog, spread over
the workers of a Ray cluster with Ray Data.

The driver reads the target and fits its side once (:meth:`~migrate.mapping.pipeline.Migrator.fit_target_side`:
index, labels, classifier, calibration), puts it in Ray's object store and plans the source -- one
Parquet file or a folder of them -- as tasks of :data:`TASK_ROWS` rows. An actor pool maps the
tasks (``map_batches``): each actor loads the model once, gets the target side once, reads its rows,
encodes and scores them -- the same code the local engine runs per chunk. The flags that look at the
whole source (SOURCE_SPLIT, LEXICAL_CONFLICT) need every row's suggestion first, so the driver
counts (source category, target category) pairs over the actors' output and a second pass sets the
flags and writes the Parquet shards. Out comes a folder::

    OUT/mapping/*.parquet   the mapping, the local engine's columns (sort by source_row for file order)
    OUT/rejects.parquet     every row not mapped, with the reason
    OUT/crosswalk.parquet   source category -> target category counts
    OUT/summary.json        the Summary the local engine writes, plus the engine's own lines

Rows are numbered as the local engine numbers a Parquet file's rows (1 = the first row); a folder
counts on across its ``*.parquet`` files in name order, as if they were one file. ``ray.init()``
starts a local Ray unless ``RAY_ADDRESS`` names a cluster; on a cluster taxmig must be installed on
every node and the source, model folder and output must be paths every node can read (or write).

A taxonomy file with no labelled products is refused: that path centres the labels on the whole
source and lets the source products teach each other (self-training), which needs every product in
one place -- the local engine does it (with the static tier, a million products in minutes).

>>> run_ray_migration(MigrationSettings(source="products/", target_catalog="target.csv"), "out/")  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import time
import uuid
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from migrate.core.catalog import Catalog, build_catalog
from migrate.core.columns import ROW_ID, ColumnSpec
from migrate.core.embedding import Embedder
from migrate.core.encoder import load_model
from migrate.core.readers import ROW, Reject
from migrate.errors import InputError, OutputExistsError, TaxmigError
from migrate.mapping.flags import SourceContext, compute_flags
from migrate.core.report import RunFacts, summary_json
from migrate.mapping.inputs import embedding_texts, load_targets, rejects_frame
from migrate.mapping.pipeline import Migrator
from migrate.mapping.report import calibration_text, migration_facts, migration_summary
from migrate.mapping.tables import crosswalk_frame, flag_inputs, scored_frame, with_flags
from migrate.mapping.target_side import TargetSide
from migrate.mapping.scoring import CategoryScores
from migrate.mapping.settings import MigrationSettings

log = logging.getLogger(__name__)

TASK_ROWS = 16_384
"""Source rows one actor maps per task: about a minute of torch encoding on one core and well
under a second of scoring, small enough that a 2-worker pool stays busy to the end on 100k rows and
that a task's vectors stay near 25 MB.
Measured: BENCHMARKS.md, "scale: --engine ray against the local engine" (``python bench/scale_bench.py --parts ray``)."""
REJECT = "_reject"        # the reason, on rows an actor could not map (null on mapped rows)
ENCODED = "_encoded"      # distinct texts an actor encoded for the task (on the task's first row)
ENCODE_SECONDS = "_encode_seconds"
SUMMARY_COLUMNS = ["source_category", "target_category", "confidence", "needs_review", "flags"]


@dataclass
class RayRun:
    """What :func:`run_ray_migration` wrote and said."""

    output: Path
    files: list[Path]
    summary: list[tuple[str, Any]]
    facts: RunFacts

    @property
    def mapped(self) -> int:
        return self.facts.mapped

    @property
    def rejected(self) -> int:
        return self.facts.rejected

    def summary_dict(self) -> dict[str, Any]:
        """The Summary's rows by label (what summary.json shows; code reads :attr:`facts`)."""
        return dict(self.summary)


@dataclass
class SourcePlan:
    """The Parquet source as the driver sees it: files, columns, rows and the tasks over them."""

    path: Path
    files: list[Path]
    spec: ColumnSpec
    n_records: int
    tasks: list[dict[str, Any]]  # file, offset, length, first_row (0-based over all files)


def source_files(path: str | Path) -> list[Path]:
    """The Parquet files of ``path`` (a ``.parquet`` file, or a folder: its ``*.parquet`` in name order)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.glob("*.parquet") if p.is_file())
        if not files:
            raise InputError(path, "holds no .parquet file", hint="give a Parquet file or a folder of them")
        return files
    if not path.exists():
        raise InputError(path, "does not exist", hint="check the path")
    if path.suffix.lower() != ".parquet":
        raise InputError(path, "--engine ray reads Parquet (a file or a folder of files)",
                         hint="convert it first, e.g. python -c \"import polars as pl; "
                              f"pl.read_csv('{path}', infer_schema=False).write_parquet('{path.with_suffix('.parquet')}')\"")
    return [path]


def plan_source(settings: MigrationSettings, task_rows: int = TASK_ROWS) -> SourcePlan:
    """Check every source file (readable, flat, the same columns) and cut them into tasks."""
    import pyarrow.parquet as pq

    files = source_files(settings.source)
    columns: list[str] | None = None
    tasks: list[dict[str, Any]] = []
    total = 0
    for f in files:
        try:
            meta = pq.ParquetFile(f)
        except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for a damaged file
            raise InputError(f, f"cannot be read as Parquet ({exc.__class__.__name__})",
                             hint="write the file again") from None
        schema = meta.schema_arrow
        nested = [field.name for field in schema if field.type.num_fields > 0]
        if nested:
            raise InputError(f, f"nested columns {nested} are not supported", hint="flatten them to text columns")
        if columns is None:
            columns = list(schema.names)
        elif set(schema.names) != set(columns):
            raise InputError(f, f"has columns {schema.names}, the first file {files[0].name} has {columns}",
                             hint="give every file of the folder the same columns")
        rows = meta.metadata.num_rows
        for offset in range(0, rows, task_rows):
            tasks.append({"file": str(f), "offset": offset, "length": min(task_rows, rows - offset),
                          "first_row": total + offset})
        total += rows
    spec = ColumnSpec.resolve(columns or [], role="source", id=settings.source_id, text=settings.source_text,
                              category=settings.source_category, path=settings.source)
    return SourcePlan(Path(settings.source), files, spec, total, tasks)


def duplicate_ids(plan: SourcePlan) -> dict[str, int]:
    """Ids met more than once over the whole source -> the row of their first appearance (the
    local engine rejects the later ones; an actor sees only its own rows)."""
    if plan.spec.id == ROW_ID:
        return {}
    ids = pl.concat([pl.read_parquet(f, columns=[plan.spec.id]).select(pl.col(plan.spec.id).cast(pl.String))
                     for f in plan.files])[plan.spec.id].fill_null("").to_list()
    first: dict[str, int] = {}
    repeated: set[str] = set()
    for row, pid in enumerate(ids, start=1):
        pid = pid.strip()
        if not pid:
            continue
        if pid in first:
            repeated.add(pid)
        else:
            first[pid] = row
    return {pid: first[pid] for pid in repeated}


def read_task(task: dict[str, Any]) -> pl.DataFrame:
    """A task's rows as text columns plus ``_row``, as :func:`migrate.core.readers.read_table` gives them."""
    frame = pl.scan_parquet(task["file"]).slice(task["offset"], task["length"]).collect()
    frame = frame.select([pl.col(c).cast(pl.String).fill_null("").alias(c) for c in frame.columns])
    start = task["first_row"] + 1
    return frame.with_columns(pl.int_range(start, start + frame.height, dtype=pl.Int64).alias(ROW))


def _empty_scored(side: TargetSide) -> pl.DataFrame:
    """A zero-row :func:`~migrate.mapping.pipeline.scored_frame`: the schema of a task whose rows were all rejected."""
    top = side.params.top_n
    empty = CategoryScores(np.zeros((0, top), np.int64), np.zeros((0, top)), np.zeros(0), np.zeros(0, np.int64),
                           np.zeros(0))
    catalog = Catalog(path=Path("."), spec=ColumnSpec(id=ROW_ID, text=[], category=[]), ids=[], texts=[],
                      categories=[], rows=[], n_records=0)
    return scored_frame(catalog, side.targets, empty, np.zeros(0), side.target_texts)


class TaskMapper:
    """One Ray actor: loads the model once, fetches the target side once, maps tasks."""

    def __init__(self, settings: MigrationSettings, side_ref: list, duplicates_ref: list, spec: ColumnSpec) -> None:
        import ray

        self.settings, self.spec = settings, spec
        self.side: TargetSide = ray.get(side_ref[0])
        self.duplicates: dict[str, int] = ray.get(duplicates_ref[0])
        # lazy: on the CPU a worker runs the model's TorchScript trace when its node has one
        # (models.registry.lazy_encoder), importing torch alone instead of sentence-transformers
        self.encoder = load_model(settings.encoder, lazy=True)
        self.empty = _empty_scored(self.side)

    def __call__(self, batch: dict[str, np.ndarray]) -> Any:
        frames = [self.map_task({k: batch[k][i] for k in batch}) for i in range(len(batch["file"]))]
        return pl.concat(frames, how="vertical").to_arrow(compat_level=pl.CompatLevel.oldest())

    def map_task(self, task: dict[str, Any]) -> pl.DataFrame:
        frame = read_task(task)
        first = int(task["first_row"]) + 1
        seen = {pid: row for pid, row in self.duplicates.items() if row < first}
        source = build_catalog(frame, self.spec, path=Path(str(task["file"])), n_records=frame.height,
                               seen_before=seen)
        embedder = Embedder(self.encoder.model, batch_size=self.settings.encoder.batch_size, progress=False)
        if len(source):
            queries = embedder.encode(embedding_texts(source, self.settings.category_context), label="source texts")
            scores = self.side.score(queries, source.texts)
            mapped = scored_frame(source, self.side.targets, scores, self.side.confidence(scores),
                                  self.side.target_texts)
        else:
            mapped = self.empty
        rejected = pl.DataFrame({"source_row": [r.row for r in source.rejects], "source_id": [r.id for r in source.rejects],
                                 "source_text": [r.text for r in source.rejects],
                                 REJECT: [r.reason for r in source.rejects]},
                                schema={"source_row": pl.Int64, "source_id": pl.String, "source_text": pl.String,
                                        REJECT: pl.String})
        out = pl.concat([mapped.with_columns(pl.lit(None, pl.String).alias(REJECT)), rejected],
                        how="diagonal_relaxed").select([*mapped.columns, REJECT])
        stats = np.zeros(out.height)
        counts = stats.copy()
        if out.height:
            stats[0], counts[0] = embedder.stats["seconds"], embedder.stats["encoded"]
        return out.with_columns(pl.Series(ENCODED, counts.astype(np.int64)), pl.Series(ENCODE_SECONDS, stats))


def _flag_batch(table: Any, *, context: SourceContext, all_targets: list[str], thresholds,
                calibrated: bool) -> Any:
    """Second pass: the mapped rows of one block with their flags, hidden columns dropped."""
    scored = pl.from_arrow(table).filter(pl.col(REJECT).is_null()).drop(REJECT, ENCODED, ENCODE_SECONDS)
    flags = compute_flags(**flag_inputs(scored), has_products=True, calibrated=calibrated,
                          all_targets=all_targets, thresholds=thresholds, context=context)
    return with_flags(scored, flags).to_arrow(compat_level=pl.CompatLevel.oldest())


def _workers(requested: int | None, cluster: dict[str, float], device: str | None) -> tuple[int, float]:
    """(actors, GPUs per actor): one per GPU when the cluster has GPUs (unless --device cpu), else one per CPU."""
    gpus = int(cluster.get("GPU", 0))
    if gpus and device != "cpu":
        return (requested or gpus), 1.0
    return (requested or max(1, int(cluster.get("CPU", 1)))), 0.0


def _check_output(output: Path, overwrite: bool) -> None:
    if output.suffix.lower() in (".xlsx", ".csv", ".parquet"):
        raise TaxmigError(f"{output}: --engine ray writes a folder (Parquet shards, rejects, summary)",
                          hint="give a folder name, e.g. -o out/mapping/")
    if output.exists() and not overwrite:
        raise OutputExistsError(output)
    if output.exists() and not output.is_dir():
        raise TaxmigError(f"{output} is a file", hint="give a folder name")


def run_ray_migration(settings: MigrationSettings, output: str | Path, *, overwrite: bool = False,
                      workers: int | None = None, task_rows: int = TASK_ROWS,
                      migrator: Migrator | None = None) -> RayRun:
    """Map ``settings.source`` (Parquet file or folder) onto a labelled target catalog with Ray and
    write the folder ``output`` (see the module docstring); ``workers``: actors in the pool (default:
    one per GPU of the cluster, else one per CPU); ``migrator``: the driver's already-loaded model
    (the actors load their own from ``settings``). Same mapping as the local engine."""
    if not settings.progress:  # Ray Data sets its loggers' level from this whenever it configures them
        os.environ.setdefault("RAY_DATA_LOG_LEVEL", "WARNING")
    try:
        import ray
    except ImportError:
        raise TaxmigError("--engine ray needs Ray", hint="pip install 'taxmig[ray]'") from None
    started = time.perf_counter()
    when = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    settings.validate(source_folder=True)
    output = Path(output)
    _check_output(output, overwrite)
    if settings.target_catalog is None:
        raise TaxmigError("--engine ray maps onto a labelled target catalog (--target-catalog)",
                          hint="a taxonomy alone centres its labels on the whole source and self-trains over every "
                               "product at once: run it with the local engine (the default); the static tier "
                               "(taxmig distill) maps a million products that way on one machine")
    from models.registry import resolve_precision

    # one precision for the whole run: --precision auto resolved here, not by each actor's machine
    encoder = settings.encoder
    settings = replace(settings, encoder=replace(encoder, precision=resolve_precision(
        encoder.precision, encoder.backend, encoder.device)))
    plan = plan_source(settings, task_rows)
    targets = load_targets(settings)
    duplicates = duplicate_ids(plan)
    migrator = migrator or Migrator.from_settings(settings)
    embedder = Embedder(migrator.encoder.model, batch_size=settings.encoder.batch_size, progress=settings.progress)
    side = migrator.fit_target_side(settings, targets, embedder, source_has_categories=bool(plan.spec.category))
    thresholds = side.loo.thresholds if side.loo is not None else settings.thresholds
    calibrated = side.calibrator.logistic

    quiet = logging.INFO if settings.progress else logging.WARNING
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False, log_to_driver=False,
                 logging_level=quiet)
    logging.getLogger("ray.data").setLevel(quiet)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # shards in row order, the same run after run
    ctx.enable_progress_bars = settings.progress
    n_workers, gpus = _workers(workers, ray.cluster_resources(), settings.encoder.device)
    n_workers = max(1, min(n_workers, len(plan.tasks)))
    log.info("ray: %d tasks of up to %d rows on %d workers", len(plan.tasks), task_rows, n_workers)
    staging = output.parent / f".{output.name}.{uuid.uuid4().hex[:8]}.tmp"
    staging.mkdir(parents=True)
    try:
        mapped = (ray.data.from_items(plan.tasks, override_num_blocks=max(1, len(plan.tasks)))
                  .map_batches(TaskMapper, batch_size=1, batch_format="numpy",
                               compute=ray.data.ActorPoolStrategy(size=n_workers), num_cpus=1, num_gpus=gpus,
                               fn_constructor_kwargs={"settings": settings, "side_ref": [ray.put(side)],
                                                      "duplicates_ref": [ray.put(duplicates)], "spec": plan.spec})
                  .materialize())
        pairs: Counter = Counter()
        reject_parts, encoded, encode_seconds = [], 0, 0.0
        for table in mapped.select_columns(["source_row", "source_id", "source_text", "source_category",
                                            "target_category", REJECT, ENCODED, ENCODE_SECONDS]
                                           ).iter_batches(batch_format="pyarrow", batch_size=None):
            part = pl.from_arrow(table)
            encoded += int(part[ENCODED].sum())
            encode_seconds += float(part[ENCODE_SECONDS].sum())
            ok = part.filter(pl.col(REJECT).is_null())
            for src, tgt, count in ok.group_by("source_category", "target_category").len().iter_rows():
                pairs[(src, tgt)] += count
            reject_parts.append(part.filter(pl.col(REJECT).is_not_null()))
        context = SourceContext.from_counts(pairs, targets.categories, thresholds)
        (mapped.map_batches(_flag_batch, batch_format="pyarrow", batch_size=None,
                            fn_kwargs={"context": context, "all_targets": list(targets.categories),
                                       "thresholds": thresholds, "calibrated": calibrated})
         .write_parquet(str(staging / "mapping")))
        rejected = pl.concat(reject_parts) if reject_parts else pl.DataFrame()
        source_rejects = [Reject(row=r["source_row"], id=r["source_id"] or "", text=r["source_text"] or "",
                                 reason=r[REJECT]) for r in rejected.iter_rows(named=True)]
        rejects = rejects_frame(sorted(source_rejects, key=lambda r: r.row), targets.rejects)
        rejects.write_parquet(staging / "rejects.parquet")
        summary_rows = pl.read_parquet(staging / "mapping", columns=SUMMARY_COLUMNS)
        crosswalk_frame(summary_rows).write_parquet(staging / "crosswalk.parquet")
        source = Catalog(path=plan.path, spec=plan.spec, ids=[], texts=[], categories=[], rows=[],
                         n_records=plan.n_records, rejects=source_rejects)
        if summary_rows.height + len(source_rejects) != plan.n_records:  # nothing lost, nothing doubled
            raise TaxmigError(f"ray: {summary_rows.height} mapped + {len(source_rejects)} rejected rows but the "
                              f"source has {plan.n_records}", hint="report this; nothing was written")
        seconds = time.perf_counter() - started
        facts = migration_facts(RunFacts("migrate", started=when, model=migrator.encoder.name,
                                         fingerprint=migrator.encoder.fingerprint),
                                source=source, targets=targets, mapping=summary_rows, thresholds=thresholds,
                                calibration=calibration_text(side.calibrator, True, False),
                                encode_stats={"encoded": encoded + embedder.stats["encoded"], "cached": 0,
                                              "seconds": encode_seconds + embedder.stats["seconds"]},
                                cached=False, seconds=seconds)
        summary = migration_summary(facts, settings, source, targets, summary_rows, side.calibrator, side.loo,
                                    side.labels, side.product_index)
        summary += [("Engine", f"ray: {n_workers} workers ({'1 GPU' if gpus else '1 CPU'} each), "
                               f"{len(plan.tasks)} tasks of up to {task_rows} rows"),
                    ("Source files", len(plan.files))]
        (staging / "summary.json").write_text(json.dumps(summary_json(facts, summary), indent=2, default=str))
        _publish(staging, output)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    files = sorted(p for p in output.rglob("*") if p.is_file())
    log.info("ray: mapped %d rows, %d rejected, wrote %s", summary_rows.height, len(source_rejects), output)
    return RayRun(output, files, summary, facts)


def _publish(staging: Path, output: Path) -> None:
    """Move the finished folder into place; an old one (``--overwrite``) goes only once the new one is whole."""
    old = None
    if output.exists():
        old = output.parent / f".{output.name}.{uuid.uuid4().hex[:8]}.old"
        os.replace(output, old)
    os.replace(staging, output)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


__all__ = ["RayRun", "TASK_ROWS", "plan_source", "run_ray_migration", "source_files"]
