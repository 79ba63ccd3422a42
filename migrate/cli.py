"""The ``taxmig`` command line: a thin click layer over the library.

Exit codes (for schedulers): 0 success (for ``reconcile``: nothing needs a person); 1 an error
the message explains (bad input, missing model, output exists, ...); 2 ``reconcile`` only: rows
need review; 3 another run holds the state folder's lock; 64 a usage error (unknown option,
missing argument).
"""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path

import click

from migrate import __version__
from migrate.errors import TaxmigError
from models.registry import BACKENDS, PRECISIONS

log = logging.getLogger("taxmig")
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _setup_logging(verbose: int, quiet: bool) -> None:
    """Log lines on stderr, written above the run's progress display (never through its bar)."""
    from migrate.core.progress import LogHandler

    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s %(message)s" if verbose else "%(message)s",
                        handlers=[LogHandler(sys.stderr)], force=True)
    for noisy in ("sentence_transformers", "transformers", "huggingface_hub", "faiss", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING if verbose < 2 else logging.INFO)


EXIT_USAGE = 64  # sysexits' EX_USAGE: distinct from reconcile's 2 (rows need review)


class TaxmigClickError(click.ClickException):
    """A library error (:class:`TaxmigError`) as a one-line CLI error with its own exit code."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


RENAMED_OPTIONS = {"top_k": "top_n"}
"""Hidden options under an old name that users' scripts still pass (see :func:`renamed_option`):
old parameter name -> the parameter its value fills."""


def renamed_option(old_flag: str, new_flag: str, type_: click.ParamType):
    """A hidden option spelled the old way: it takes the values ``new_flag`` takes, prints a one-line
    deprecation note, and :class:`TaxmigCommand` hands its value to ``new_flag``'s parameter."""
    def note(ctx: click.Context, param: click.Parameter, value):
        if value is not None:
            click.echo(f"taxmig: {old_flag} is deprecated, use {new_flag} (same meaning)", err=True)
        return value

    return click.option(old_flag, type=type_, default=None, hidden=True, callback=note)


class TaxmigCommand(click.Command):
    """A command whose deprecated hidden options (:data:`RENAMED_OPTIONS`) fill their new parameter,
    as given on the command line (so a night's overrides see it); the new and old flags both given
    with different values are a usage error."""

    def invoke(self, ctx: click.Context):
        from click.core import ParameterSource

        for old, new in RENAMED_OPTIONS.items():
            value = ctx.params.pop(old, None)
            if value is None or new not in ctx.params:
                continue
            if ctx.get_parameter_source(new) == ParameterSource.COMMANDLINE and ctx.params[new] != value:
                flags = [f"--{n.replace('_', '-')}" for n in (new, old)]
                raise click.UsageError(f"{flags[0]} {ctx.params[new]} and {flags[1]} {value} disagree: give {flags[0]} "
                                       "alone", ctx)
            ctx.params[new] = value
            ctx.set_parameter_source(new, ParameterSource.COMMANDLINE)
        return super().invoke(ctx)


class TaxmigGroup(click.Group):
    """Turns library errors into one-line messages (exit 1) and never shows a traceback by default."""

    command_class = TaxmigCommand

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except TaxmigError as exc:  # its exit code: 1, or e.g. 3 for a held state lock
            raise TaxmigClickError(str(exc), exc.exit_code) from None
        except (click.ClickException, click.exceptions.Exit, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            raise click.ClickException("interrupted; no output was written") from None
        except Exception as exc:  # a bug: say so in one line, details with --debug
            if ctx.params.get("debug") or "--debug" in sys.argv:
                traceback.print_exc()
            raise click.ClickException(
                f"unexpected {exc.__class__.__name__}: {exc} (a bug in taxmig; run again with --debug "
                "for the traceback and report it)") from None

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        """Usage errors exit 64, not click's 2 (which ``reconcile`` uses for "rows need review")."""
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except click.UsageError as exc:
            exc.show()
            sys.exit(EXIT_USAGE)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=TaxmigGroup, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="taxmig")
@click.option("--debug", is_flag=True, help="Show tracebacks of unexpected errors.")
def main(debug: bool) -> None:
    """Move retail product catalogs from one taxonomy to another.

    \b
    Examples:
      taxmig migrate products.csv --target-taxonomy taxonomy.txt -o mapping.xlsx
      taxmig migrate shop_a.parquet --target-catalog shop_b.csv -o mapping.csv --overwrite
    """


def _float_opt(name: str, default: float, help_: str):
    return click.option(name, type=float, default=default, show_default=True, help=help_)


