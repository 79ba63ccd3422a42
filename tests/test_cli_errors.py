"""The CLI's error paths on real files: exit 1, one 'Error:' line naming the file, no traceback, and
all before the model would load."""

from __future__ import annotations

import csv
import io
import sys

import pytest
from click.testing import CliRunner

import migrate.mapping.pipeline  # noqa: F401  (imported here so that import time is not counted below)
from migrate import __version__
from migrate.cli import main
from tests.conftest import SAMPLES, counting_model_loads, data_file

TAXONOMY = SAMPLES / "google_taxonomy_subset.txt"
N = 40


@pytest.fixture(autouse=True)
def no_model(monkeypatch):
    """Any attempt to load the encoder fails the test: errors must come from reading the inputs."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the input error was found")

    monkeypatch.setattr("migrate.mapping.pipeline.load_model", refuse)
    monkeypatch.setattr("migrate.core.encoder.load_encoder", refuse)


@pytest.fixture(scope="module")
def real():
    with data_file("bigbasket", "products.csv").open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)[:9]
        rows = [next(reader)[:9] for _ in range(N)]
        creme = next(r for r in reader if "Crème" in r[1])[:9]
    return header, rows, creme


def _csv_text(header, rows) -> str:
    buf = io.StringIO()
    csv.writer(buf).writerows([header, *rows])
    return buf.getvalue()


@pytest.fixture
def source(tmp_path, real):
    header, rows, _ = real
    path = tmp_path / "source.csv"
    path.write_text(_csv_text(header, rows), encoding="utf-8")
    return path


def run_cli(*args: object):
    """(the result, the encoder loads the command asked for)."""
    runner = CliRunner()
    with counting_model_loads() as loads:
        result = runner.invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result, loads


def error_line(result, loads) -> str:
    """Check the common contract and return the message after 'Error: '."""
    out = result.output
    assert result.exit_code == 1, out
    assert "Traceback" not in out
    assert not loads, f"the model was loaded ({loads}): the error must come before it"
    errors = [line for line in out.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, out
    # the message is that one line: nothing after it
    assert out.rstrip("\n").endswith(errors[0])
    assert "unexpected" not in errors[0]  # not the catch-all for bugs
    return errors[0][len("Error: "):]


def test_source_file_missing(tmp_path):
    missing = tmp_path / "no_such_source.csv"
    msg = error_line(*run_cli("migrate", missing, "--target-taxonomy", TAXONOMY, "-o", tmp_path / "m.xlsx"))
    assert f"{missing}: file not found" in msg
    assert not (tmp_path / "m.xlsx").exists()


def test_no_target_given(source, tmp_path):
    msg = error_line(*run_cli("migrate", source, "-o", tmp_path / "m.xlsx"))
    assert "no target given" in msg
    # says how to give one (settings.py's hint now points at --help rather than naming the options)
    assert ("--target-catalog" in msg and "--target-taxonomy" in msg) or "--help" in msg


def test_missing_taxonomy_file(source, tmp_path):
    tax = tmp_path / "tax.txt"
    msg = error_line(*run_cli("migrate", source, "--target-taxonomy", tax, "-o", tmp_path / "m.xlsx"))
    assert f"{tax}: file not found" in msg


@pytest.mark.parametrize("name", ["m.xlsx", "m.csv"])
def test_output_exists_without_overwrite(source, tmp_path, name):
    out = tmp_path / name
    out.write_text("an earlier mapping")
    msg = error_line(*run_cli("migrate", source, "--target-taxonomy", TAXONOMY, "-o", out))
    assert f"{out} already exists" in msg and "--overwrite" in msg
    assert out.read_text() == "an earlier mapping"


def test_csv_output_sidecar_exists(source, tmp_path):
    (tmp_path / "m.rejects.csv").write_text("earlier rejects")
    msg = error_line(*run_cli("migrate", source, "--target-taxonomy", TAXONOMY, "-o", tmp_path / "m.csv"))
    assert f"{tmp_path / 'm.rejects.csv'} already exists" in msg


def test_misnamed_source_text_columns_all_listed(source, tmp_path):
    msg = error_line(*run_cli("migrate", source, "--target-taxonomy", TAXONOMY, "-o", tmp_path / "m.xlsx",
                              "--source-text", "prodct,brnd", "--source-category", "categry,sub_category"))
    assert msg.startswith(f"{source}: ")
    assert "column 'prodct' not found (did you mean 'product'?)" in msg
    assert "column 'brnd' not found (did you mean 'brand'?)" in msg
    assert "column 'categry' not found (did you mean 'category'?)" in msg
    assert "the columns are: index, product, category, sub_category, brand" in msg


def test_undecodable_source(tmp_path, real):
    header, rows, creme = real
    path = tmp_path / "cp1252.csv"
    path.write_bytes(_csv_text(header, [*rows, creme]).encode("cp1252"))
    msg = error_line(*run_cli("migrate", path, "--target-taxonomy", TAXONOMY, "-o", tmp_path / "m.xlsx"))
    assert msg.startswith(f"{path}, row {N + 2}: ")
    assert f"line {N + 2}" in msg
    assert "--encoding" in msg


def test_empty_source(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    msg = error_line(*run_cli("migrate", path, "--target-taxonomy", TAXONOMY, "-o", tmp_path / "m.xlsx"))
    assert msg.startswith(f"{path}: is empty")


def test_header_only_source(tmp_path, real):
    header, _, _ = real
    path = tmp_path / "header.csv"
    path.write_text(",".join(header) + "\n")
    msg = error_line(*run_cli("migrate", path, "--target-taxonomy", TAXONOMY, "-o", tmp_path / "m.xlsx"))
    assert msg.startswith(f"{path}: has a header but no rows")


@pytest.mark.parametrize("name", ["m.json", "m.xls", "mapping"])
def test_unknown_output_extension(source, tmp_path, name):
    out = tmp_path / name
    msg = error_line(*run_cli("migrate", source, "--target-taxonomy", TAXONOMY, "-o", out))
    assert str(out) in msg and "unknown output format" in msg
    assert ".xlsx" in msg


def test_target_catalog_where_no_product_has_a_category(source, tmp_path, real):
    header, rows, _ = real
    c, s = header.index("category"), header.index("sub_category")
    blank = [[v if j not in (c, s) else "" for j, v in enumerate(r)] for r in rows]
    target = tmp_path / "target.csv"
    target.write_text(_csv_text(header, blank), encoding="utf-8")
    msg = error_line(*run_cli("migrate", source, "--target-catalog", target, "-o", tmp_path / "m.xlsx"))
    assert msg.startswith(f"{target}: no target product has a usable category")
    assert "--target-category" in msg


def test_target_catalog_without_category_column(source, tmp_path, real):
    header, rows, _ = real
    keep = [j for j, h in enumerate(header) if h not in ("category", "sub_category")]
    target = tmp_path / "target.csv"
    target.write_text(_csv_text([header[j] for j in keep], [[r[j] for j in keep] for r in rows]), encoding="utf-8")
    msg = error_line(*run_cli("migrate", source, "--target-catalog", target, "-o", tmp_path / "m.xlsx"))
    assert msg.startswith(f"{target}: no category column")
    assert "--target-category" in msg


def test_quiet_error_is_the_only_output(tmp_path):
    missing = tmp_path / "gone.csv"
    result, seconds = run_cli("migrate", missing, "--target-taxonomy", TAXONOMY, "-o", tmp_path / "m.xlsx", "-q")
    error_line(result, seconds)
    assert result.output.strip().count("\n") == 0


def test_usage_error_is_exit_64_not_2(tmp_path):
    """2 means "rows need review" to a scheduler running reconcile; usage errors must not look like it."""
    result, _ = run_cli("migrate", "--no-such-option")
    assert result.exit_code == 64
    assert "No such option" in result.output and "Traceback" not in result.output
    result, _ = run_cli("reconcile", "catalog.csv")
    assert result.exit_code == 64 and "Missing option '--state'" in result.output


# --- help and version -----------------------------------------------------------------------------

@pytest.mark.parametrize("args", [["-h"], ["--help"]])
def test_group_help_shows_examples(args):
    result, _ = run_cli(*args)
    assert result.exit_code == 0
    assert "Examples" in result.output
    assert "--overwrite" in result.output
    assert "taxmig migrate" in result.output
    assert "migrate" in result.output.split("Commands:")[1]


@pytest.mark.parametrize("args", [["migrate", "--help"], ["migrate", "-h"]])
def test_migrate_help_shows_examples_and_options(args):
    result, _ = run_cli(*args)
    assert result.exit_code == 0
    out = result.output
    assert "Examples" in out
    assert "--overwrite" in out
    assert "taxmig migrate sample_catalogs/bigbasket_sample.csv" in out
    for option in ("--target-catalog", "--target-taxonomy", "--source-text", "--encoding", "--model", "-o, --output"):
        assert option in out


def test_the_old_top_k_flag_still_fills_top_n_with_a_one_line_note(source, tmp_path, monkeypatch):
    """--top-k, renamed --top-n, still works in users' scripts: hidden from --help, one line saying
    so, the same setting (migrate, crosswalk, a night's overrides); given beside a different
    --top-n it is a usage error."""
    import migrate.nightly.crosswalk_state  # noqa: F401  (binds the real run_crosswalk before it is patched)
    from migrate.errors import TaxmigError

    seen = {}

    def stop(name):
        def capture(*args, **kwargs):
            seen[name] = (args, kwargs)
            raise TaxmigError("stopped before the model")
        return capture

    monkeypatch.setattr("migrate.mapping.pipeline.run_migration", stop("migrate"))
    monkeypatch.setattr("migrate.mapping.crosswalk.run_crosswalk", stop("crosswalk"))
    monkeypatch.setattr("migrate.nightly.reconcile.reconcile", stop("reconcile"))
    monkeypatch.setattr("migrate.nightly.state.may_encode_with_torch", lambda *a: False)
    migrate = ["migrate", source, "--target-taxonomy", TAXONOMY, "-o", tmp_path / "m.csv"]
    for flags in (["--top-k", 5], ["--top-k=5"], ["--top-n", 5], ["--top-k", 5, "--top-n", 5]):
        result, _ = run_cli(*migrate, *flags, "--neighbours", 7)
        assert result.exit_code == 1 and "stopped before the model" in result.output
        assert ("--top-k is deprecated, use --top-n" in result.output) == any("--top-k" in str(f) for f in flags)
        scoring = seen.pop("migrate")[0][0].scoring
        assert (scoring.top_n, scoring.neighbours) == (5, 7)
    result, _ = run_cli("crosswalk", TAXONOMY, TAXONOMY, "-o", tmp_path / "c.csv", "--top-k", 2)
    assert result.exit_code == 1 and "--top-k is deprecated, use --top-n" in result.output
    assert seen.pop("crosswalk")[0][0].top_n == 2
    result, _ = run_cli("reconcile", source, "--state", tmp_path / "s", "-o", tmp_path / "r.xlsx", "--top-k", 4)
    assert result.exit_code == 1 and seen.pop("reconcile")[1]["overrides"] == {"scoring": {"top_n": 4}}
    result, _ = run_cli(*migrate, "--top-n", 4, "--top-k", 5)
    assert result.exit_code == 64 and "--top-n 4 and --top-k 5 disagree" in result.output and not seen
    for command in ("migrate", "crosswalk", "reconcile"):
        out = run_cli(command, "--help")[0].output
        assert "--top-n" in out and "--top-k" not in out


def test_version():
    result, _ = run_cli("--version")
    assert result.exit_code == 0
    assert result.output.strip() == f"taxmig, version {__version__}"


def test_a_source_whose_every_row_is_rejected_is_an_error_naming_the_reasons(tmp_path):
    src = tmp_path / "all_empty.csv"
    src.write_text("id,product,brand\n1,,Amul\n2,,Tata\n", encoding="utf-8")
    out = tmp_path / "out.xlsx"
    result = CliRunner().invoke(main, ["migrate", str(src), "--target-taxonomy",
                                       str(SAMPLES / "google_taxonomy_subset.txt"),
                                       "-o", str(out), "-q"])
    assert result.exit_code == 1
    assert "none of its 2 rows can be mapped" in result.output and "row 2: empty text" in result.output
    assert "Traceback" not in result.output and not out.exists()


def test_a_mapping_past_excels_rows_is_refused_before_the_model_loads(bigbasket, tmp_path, monkeypatch):
    """More real rows than an .xlsx sheet holds (BigBasket repeated, ids made unique): a clear error
    naming the limit and the fix, no file written, the model never loaded (the autouse fixture).
    The sheet limit is lowered to 20,000 rows here so the test reads 21,000 rather than Excel's
    1,048,576 (bench/scale_bench.py writes a million-row mapping for real)."""
    import polars as pl

    import migrate.core.files as files

    monkeypatch.setattr(files, "EXCEL_MAX_ROWS", 20_000)
    rows = 21_000
    frame = bigbasket.select("product", "category", "sub_category", "brand")
    big = pl.concat([frame] * (rows // frame.height + 1)).head(rows).with_row_index("id")
    source = tmp_path / "many.csv"
    big.write_csv(source)
    out = tmp_path / "mapping.xlsx"
    result = CliRunner().invoke(main, ["migrate", str(source), "--target-taxonomy", str(TAXONOMY), "-o", str(out),
                                       "--quiet"])
    assert result.exit_code == 1, result.output
    assert f"{out}: 20,999 products do not fit an Excel sheet" in result.output  # one BigBasket row has no name
    assert "(19,999 rows below the header)" in result.output and "-o mapping.parquet" in result.output
    assert not out.exists() and "Traceback" not in result.output


def test_commands_without_a_state_folder_run_where_fcntl_is_missing(tmp_path):
    """Windows has no fcntl: only commands that lock a state folder may need it, not the CLI itself
    (a fresh process with fcntl made unimportable gets the ordinary input error, exit 1)."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    code = ("import sys; sys.modules['fcntl'] = None\n"
            "from migrate.cli import main\n"
            f"main(['migrate', {str(tmp_path / 'missing.csv')!r}, '--target-taxonomy', {str(TAXONOMY)!r}, "
            f"'-o', {str(tmp_path / 'o.xlsx')!r}])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 1, done.stderr
    assert "missing.csv: file not found" in done.stderr and "Traceback" not in done.stderr


def test_the_console_script_keeps_the_exit_code_and_freezes_objects_before_exit(monkeypatch, capsys):
    """``taxmig`` runs the command, then ``gc.freeze()`` (interpreter exit then skips a last
    collection over torch's objects); the exit code is the command's, usage errors included."""
    import gc

    from migrate.cli import console_main

    frozen: list[bool] = []
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(True))
    for argv, code in ((["taxmig", "--version"], 0), (["taxmig", "migrate"], 64)):
        monkeypatch.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit) as exc:
            console_main()
        assert exc.value.code == code
    assert frozen == [True, True]
    assert "taxmig" in capsys.readouterr().out