TARGET_OPTIONS = [
    click.option("--target-catalog", type=click.Path(dir_okay=False, path_type=Path),
                 help="Labelled target products (CSV/TSV/XLSX/Parquet/JSONL); their categories are the targets."),
    click.option("--target-taxonomy", type=click.Path(dir_okay=False, path_type=Path),
                 help="Target categories: Google 'id - path' text, one path per line, YAML full_names, or a table."),
]
COLUMN_OPTIONS = [
    click.option("--source-id", help="Source id column (default: id/sku/index…, else the row number)."),
    click.option("--source-text", help="Source text columns, comma separated (default: name/title/product, brand, description)."),
    click.option("--source-category", help="Source category: one path column ('A > B') or level columns 'category,sub_category'."),
    click.option("--target-id", help="Target catalog id column."),
    click.option("--target-text", help="Target catalog text columns, comma separated."),
    click.option("--target-category", help="Target catalog category column(s)."),
    click.option("--taxonomy-column", help="Path column when --target-taxonomy is a table."),
    click.option("--leaves-only", is_flag=True, help="Only leaf categories are valid targets."),
    click.option("--category-context/--no-category-context", default=True, show_default=True,
                 help="Append the source category path to the product text that is embedded."),
    click.option("--delimiter", default=None, callback=lambda ctx, param, value: _delimiter(value),
                 help="Field separator of CSV/TSV/TXT inputs: ',', ';', tab or '|' [default: sniffed from each "
                      "file's first lines; the Summary's columns line says which was used]."),
]
MODEL_OPTIONS = [
    click.option("--model", default=None, help="Encoder: a model folder, a hub id, or omit for the bundled all-MiniLM-L6-v2."),
    click.option("--allow-download", is_flag=True, help="Allow fetching a hub model (otherwise the hub stays offline)."),
    click.option("--trust-remote-code", is_flag=True, help="Allow code shipped with a hub model to run (off by default)."),
    click.option("--device", default=None, help="torch device for encoding (default: cuda if present, else cpu)."),
    click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
                 help="Encoding precision. auto: bf16 on a CPU that computes it in hardware (AMX, AVX512-BF16), "
                      "fp32 elsewhere; fp32 forces it; fp16/bf16 for a GPU (README, Speed tiers)."),
    click.option("--backend", type=click.Choice(BACKENDS), default="torch", show_default=True,
                 help="Inference backend: openvino and onnx run 1.1-2x faster on a CPU with the same results "
                      "(extras taxmig[openvino], taxmig[onnx]; exported once and cached; a folder from taxmig "
                      "quantize runs with the backend it names; README, Speed tiers)."),
    click.option("--batch-size", type=click.IntRange(1, 4096), default=64, show_default=True, help="Encoding batch size."),
]
SCORING_OPTIONS = [
    click.option("--top-n", type=click.IntRange(1, 10), default=3, show_default=True,
                 help="Candidate categories kept per product (the top one plus alternatives)."),
    renamed_option("--top-k", "--top-n", click.IntRange(1, 10)),
    click.option("--neighbours", type=click.IntRange(1, 200), default=20, show_default=True,
                 help="Nearest target products that vote."),
    click.option("--lexical-weight", type=click.FloatRange(0, 1), default=0.5, show_default=True,
                 help="Share of the neighbour vote given to word-overlap (TF-IDF) neighbours; 0: the encoder's alone."),
    click.option("--classifier-weight", type=click.FloatRange(0, 1), default=0.5, show_default=True,
                 help="Share of the vote given to a linear text classifier trained on the target catalog; 0: off."),
    click.option("--self-training-rounds", type=click.IntRange(0, 10), default=3, show_default=True,
                 help="Taxonomy only: rounds of self-training over the source products (word model and "
                      "neighbour votes refine the label scores); 0: the label scores alone."),
    click.option("--min-confidence", type=float, default=None,
                 help="LOW_CONFIDENCE below this calibrated confidence [default: the lowest that reaches "
                      "--target-precision on the leave-one-out run; taxonomy only, self-trained: every row]."),
    _float_opt("--target-precision", 0.97, "Precision the unflagged rows should reach (sets --min-confidence)."),
    _float_opt("--min-raw-score", 0.5, "LOW_CONFIDENCE below this top score when confidence is not calibrated (taxonomy only)."),
    _float_opt("--min-margin", 0.1, "LOW_MARGIN when top-1 minus top-2 score is below this."),
    _float_opt("--min-similarity", 0.45, "NO_MATCH when the nearest target product's cosine is below this."),
    _float_opt("--min-label-similarity", 0.2, "NO_MATCH (taxonomy only) when the best label cosine is below this."),
    _float_opt("--split-min-share", 0.1, "SOURCE_SPLIT on rows whose target holds less than this share of their source category."),
    _float_opt("--lexical-min-ratio", 95.0, "LEXICAL_CONFLICT when a source category name matches another target at this rapidfuzz ratio."),
    click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of CSV/TSV/JSONL/text inputs."),
]
COMMON_OPTIONS = [
    click.option("--overwrite", is_flag=True, help="Replace existing output files."),
    click.option("-q", "--quiet", is_flag=True, help="No progress bars or progress messages."),
    click.option("-v", "--verbose", count=True, help="More log detail (-vv for library logs)."),
]
THRESHOLD_PARAMS = ("min_confidence", "target_precision", "min_raw_score", "min_margin", "min_similarity",
                    "min_label_similarity", "split_min_share", "lexical_min_ratio")
SETTING_PARAMS = ("target_catalog", "target_taxonomy", "source_id", "source_text", "source_category", "target_id",
                  "target_text", "target_category", "taxonomy_column", "leaves_only", "category_context", "encoding",
                  "delimiter")
SCORING_PARAMS = ("neighbours", "top_n", "lexical_weight", "classifier_weight", "self_training_rounds")
"""The options that fill ScoringParams, each under the field's own name."""
ENCODER_PARAMS = ("model", "allow_download", "trust_remote_code", "device", "precision", "backend", "batch_size")
"""The options that fill EncoderSettings (migrate.core.encoder.ENCODER_FIELDS; a test keeps them equal)."""


def encoder_settings(params: dict):
    """The EncoderSettings of a command's options, taken out of ``params`` (those given as None
    keep their defaults)."""
    from migrate.core.encoder import EncoderSettings

    return EncoderSettings(**{k: v for k in ENCODER_PARAMS if (v := params.pop(k, None)) is not None})


DELIMITER_WORDS = {"\\t": "\t", "tab": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}


def _delimiter(value: str | None) -> str | None:
    """``--delimiter``'s value as a character: also 'tab' or a typed backslash-t, 'semicolon', 'comma', 'pipe'."""
    if value is None:
        return None
    value = DELIMITER_WORDS.get(value.lower(), value)
    if len(value) != 1:
        raise click.BadParameter(f"{value!r}: give one character, e.g. ';' or tab")
    return value


def options(*groups):
    """Apply option groups (lists of click.option decorators) in order."""
    def decorate(f):
        for group in reversed(groups):
            for opt in reversed(group):
                f = opt(f)
        return f
    return decorate


def settings_from_params(source: Path, params: dict, quiet: bool):
    """A MigrationSettings from the shared options."""
    from migrate.mapping.flags import Thresholds
    from migrate.mapping.scoring import ScoringParams
    from migrate.mapping.settings import MigrationSettings

    return MigrationSettings(
        source=source, **{k: params[k] for k in SETTING_PARAMS}, encoder=encoder_settings(dict(params)),
        scoring=ScoringParams(**{k: params[k] for k in SCORING_PARAMS}),
        thresholds=Thresholds(**{k: params[k] for k in THRESHOLD_PARAMS}),
        progress=not quiet)


def explicit_overrides(ctx: click.Context) -> dict:
    """The shared options the user actually gave (for the nightly job: they replace remembered ones)."""
    from click.core import ParameterSource

    given = {k for k, v in ctx.params.items()
             if ctx.get_parameter_source(k) not in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP, None)}
    out: dict = {k: ctx.params[k] for k in SETTING_PARAMS if k in given}
    encoder = {k: ctx.params[k] for k in ENCODER_PARAMS if k in given}
    if encoder:
        out["encoder"] = encoder
    thresholds = {k: ctx.params[k] for k in THRESHOLD_PARAMS if k in given}
    if thresholds:
        out["thresholds"] = thresholds
    scoring = {k: ctx.params[k] for k in SCORING_PARAMS if k in given}
    if scoring:
        out["scoring"] = scoring
    return out


@main.command(context_settings=CONTEXT)
@click.argument("source", type=click.Path(path_type=Path))
@options(TARGET_OPTIONS)
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="Mapping file; the extension picks the format: .xlsx, .csv or .parquet "
                   "(with --engine ray: a folder).")
@options(COLUMN_OPTIONS, MODEL_OPTIONS, SCORING_OPTIONS)
@click.option("--state", type=click.Path(file_okay=False, path_type=Path),
              help="Also start a state folder for 'taxmig review apply' and nightly 'taxmig reconcile'.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="ray: map a Parquet file or folder onto a labelled target catalog on a Ray cluster "
                   "(RAY_ADDRESS, else a local Ray; pip install 'taxmig[ray]'); writes a folder of Parquet "
                   "shards, rejects, crosswalk and summary.json.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="--engine ray: actors in the pool, each loading the model once "
                   "[default: one per GPU of the cluster, else one per CPU].")
@click.option("--task-rows", type=click.IntRange(min=1), default=None,
              help="--engine ray: source rows an actor maps per task; smaller tasks keep more actors busy on a "
                   "small source, larger ones hold more vectors at once [default: 16384].")
@click.option("--ask", type=click.IntRange(min=0), default=None,
              help="Onto a taxonomy: questions the Review sheet opens with, the answers that teach most "
                   "(see 'review apply --next') [default: 2% of the products, 20 to 500].")
@click.option("--category-cache/--no-category-cache", default=True, show_default=True,
              help="Onto a taxonomy file: keep its category texts' vectors in the user's cache "
                   "($TAXMIG_CACHE_DIR, else ~/.cache/taxmig), so a later run encodes only the products.")
@click.option("--target-cache/--no-target-cache", default=True, show_default=True,
              help="Onto a labelled target catalog: keep its fitted side (vectors, classifier, calibration) in the "
                   "user's cache, so a later run onto the same target, model and settings maps only the source.")
@options(COMMON_OPTIONS)
def migrate(source, output, state, engine, workers, task_rows, ask, category_cache, target_cache, overwrite, quiet,
            verbose, **params) -> None:
    """Map every product of SOURCE to a target category and write a review-ready mapping.

    \b
    Examples:
      taxmig migrate sample_catalogs/bigbasket_sample.csv \\
          --target-taxonomy sample_catalogs/google_taxonomy_subset.txt -o out/mapping.xlsx
      taxmig migrate source.csv --target-catalog target.csv --target-category category,sub_category \\
          -o mapping.parquet --model models/retail-minilm
      taxmig migrate products.csv --target-taxonomy taxonomy.txt -o mapping.xlsx --state state/
    """
    from migrate.core.files import check_output
    from migrate.core.progress import Progress
    from migrate.mapping.output import write_output
    from migrate.mapping.pipeline import run_migration

    _setup_logging(verbose, quiet)
    settings = settings_from_params(source, params, quiet)
    if not category_cache or not target_cache:
        from dataclasses import replace

        settings = replace(settings, category_cache=category_cache, target_cache=target_cache)
    if ask is not None:
        from dataclasses import replace

        if settings.target_catalog is not None:
            raise click.UsageError("--ask chooses the questions of a review in rounds onto a taxonomy alone; "
                                   "drop it with --target-catalog")
        settings = replace(settings, ask=ask)
    if engine == "ray":
        from migrate.mapping.ray_engine import run_ray_migration

        if state is not None:
            raise click.UsageError("--state works with the local engine: the nightly job keeps its state on one "
                                   "machine (drop --engine ray)")
        run = run_ray_migration(settings, output, overwrite=overwrite, workers=workers,
                                **({"task_rows": task_rows} if task_rows else {}))
        click.echo(f"mapped {run.facts.mapped} of {run.facts.rows} source rows ({run.facts.rejected} rejected); "
                   f"{run.facts.needs_review} need review; wrote {output}/ "
                   f"(mapping/*.parquet, rejects.parquet, crosswalk.parquet, summary.json)")
        return
    if workers is not None or task_rows is not None:
        raise click.UsageError(f"--{'workers' if workers is not None else 'task-rows'} goes with --engine ray")
    check_output(output, overwrite=overwrite)  # fail before the slow part
    with Progress(not quiet) as display:  # the run's one display: its stages, then writing
        if state is not None:
            from migrate.nightly.reconcile import migrate_into_state

            result, written = migrate_into_state(settings, state, output, overwrite=overwrite)
        else:
            result = run_migration(settings, output=output)
            with display.stage("writing", unit="rows") as stage:
                written = write_output(result, output, overwrite=overwrite)
                stage.update(result.mapping.height)
    facts = result.facts
    click.echo(f"mapped {facts.mapped} of {facts.rows} source rows ({facts.rejected} rejected); "
               f"{facts.needs_review} need review; wrote {', '.join(str(p) for p in written)}"
               + (f"; started state {state}" if state is not None else ""))


@main.command(context_settings=CONTEXT)
@click.argument("catalog", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--state", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The state folder (created by --init or by 'taxmig migrate ... --state').")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Report workbook (.xlsx); a JSON summary for monitoring is written beside it (.json).")
@click.option("--init", is_flag=True, help="Create the state folder: the first night (give the target options).")
@options(TARGET_OPTIONS, COLUMN_OPTIONS, MODEL_OPTIONS, SCORING_OPTIONS)
@click.option("--review", "review_scope", type=click.Choice(["new", "all"]), default="new", show_default=True,
              help="Rows in the report's Review sheet (and behind exit code 2): those that need a person because "
                   "of tonight (new, changed, newly flagged), or the whole open queue.")
@click.option("--stale-below", type=click.FloatRange(0, 1), default=None,
              help="A decision goes stale when the product's text changes to one whose embedding cosine with "
                   "the decided text is below this [default: remembered, first 0.85].")
@click.option("--mapping", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write tonight's final mapping of every live product here (.csv, .parquet or .xlsx): "
                   "its final category and who set it, the columns of 'review apply'.")
@click.option("--rescore-all", is_flag=True,
              help="Score every product again. By default a product whose text, source category, model, target "
                   "and scoring settings are unchanged keeps last night's scores and suggestion.")
@options(COMMON_OPTIONS)
@click.pass_context
def reconcile(ctx, catalog, state, output, init, review_scope, stale_below, mapping, rescore_all, overwrite, quiet,
              verbose, **params) -> None:
    """Nightly: map CATALOG against the remembered target, report what changed, keep decisions.

    Only products that are new or whose text changed are embedded (a cache in the state folder)
    and scored (the others keep last night's scores; --rescore-all scores them all); a decision a
    person made wins until the product's text changes materially. The state is
    updated atomically under a lock; a killed run leaves the last good state, and running the
    same command again finishes the job.

    \b
    Exit codes: 0 nothing needs a person; 1 error (state unchanged);
                2 rows need review (see --review); 3 another run holds the lock (nothing done).
    \b
    Examples:
      taxmig reconcile live.csv --state state/ --init --target-taxonomy taxonomy.txt -o reports/night1.xlsx
      taxmig reconcile live.csv --state state/ -o reports/$(date +%F).xlsx
      taxmig reconcile live.csv --state state/ -o r.xlsx --target-taxonomy taxonomy-2026.txt
      taxmig reconcile live.csv --state state/ -o reports/$(date +%F).xlsx --mapping feed/final_mapping.parquet
    """
    from migrate.nightly.state import may_encode_with_torch
    from models import side_worker

    _setup_logging(verbose, quiet)
    overrides = explicit_overrides(ctx)
    if not init and may_encode_with_torch(state, catalog, overrides.get("encoder", {})):
        side_worker.start()  # imports torch on another core while the night reads its inputs
    try:
        from migrate.nightly.reconcile import reconcile as run_reconcile

        if init:
            if params["target_catalog"] is None and params["target_taxonomy"] is None:
                raise click.UsageError("--init needs the target: --target-catalog FILE and/or --target-taxonomy FILE")
            outcome = run_reconcile(catalog, state, output, init_settings=settings_from_params(catalog, params, quiet),
                                    stale_below=stale_below, overwrite=overwrite, progress=not quiet,
                                    review_scope=review_scope, mapping=mapping)
        else:
            outcome = run_reconcile(catalog, state, output, overrides=overrides, stale_below=stale_below,
                                    overwrite=overwrite, progress=not quiet, review_scope=review_scope,
                                    mapping=mapping, rescore_all=rescore_all)
    finally:
        side_worker.stop()
    click.echo(outcome.message)
    ctx.exit(outcome.exit_code)


@main.command("export", context_settings=CONTEXT)
@click.option("--state", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The state folder of 'taxmig migrate --state' or 'taxmig reconcile'.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Final mapping of every live product (.csv, .parquet or .xlsx).")
@options(COMMON_OPTIONS)
def export(state, output, overwrite, quiet, verbose) -> None:
    """Write the state's current final mapping: every live product, its final category and who set it.

    The columns of 'review apply': final_category is a reviewer's decision where one is in force,
    else the model's suggestion (final_source says which). Reads the last committed state, so it
    never waits for a nightly run in progress.

    \b
    Examples:
      taxmig export --state state/ -o final_mapping.csv
    """
    from migrate.nightly.export import export_mapping

    _setup_logging(verbose, quiet)
    path, rows = export_mapping(state, output, overwrite=overwrite)
    click.echo(f"exported the final mapping of {rows} products to {path}")


@main.group(context_settings=CONTEXT)
def review() -> None:
    """Reviewed workbooks back into the state."""


@review.command("apply", context_settings=CONTEXT)
@click.argument("workbook", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--state", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The state folder the workbook came from.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Final mapping of every live product (.csv, .parquet or .xlsx).")
@click.option("--reviewer", default=None,
              help="Who decided [default: the workbook's last-modified-by, else the login name].")
@click.option("--next", "next_workbook", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Onto a taxonomy: learn from every decision in force, map the undecided products again and "
                   "write the next round's workbook (.xlsx) here.")
@click.option("--ask", type=click.IntRange(min=0), default=None,
              help="With --next: questions the next round asks [default: 2% of the products, 20 to 500].")
@click.option("--target-precision", type=click.FloatRange(0, 1), default=None,
              help="With --next: the precision the unflagged rows must reach, measured on the decisions held "
                   "out [default: the state's, first 0.97].")
@options(COMMON_OPTIONS)
def review_apply(workbook, state, output, reviewer, next_workbook, ask, target_precision, overwrite, quiet,
                 verbose) -> None:
    """Apply the decisions in a reviewed WORKBOOK (Mapping, Review and Category decisions sheets).

    A row decision decides its product; a Category decisions row every other product of its
    source category (or source -> target pair). Every decision is checked first (known category,
    unchanged product id and text or category row, product still in the catalog, one decision per
    product or category); any problem stops the whole apply with a list of the cells to fix.

    With --next (a state onto a taxonomy), every decided product teaches the rest at once: the
    undecided products are mapped again from the cached embeddings, and the next round's workbook
    opens with the questions whose answers teach most.

    \b
    Examples:
      taxmig review apply reviewed.xlsx --state state/ -o final_mapping.csv
      taxmig review apply round1.xlsx --state state/ -o final.csv --next round2.xlsx
    """
    from migrate.nightly.review import apply_review

    _setup_logging(verbose, quiet)
    if next_workbook is None and (ask is not None or target_precision is not None):
        raise click.UsageError(f"--{'ask' if ask is not None else 'target-precision'} goes with --next")
    outcome = apply_review(workbook, state, output, reviewer=reviewer, overwrite=overwrite,
                           next_workbook=next_workbook, ask=ask, target_precision=target_precision,
                           progress=not quiet)
    click.echo(outcome.message)


@main.command(context_settings=CONTEXT)
@click.argument("catalog", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the fine-tuned model, e.g. models/retail-minilm.")
@click.option("--id", "id_col", help="Id column (default: id/sku/index…).")
@click.option("--text", help="Text columns, comma separated (default as in migrate).")
@click.option("--category", help="Category: a path column or level columns 'category,sub_category'.")
@click.option("--base-model", default=None, help="Encoder to start from (default: the bundled all-MiniLM-L6-v2).")
@click.option("--objective", type=click.Choice(["products", "labels"]), default="products", show_default=True,
              help="products: pairs of products that share (or not) a category; labels: (product, its category "
                   "path) pairs, so the encoder learns what category names mean (MultipleNegativesRankingLoss, "
                   "in-batch negatives).")
@click.option("--leaf-names", is_flag=True,
              help="With --objective labels: also (product, the path's last level) pairs, the names the mapping "
                   "compares level by level.")
@click.option("--loss", type=click.Choice(["cosine", "cosent", "mnrl"]), default="mnrl", show_default=True,
              help="MultipleNegativesRankingLoss on encoder-mined triplets (default), or "
                   "CosineSimilarityLoss / CoSENTLoss on hierarchy-scored pairs.")
@click.option("--matryoshka", is_flag=True, help="Wrap the loss in MatryoshkaLoss (384/192/96/48 dims).")
@click.option("--epochs", type=float, default=1.0, show_default=True)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--learning-rate", type=float, default=2e-5, show_default=True)
@click.option("--max-seq-length", type=int, default=64, show_default=True)
@click.option("--max-pairs", type=int, default=None, help="Cap on training pairs (deterministic subsample).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue an interrupted run in -o from its last checkpoint.")
@click.option("--decisions", "decisions_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="A state folder: its reviewers' decisions become extra training pairs (corrections weighted up).")
@click.option("--report-to", type=click.Choice(["none", "tensorboard", "wandb"]), default="none", show_default=True)
@click.option("--encoding", default="utf-8", show_default=True)
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
@click.option("-v", "--verbose", count=True)
def train(catalog, output, id_col, text, category, base_model, objective, leaf_names, loss, matryoshka, epochs,
          batch_size, learning_rate, max_seq_length, max_pairs, seed, resume, decisions_dir, report_to, encoding, quiet,
          verbose) -> None:
    """Fine-tune an encoder on a labelled CATALOG (pairs from its categories).

    \b
    Examples:
      taxmig train products.csv -o models/retail-minilm --category category,sub_category
      taxmig train products.csv -o models/retail-mnrl --loss mnrl --matryoshka --max-pairs 20000
      taxmig train target.csv -o models/retail-v2 --decisions state/   # reviewers' corrections as pairs
      taxmig train products.csv -o models/retail-labels --objective labels --category category,sub_category
    """
    from train.finetune import TrainConfig, train_encoder

    _setup_logging(verbose, quiet)
    config = TrainConfig(base_model=base_model, objective=objective, leaf_names=leaf_names, loss=loss,
                         matryoshka=matryoshka, epochs=epochs,
                         batch_size=batch_size, learning_rate=learning_rate, max_seq_length=max_seq_length,
                         max_pairs=max_pairs, seed=seed, resume=resume, report_to=report_to)
    decisions = None
    if decisions_dir is not None:
        from train.decisions import load_decisions

        decisions = load_decisions(decisions_dir)
    result = train_encoder(catalog, output, config, id=id_col, text=text, category=category, encoding=encoding,
                           decisions=decisions)
    ev = result.metrics["eval"]
    key = ev["primary_metric"]
    click.echo(f"trained {result.metrics['steps']} steps on {result.metrics['train_pairs']} pairs; held-out "
               f"{key} {ev['before'][key]:.4f} -> {ev['after'][key]:.4f}; saved {result.output_dir}")


@main.command(context_settings=CONTEXT)
@click.argument("catalog", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--model", required=True, help="The fine-tuned model folder to evaluate.")
@click.option("--baseline", default=None, help="Model to compare with (default: the bundled base model).")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Report folder (report.md, metrics.json, predictions.csv, PNG plots).")
@click.option("--id", "id_col")
@click.option("--text")
@click.option("--category")
@click.option("--seed", type=int, default=0, show_default=True, help="The split seed used for training.")
@click.option("--backend", type=click.Choice(BACKENDS), default="torch", show_default=True,
              help="How both models run (openvino, onnx: extras taxmig[openvino], taxmig[onnx]; README, Speed tiers).")
@click.option("--overwrite", is_flag=True, help="Replace an existing report folder's files.")
@click.option("--encoding", default="utf-8", show_default=True)
@click.option("-q", "--quiet", is_flag=True)
@click.option("-v", "--verbose", count=True)
def evaluate(catalog, model, baseline, output, id_col, text, category, seed, backend, overwrite, encoding, quiet,
             verbose) -> None:
    """Compare a fine-tuned model with a baseline on CATALOG's held-out split, side by side.

    \b
    Examples:
      taxmig evaluate products.csv --model models/retail-minilm -o reports/retail-minilm
    """
    from train.evaluate import evaluate_models

    _setup_logging(verbose, quiet)
    report = evaluate_models(catalog, model=model, baseline=baseline, output_dir=output, id=id_col, text=text,
                             category=category, seed=seed, overwrite=overwrite, encoding=encoding,
                             backend=backend)
    click.echo(f"wrote {report}")


@main.command(context_settings=CONTEXT)
@click.option("--model", default=None,
              help="Encoder to distil: a local folder (default: the bundled all-MiniLM-L6-v2).")
@click.option("--vocabulary", "vocabulary_files", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="A catalog or taxonomy file whose words join the vocabulary as whole tokens (repeat for "
                   "more). Measured to cost accuracy with MiniLM on BigBasket and Instacart (BENCHMARKS.md, "
                   "speed tiers): leave it out unless a bench on your data says otherwise.")
@click.option("--vocabulary-text", default=None, help="Text columns of the --vocabulary catalogs (default as in migrate).")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Model folder to write, e.g. models/retail-static.")
@click.option("--pca-dims", type=int, default=256, show_default=True, help="Width of the static vectors.")
@click.option("--min-count", type=click.IntRange(1), default=2, show_default=True,
              help="Add a catalog word used at least this many times.")
@click.option("--max-words", type=click.IntRange(0), default=50_000, show_default=True,
              help="At most this many catalog words (the most frequent).")
@click.option("--overwrite", is_flag=True, help="Replace an existing model folder.")
@click.option("--encoding", default="utf-8", show_default=True)
@click.option("-q", "--quiet", is_flag=True)
@click.option("-v", "--verbose", count=True)
def distill(model, vocabulary_files, vocabulary_text, output, pca_dims, min_count, max_words, overwrite, encoding,
            quiet, verbose) -> None:
    """Distil a static embedding model (the fast tier) from an encoder.

    The folder works wherever --model does; it encodes about 75x faster than the transformer on
    a CPU and suits a labelled target catalog, not a bare taxonomy (README, "Speed tiers and
    scale"). Needs the extra: pip install 'taxmig[static]'.

    \b
    Examples:
      taxmig distill -o models/retail-static
      taxmig distill --model models/retail-minilm -o models/retail-minilm-static
      taxmig migrate source.csv --target-catalog target.csv --model models/retail-static -o mapping.xlsx
    """
    from train.distill import distill_static

    _setup_logging(verbose, quiet)
    result = distill_static(output, model=model, vocabulary_files=vocabulary_files, vocabulary_text=vocabulary_text,
                            pca_dims=pca_dims, min_count=min_count, max_words=max_words, overwrite=overwrite,
                            encoding=encoding, progress=not quiet)
    click.echo(f"distilled {result.base_model} with {result.added_words} catalog words: {result.vocabulary_size} "
               f"tokens x {result.dimension} dims in {result.seconds} s; saved {result.output_dir} "
               f"(fingerprint {result.fingerprint})")


@main.command(context_settings=CONTEXT)
@click.option("--model", default=None,
              help="Encoder to quantize: a local folder (default: the bundled all-MiniLM-L6-v2).")
@click.option("--backend", type=click.Choice(("auto", "openvino", "onnx")), default="auto", show_default=True,
              help="Which int8 to write: openvino (static int8, calibrated) or onnx (onnxruntime's dynamic int8, "
                   "no calibration); auto: openvino where the CPU has int8 dot products (VNNI, AMX), onnx elsewhere "
                   "(README, Speed tiers).")
@click.option("--calibration", "calibration_files", multiple=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="openvino: a catalog or taxonomy file like the ones the model will map (repeat for more): the "
                   "int8 ranges are measured on its texts. No labels needed. onnx takes none.")
@click.option("--calibration-text", default=None, help="Text columns of the --calibration catalogs (default as in migrate).")
@click.option("--samples", type=click.IntRange(1, 100_000), default=300, show_default=True,
              help="openvino: calibration texts drawn at random (NNCF's default subset size).")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Model folder to write, e.g. models/retail-int8.")
@click.option("--overwrite", is_flag=True, help="Replace an existing model folder.")
@click.option("--encoding", default="utf-8", show_default=True)
@click.option("-q", "--quiet", is_flag=True)
@click.option("-v", "--verbose", count=True)
def quantize(model, backend, calibration_files, calibration_text, samples, output, overwrite, encoding, quiet,
             verbose) -> None:
    """Write an int8 copy of an encoder (the quantized tier).

    Use the folder with the --backend it names wherever --model is taken. OpenVINO's int8 encodes
    about 2.7x faster than torch on a CPU with VNNI or AMX; on one without, onnxruntime's about 1.7x,
    with the same top-1 within half a point on the catalogs measured (docs/models-and-speed.md).
    Needs the extra: pip install 'taxmig[openvino]' or 'taxmig[onnx]'.

    \b
    Examples:
      taxmig quantize -o models/retail-int8          # says which --backend runs it
      taxmig quantize --backend openvino --calibration source.csv -o models/retail-int8
      taxmig migrate source.csv --target-catalog target.csv --model models/retail-int8 --backend onnx -o mapping.xlsx
    """
    from train.quantize import int8_backend_here, quantize_onnx, quantize_openvino

    _setup_logging(verbose, quiet)
    backend = int8_backend_here() if backend == "auto" else backend
    if backend == "openvino" and not calibration_files:
        raise click.UsageError("--calibration FILE is needed for OpenVINO's int8: a catalog or taxonomy like the "
                               "ones you will map (static int8 measures activation ranges on example texts); "
                               "--backend onnx needs none")
    if backend == "onnx":
        if calibration_files:
            click.echo("note: --backend onnx quantizes activations as they come; --calibration is not used", err=True)
        result = quantize_onnx(output, model=model, overwrite=overwrite)
        how = "dynamic int8 (onnxruntime)"
    else:
        result = quantize_openvino(output, model=model, calibration_files=calibration_files,
                                   calibration_text=calibration_text, samples=samples, overwrite=overwrite,
                                   encoding=encoding, progress=not quiet)
        how = f"int8 on {result.samples} calibration texts (OpenVINO)"
    click.echo(f"quantized {result.base_model} to {how} in {result.seconds} s; saved {result.output_dir} "
               f"(fingerprint {result.fingerprint}); use it with --model {result.output_dir} --backend {backend}")
    from models.registry import int8_slow_here

    if backend == "openvino" and int8_slow_here():
        click.echo("warning: this CPU has no int8 dot-product instructions (VNNI or AMX): here OpenVINO's int8 model "
                   "may encode slower than the default --backend torch; on an AVX2-only CPU its first whole "
                   "migrations ran 0.73-1.00x torch fp32, and --backend onnx's int8 (taxmig quantize --backend onnx) "
                   "encoded faster (BENCHMARKS.md, speed tiers). Time them on your data", err=True)


@main.command("crosswalk", context_settings=CONTEXT)
@click.argument("old", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("new", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="Crosswalk file; the extension picks the format: .xlsx (review workbook), .csv or .parquet.")
@click.option("--products", type=click.Path(dir_okay=False, path_type=Path),
              help="Products filed under OLD's categories (CSV/TSV/XLSX/Parquet/JSONL): each old category is "
                   "also represented by its products' texts, and rows list the product count.")
@click.option("--product-id", help="Products' id column (default: id/sku/index…, else the row number).")
@click.option("--product-text", help="Products' text columns, comma separated (default as in migrate).")
@click.option("--product-category", help="Products' category: a path column or level columns "
                                         "'category,sub_category' (values are OLD's paths).")
@click.option("--old-column", help="Path column when OLD is a table.")
@click.option("--new-column", help="Path column when NEW is a table.")
@options(MODEL_OPTIONS)
@click.option("--top-n", type=click.IntRange(1, 10), default=3, show_default=True,
              help="Candidate new categories kept per old category (the top one plus alternatives).")
@renamed_option("--top-k", "--top-n", click.IntRange(1, 10))
@click.option("--parent-bonus", type=click.FloatRange(0), default=None,
              help="Added to the new category an old category's parent landed on [default: the measured one].")
@click.option("--product-weight", type=click.FloatRange(0), default=None,
              help="Weight of the products' mean vector beside the old path's vector [default: the measured one].")
@click.option("--min-score", type=click.FloatRange(0, 1), default=None, help="LOW_CONFIDENCE below this top score.")
@click.option("--min-margin", type=click.FloatRange(0, 1), default=None, help="LOW_MARGIN below this top-1 minus top-2.")
@click.option("--min-similarity", type=click.FloatRange(-1, 1), default=None,
              help="NO_MATCH when the best path cosine is below this.")
@click.option("--state", type=click.Path(file_okay=False, path_type=Path),
              help="Also start a state folder so 'taxmig review apply' takes the reviewed workbook.")
@click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of the input files.")
@options(COMMON_OPTIONS)
def crosswalk(old, new, output, state, overwrite, quiet, verbose, **params) -> None:
    """Map every category of taxonomy OLD onto taxonomy NEW (one row per old category).

    OLD and NEW may be any taxonomy layout 'migrate --target-taxonomy' reads (Google 'id - path',
    Shopify 'gid : path', a full_name YAML, one path per line, or a table with a path column).

    \b
    Examples:
      taxmig crosswalk google_full_names.yml shopify_categories.txt -o crosswalk.xlsx
      taxmig crosswalk old_paths.txt new_paths.txt -o crosswalk.xlsx --products catalog.csv \\
          --product-category category,sub_category --state state/
      taxmig review apply crosswalk_reviewed.xlsx --state state/ -o final_crosswalk.csv
    """
    from migrate.core.files import check_output
    from migrate.core.progress import Progress
    from migrate.mapping.crosswalk import CrosswalkSettings, run_crosswalk, write_crosswalk_output
    from migrate.nightly.crosswalk_state import crosswalk_into_state

    _setup_logging(verbose, quiet)
    check_output(output, overwrite=overwrite)  # fail before the slow part
    given = {k: v for k, v in params.items() if v is not None}
    encoder = encoder_settings(given)
    settings = CrosswalkSettings(old=old, new=new, progress=not quiet, encoder=encoder, **given).validate()
    with Progress(not quiet) as display:  # the run's one display: encoding, then writing
        if state is not None:
            result, written = crosswalk_into_state(settings, state, output, overwrite=overwrite)
        else:
            result = run_crosswalk(settings)
            with display.stage("writing", unit="rows") as stage:
                written = write_crosswalk_output(result, output, overwrite=overwrite)
                stage.update(result.mapping.height)
    click.echo(f"mapped {result.facts.mapped} old categories onto {result.facts.target_categories} new ones; "
               f"{result.facts.needs_review} need review; wrote {', '.join(str(p) for p in written)}"
               + (f"; started state {state}" if state is not None else ""))


MATCH_COLUMN_OPTIONS = [
    click.option("--left-id", help="Left id column (default: id/sku/index…, else the row number)."),
    click.option("--left-text", help="Left text columns, comma separated; the first is the title (default: "
                                     "name/title/product, brand, description)."),
    click.option("--left-brand", help="Left brand column compared for agreement (default: brand/manufacturer "
                                      "when present; '' for none)."),
    click.option("--left-code", help="Left model-number/MPN/GTIN columns, comma separated (default: model/mpn/gtin/"
                                     "ean/upc… when present; '' for none)."),
    click.option("--right-id", help="Right id column."),
    click.option("--right-text", help="Right text columns, comma separated; the first is the title."),
    click.option("--right-brand", help="Right brand column."),
    click.option("--right-code", help="Right model-number/MPN/GTIN columns."),
]


@main.command("match", context_settings=CONTEXT)
@click.argument("left", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("right", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="Matches file; the extension picks the format: .xlsx (review workbook), .csv or .parquet.")
@click.option("--within", is_flag=True, help="Find duplicates inside LEFT (no RIGHT) and give each a cluster_id.")
@click.option("--labels", type=click.Path(dir_okay=False, path_type=Path),
              help="Labelled pairs (left_id,right_id,label 1/0): the score's weights are fitted and the threshold "
                   "chosen on them; precision and recall at it are reported.")
@options(MATCH_COLUMN_OPTIONS, MODEL_OPTIONS)
@click.option("--candidates", type=click.IntRange(1, 200), default=10, show_default=True,
              help="Nearest right products (by encoder cosine) scored per left product.")
@click.option("--threshold", type=click.FloatRange(0, 1), default=None,
              help="Score from which a pair is a match [default: chosen on --labels; without: 0.1 for the mutual "
                   "best (one to one), 0.5 with --many-to-one].")
@click.option("--one-to-one/--many-to-one", "one_to_one", default=None,
              help="One to one: a pair is a match only when each product is the other's best candidate (the default "
                   "for two catalogs without --labels or a --reranker trained on them). Many to one: each left "
                   "product's best candidate, several may share a right product.")
@click.option("--cut-by-estimate", is_flag=True,
              help="Without labels, one to one: keep a mutual best pair only when its estimated match probability "
                   "(the no-labels estimate in the Summary) reaches the cut that maximises expected F1, or its score "
                   "reaches 0.5. For catalogs where few products have a twin (see 'Left products with a twin').")
@click.option("--min-precision", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="With --labels: the lowest threshold reaching this precision instead of the best F1.")
@click.option("--scorer", type=click.Choice(["logistic", "boosting"]), default="logistic", show_default=True,
              help="How the score's weights are fitted on --labels (logistic regression or gradient boosting).")
@click.option("--review-margin", type=click.FloatRange(0, 1, max_open=True), default=0.1, show_default=True,
              help="BORDERLINE when the best score is this close to the threshold.")
@click.option("--max-cluster-size", type=click.IntRange(2), default=10, show_default=True,
              help="With --within: LARGE_CLUSTER on clusters larger than this.")
@click.option("--reranker", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="A cross-encoder from 'taxmig train-match --cross-encoder': it reads every candidate pair; its "
                   "probability and the gaps to each product's best join the features (fitted on --labels; without, "
                   "the joined score train-match fitted, and its threshold, on the tables it was trained on; on other "
                   "tables its probability joins the no-labels estimate, which cuts the one-to-one matches).")
@click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of CSV/TSV/JSONL inputs.")
@options(COMMON_OPTIONS)
def match(left, right, output, within, labels, overwrite, quiet, verbose, **params) -> None:
    """Find the same or similar products of LEFT in RIGHT (or duplicates inside LEFT with --within).

    Each left product's candidates (nearest by encoder cosine, plus right products sharing a model
    number) are scored from the cosine, rapidfuzz title similarity and identifier agreement; the
    best is a match when its score reaches the threshold -- and, without labelled pairs, when the
    left product is also the right product's best (one to one).

    \b
    Examples:
      taxmig match abt.csv buy.csv -o matches.xlsx
      taxmig match abt.csv buy.csv --labels labelled_pairs.csv -o matches.csv --model models/match-abt-buy
      taxmig match abt.csv buy.csv --reranker models/rerank-abt-buy -o matches.xlsx
      taxmig match catalog.parquet --within -o duplicates.xlsx
    """
    from migrate.core.progress import Progress
    from migrate.matching.matcher import run_match
    from migrate.matching.output import check_match_output, write_match_output
    from migrate.matching.scoring import DEFAULT_THRESHOLD
    from migrate.matching.settings import MatchSettings

    _setup_logging(verbose, quiet)
    if within and right is not None:
        raise click.UsageError("--within finds duplicates inside one catalog: give LEFT only")
    if not within and right is None:
        raise click.UsageError("missing RIGHT: give LEFT RIGHT, or LEFT --within for duplicates inside LEFT")
    check_match_output(output, overwrite=overwrite, within=within)  # fail before the slow part
    settings = MatchSettings(left=left, right=right, within=within, labels=labels, progress=not quiet,
                             encoder=encoder_settings(params), **params)
    with Progress(not quiet) as display:  # the run's one display: its stages, then writing
        result = run_match(settings)
        with display.stage("writing", unit="rows") as stage:
            written = write_match_output(result, output, overwrite=overwrite)
            stage.update(result.matches.height)
    facts = result.facts
    quality = ""
    if result.threshold.precision is not None:
        quality = (f" (precision {result.threshold.precision:.3f}, recall {result.threshold.recall:.3f} on "
                   f"{result.threshold.n_pairs} labelled pairs)")
    what = f"{facts.clusters} duplicate clusters" if within else f"{facts.matches} matches"
    pairing = " (one to one)" if settings.pairs_one_to_one else ""
    if result.estimate is not None:
        quality = (f"; about {result.estimate.overlap:.0%} of left products have a twin (estimated without labels, "
                   f"{result.estimate.low:.0%}-{result.estimate.high:.0%})")
    at = f"at threshold {result.threshold.value:.3f}"
    if settings.cut_by_estimate and result.estimate is not None:
        at += f" and estimated match probability >= {result.estimate.cut:.3f} (or score >= {DEFAULT_THRESHOLD})"
    click.echo(f"matched {facts.mapped} products ({facts.rejected} rejected): {what} {at}{pairing}{quality}; "
               f"{facts.needs_review} need review; wrote {', '.join(str(p) for p in written)}")


@main.command("train-match", context_settings=CONTEXT)
@click.argument("left", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("right", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--pairs", required=True, multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Labelled training pairs (left_id,right_id,label 1/0; DeepMatcher's ltable_id,rtable_id,label too), "
                   "or a reviewed 'taxmig match' workbook whose decisions become pairs. Repeat it to add "
                   "corrections to labels: a pair in several keeps the last one's label.")
@click.option("--valid", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Labelled validation pairs for model selection [default: 10% of --pairs held out].")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the fine-tuned model, e.g. models/match-abt-buy.")
@click.option("--within", is_flag=True, help="The pairs are duplicates inside LEFT (no RIGHT).")
@click.option("--left-id")
@click.option("--left-text", help="As in 'taxmig match': the texts the model will embed.")
@click.option("--right-id")
@click.option("--right-text")
@click.option("--base-model", default=None, help="Encoder to start from (default: the bundled all-MiniLM-L6-v2).")
@click.option("--cross-encoder", is_flag=True,
              help="Train a cross-encoder re-ranker (for 'taxmig match --reranker') instead of fine-tuning the encoder.")
@click.option("--loss", type=click.Choice(["online_contrastive", "contrastive", "mnrl"]), default="online_contrastive",
              show_default=True, help="OnlineContrastiveLoss or ContrastiveLoss on the pairs, or "
                                      "MultipleNegativesRankingLoss on triplets from the matches (the cross-encoder "
                                      "always trains BinaryCrossEntropyLoss).")
@click.option("--epochs", type=float, default=None, help="[default: 2; 6 with --cross-encoder]")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--learning-rate", type=float, default=None, help="[default: 3e-5; 5e-5 with --cross-encoder]")
@click.option("--max-seq-length", type=int, default=None,
              help="Tokens per text [default: 64; per pair with --cross-encoder].")
@click.option("--max-pairs", type=int, default=None, help="Cap on training pairs (deterministic subsample).")
@click.option("--evaluations", type=click.IntRange(1), default=8, show_default=True,
              help="Validation runs (and checkpoints) spread over training; the best is kept.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--report-to", type=click.Choice(["none", "tensorboard", "wandb"]), default="none", show_default=True)
@click.option("--encoding", default="utf-8", show_default=True)
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
@click.option("-v", "--verbose", count=True)
def train_match(left, right, pairs, valid, output, within, left_id, left_text, right_id, right_text, base_model,
                cross_encoder, loss, epochs, batch_size, learning_rate, max_seq_length, max_pairs, evaluations, seed,
                report_to, encoding, quiet, verbose) -> None:
    """Fine-tune an encoder for 'taxmig match' on labelled pairs of LEFT and RIGHT products.

    \b
    Examples:
      taxmig train-match abt.csv buy.csv --pairs train.csv --valid valid.csv -o models/match-abt-buy
      taxmig train-match catalog.csv --within --pairs duplicates.csv -o models/dedupe
      taxmig train-match abt.csv buy.csv --pairs train.csv --pairs matches_reviewed.xlsx -o models/match-v2
      taxmig train-match abt.csv buy.csv --pairs train.csv --valid valid.csv --cross-encoder -o models/rerank-abt-buy
    """
    from migrate.matching.reranker import EPOCHS, LEARNING_RATE, MAX_LENGTH
    from train.finetune import TrainConfig
    from train.match import train_match_encoder

    _setup_logging(verbose, quiet)
    if within and right is not None:
        raise click.UsageError("--within trains on pairs inside one catalog: give LEFT only")
    if not within and right is None:
        raise click.UsageError("missing RIGHT: give LEFT RIGHT, or LEFT --within")
    if max_seq_length is None:
        max_seq_length = MAX_LENGTH if cross_encoder else 64
    if learning_rate is None:
        learning_rate = LEARNING_RATE if cross_encoder else 3e-5
    if epochs is None:
        epochs = EPOCHS if cross_encoder else 2.0
    config = TrainConfig(base_model=base_model, loss=loss, epochs=epochs, batch_size=batch_size,
                         learning_rate=learning_rate, max_seq_length=max_seq_length, max_pairs=max_pairs,
                         evaluations=evaluations, seed=seed, report_to=report_to)
    if cross_encoder:
        from train.cross_encoder import train_cross_encoder as train_model
    else:
        train_model = train_match_encoder
    result = train_model(left, right, pairs, output, config, valid=valid, within=within, left_id=left_id,
                         left_text=left_text, right_id=right_id, right_text=right_text, encoding=encoding)
    ev = result.metrics["eval"]
    key = ev["primary_metric"]
    threshold = result.metrics.get("threshold")
    click.echo(f"trained {result.metrics['steps']} steps on {result.metrics['train_pairs']} pairs; validation "
               f"{key} {ev['before'][key]:.4f} -> {ev['after'][key]:.4f}"
               + (f"; threshold {threshold['threshold']:.3f} (F1 {threshold['f1']:.3f} on the validation pairs)"
                  if threshold else "") + f"; saved {result.output_dir}")


def console_main() -> None:
    """The ``taxmig`` console script (and ``python -m migrate.cli``): the command, then
    ``gc.freeze()`` before the interpreter exits. Exiting runs one last garbage collection over
    every object alive, and torch and transformers leave millions: over a second of every command
    that loaded a model, a fraction of that with the objects frozen. Exit handlers still run and
    files are still closed; only that final collection skips them. Not in ``main`` itself, which
    in-process callers (tests, CliRunner) share."""
    import gc

    try:
        main()
    finally:
        gc.freeze()


if __name__ == "__main__":  # pragma: no cover
    console_main()
