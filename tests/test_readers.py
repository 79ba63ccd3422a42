"""migrate.core.readers.read_table on real BigBasket rows in every supported format, and on bad input."""

from __future__ import annotations

import csv
import io
import json

import openpyxl
import polars as pl
import pytest

from migrate.core.readers import ROW, read_table
from migrate.errors import InputError
from tests.conftest import SAMPLES, data_file

N = 40
REAL_COLUMNS = ["index", "product", "category", "sub_category", "brand", "sale_price", "market_price", "type",
                "rating"]


def _real_rows(n: int = N) -> tuple[list[str], list[list[str]]]:
    """Header and the first ``n`` product rows of BigBasket, read with the csv module, without the two
    empty trailing columns the spreadsheet export left (SOURCES.md says drop them)."""
    with data_file("bigbasket", "products.csv").open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = [next(reader) for _ in range(n)]
    width = len(REAL_COLUMNS)
    assert header[:width] == REAL_COLUMNS
    return header[:width], [r[:width] for r in rows]


def _write_delimited(path, header, rows, delimiter):
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _write_xlsx(path, header, rows, numeric=()):
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(header)
    for row in rows:
        cells = []
        for name, value in zip(header, row):
            if name in numeric and value != "":
                cells.append(float(value))
            else:
                cells.append(value if value != "" else None)
        sheet.append(cells)
    book.save(path)
    return path


def _write_parquet(path, header, rows):
    pl.DataFrame({h: [r[i] for r in rows] for i, h in enumerate(header)},
                 schema={h: pl.String for h in header}).write_parquet(path)
    return path


def _write_jsonl(path, header, rows):
    path.write_text("".join(json.dumps(dict(zip(header, r))) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def real40():
    return _real_rows()


@pytest.fixture(scope="module")
def formats(tmp_path_factory, real40):
    header, rows = real40
    d = tmp_path_factory.mktemp("formats")
    return {
        "csv": _write_delimited(d / "p.csv", header, rows, ","),
        "tsv": _write_delimited(d / "p.tsv", header, rows, "\t"),
        "xlsx": _write_xlsx(d / "p.xlsx", header, rows),
        "parquet": _write_parquet(d / "p.parquet", header, rows),
        "jsonl": _write_jsonl(d / "p.jsonl", header, rows),
    }


EXPECTED_ROWS = {
    "csv": list(range(2, N + 2)),      # header is row 1
    "tsv": list(range(2, N + 2)),
    "xlsx": list(range(2, N + 2)),
    "parquet": list(range(1, N + 1)),  # record number from 1
    "jsonl": list(range(1, N + 1)),    # line number
}


@pytest.mark.parametrize("fmt", list(EXPECTED_ROWS))
def test_each_format_reads_the_real_rows_with_documented_row_numbers(formats, real40, fmt):
    header, rows = real40
    table = read_table(formats[fmt])
    assert table.columns == header
    assert table.frame.columns == [*header, ROW]
    assert table.rejects == []
    assert table.n_records == N
    assert table.frame.height == N
    assert table.frame[ROW].to_list() == EXPECTED_ROWS[fmt]
    assert all(t == pl.String for c, t in table.frame.schema.items() if c != ROW)
    assert table.frame.drop(ROW).rows() == [tuple(r) for r in rows]
    # spot values from the real file
    assert table.frame["product"][0] == "Garlic Oil - Vegetarian Capsule 500 mg"
    assert table.frame["brand"][0] == "Sri Sri Ayurveda "  # trailing space kept as in the file
    assert table.frame["category"][1] == "Kitchen, Garden & Pets"  # quoted comma in the CSV
    assert table.frame["product"][2] == "Brass Angle Deep - Plain, No.2"


def test_all_formats_give_identical_frames_apart_from_row_numbers(formats):
    frames = {fmt: read_table(path).frame.drop(ROW) for fmt, path in formats.items()}
    base = frames["csv"]
    for fmt, frame in frames.items():
        assert frame.equals(base), fmt


def test_xlsx_numeric_cells_come_back_as_the_same_text_as_csv(tmp_path, real40):
    header, rows = real40
    path = _write_xlsx(tmp_path / "typed.xlsx", header, rows, numeric={"index", "sale_price", "market_price",
                                                                        "rating"})
    table = read_table(path)
    assert table.frame.drop(ROW).rows() == [tuple(r) for r in rows]
    assert table.frame["index"].to_list()[:3] == ["1", "2", "3"]          # not "1.0"
    assert table.frame["sale_price"][19] == "85.14"


def test_xlsx_blank_rows_are_skipped_and_row_numbers_follow_the_sheet(tmp_path, real40):
    header, rows = real40
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(header)
    sheet.append(rows[0])
    sheet.append([None] * len(header))  # row 3 blank
    sheet.append(rows[1])
    book.save(tmp_path / "gap.xlsx")
    table = read_table(tmp_path / "gap.xlsx")
    assert table.frame[ROW].to_list() == [2, 4]
    assert table.frame["index"].to_list() == ["1", "2"]


def test_csv_with_utf8_bom_has_a_clean_first_column(tmp_path, real40):
    header, rows = real40
    buf = io.StringIO()
    csv.writer(buf).writerows([header, *rows])
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + buf.getvalue().encode("utf-8"))
    table = read_table(path)
    assert table.columns[0] == "index"
    assert table.frame["index"].to_list()[:2] == ["1", "2"]


# --- the real description file: multi-line quoted cells and one malformed record ------------------

def _csv_records_with_start_lines(path):
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        start = reader.line_num + 1
        for record in reader:
            yield header, start, record
            start = reader.line_num + 1


def test_description_file_malformed_record_is_one_reject_at_its_start_line():
    path = data_file("bigbasket", "products_with_description_first6079.csv")
    expected = {}
    n_good = 0
    for header, start, record in _csv_records_with_start_lines(path):
        if len(record) != len(header):
            expected[record[0]] = start
        else:
            n_good += 1
    assert list(expected) == ["6"]  # the one malformed record, found independently of taxmig

    table = read_table(path)
    assert table.frame.height == 6078 == n_good
    assert table.n_records == 6079
    assert len(table.rejects) == 1
    reject = table.rejects[0]
    assert reject.id == "6"
    assert reject.row == expected["6"]
    assert reject.row == 8  # records 1..5 span lines 2..7 (record 4 has a two-line description)
    assert "malformed" in reject.reason
    assert reject.text.startswith("6,Germ - Removal Multipurpose Wipes")
    ids = table.frame["index"].to_list()
    assert "6" not in ids
    assert ids[:6] == ["1", "2", "3", "4", "5", "7"]
    assert ids[-1] == "6079"


def test_description_file_multiline_descriptions_survive_intact():
    path = data_file("bigbasket", "products_with_description_first6079.csv")
    truth = {rec[0]: (start, rec[9]) for header, start, rec in _csv_records_with_start_lines(path)
             if len(rec) == len(header)}
    multiline = {k: v for k, v in truth.items() if "\n" in v[1]}
    assert len(multiline) > 10

    table = read_table(path)
    got = dict(zip(table.frame["index"].to_list(), zip(table.frame[ROW].to_list(),
                                                      table.frame["description"].to_list())))
    for pid, (start, description) in multiline.items():
        assert got[pid] == (start, description), pid
    # the record after a multi-line one starts on the right line
    assert got["7"][0] == 11
    # empty descriptions stay empty strings, not dropped rows
    assert sum(1 for _, d in truth.values() if d == "") == sum(1 for _, d in got.values() if d == "")


def test_full_bigbasket_products_csv():
    table = read_table(data_file("bigbasket", "products.csv"))
    assert table.frame.height == 27_555
    assert table.rejects == []
    assert table.columns == [*REAL_COLUMNS, "unnamed_10", "unnamed_11"]
    # two product names hold a line break, so the last record starts on line 27,558, not 27,556
    starts = {rec[0]: start for _, start, rec in _csv_records_with_start_lines(data_file("bigbasket", "products.csv"))}
    assert dict(zip(table.frame["index"].to_list(), table.frame[ROW].to_list())) == starts
    assert table.frame[ROW][0] == 2 and table.frame[ROW][-1] == 27_558
    assert "Unsweetened Peanut Butter \r\nCreamy" in table.frame["product"].to_list()
    assert table.frame["index"][-1] == "27555"
    # the trailing blank-header columns are empty apart from a stray value on the first row
    assert table.frame["unnamed_10"].str.len_chars().sum() == 0
    assert table.frame["unnamed_11"].to_list()[0] == "4.1"
    assert (table.frame["unnamed_11"] != "").sum() == 1
    # nulls come through as empty text
    assert (table.frame["product"] == "").sum() == 1
    assert table.frame.filter(pl.col("product") == "")["index"].to_list() == ["14364"]


def test_bundled_sample_reads():
    table = read_table(SAMPLES / "bigbasket_sample.csv")
    assert table.columns[:3] == ["index", "product", "category"]
    assert table.rejects == []
    assert table.frame.height > 100


# --- encodings ------------------------------------------------------------------------------------

def _cp1252_file(tmp_path, real40):
    """The 40 real rows plus the real BigBasket row whose product name has 'Crème', saved as cp1252."""
    header, rows = real40
    with data_file("bigbasket", "products.csv").open(encoding="utf-8", newline="") as fh:
        creme = next(r for r in csv.reader(fh) if "Crème" in r[1])
    buf = io.StringIO()
    csv.writer(buf).writerows([header, *rows, creme[: len(header)]])
    path = tmp_path / "cp1252.csv"
    path.write_bytes(buf.getvalue().encode("cp1252"))
    return path, creme


def test_undecodable_bytes_name_file_line_and_encoding_option(tmp_path, real40):
    path, _ = _cp1252_file(tmp_path, real40)
    with pytest.raises(InputError) as err:
        read_table(path)
    msg = str(err.value)
    assert str(path) in msg
    assert err.value.row == N + 2  # header line 1, 40 rows, then the Crème row
    assert f"line {N + 2}" in msg
    assert "--encoding" in msg
    assert "\n" not in msg


def test_same_file_reads_with_its_encoding(tmp_path, real40):
    path, creme = _cp1252_file(tmp_path, real40)
    table = read_table(path, encoding="cp1252")
    assert table.frame.height == N + 1
    assert table.frame["product"][-1] == creme[1]
    assert "Crème" in table.frame["product"][-1]
    assert table.frame[ROW][-1] == N + 2


def test_unknown_encoding_name(tmp_path, formats):
    with pytest.raises(InputError, match="unknown encoding 'latin-99'"):
        read_table(formats["csv"], encoding="latin-99")


def test_undecodable_jsonl_names_line(tmp_path, real40):
    header, rows = real40
    lines = [json.dumps(dict(zip(header, r)), ensure_ascii=False) for r in rows[:5]]
    lines.append(json.dumps({"index": "356", "product": "Day Crème"}, ensure_ascii=False))
    path = tmp_path / "p.jsonl"
    path.write_bytes("\n".join(lines).encode("cp1252"))
    with pytest.raises(InputError) as err:
        read_table(path)
    assert err.value.row == 6 and "line 6" in str(err.value) and str(path) in str(err.value)


# --- unusable files -------------------------------------------------------------------------------

def test_empty_file(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(InputError, match="is empty") as err:
        read_table(path)
    assert str(path) in str(err.value)


def test_whitespace_only_file(tmp_path):
    path = tmp_path / "blank.csv"
    path.write_text("\n  \n")
    with pytest.raises(InputError, match="is empty"):
        read_table(path)


def test_header_only_file(tmp_path, real40):
    header, _ = real40
    path = tmp_path / "header.csv"
    path.write_text(",".join(header) + "\n")
    with pytest.raises(InputError, match="has a header but no rows") as err:
        read_table(path)
    assert str(path) in str(err.value)


def test_header_only_xlsx(tmp_path, real40):
    header, _ = real40
    path = _write_xlsx(tmp_path / "header.xlsx", header, [])
    with pytest.raises(InputError, match="has a header but no rows"):
        read_table(path)


def test_missing_path(tmp_path):
    path = tmp_path / "nope.csv"
    with pytest.raises(InputError, match="file not found") as err:
        read_table(path)
    assert str(path) in str(err.value)


def test_directory(tmp_path):
    with pytest.raises(InputError, match="is a folder, not a file") as err:
        read_table(tmp_path)
    assert str(tmp_path) in str(err.value)


@pytest.mark.parametrize("name", ["catalog.xml", "catalog"])
def test_unknown_extension(tmp_path, formats, name):
    path = tmp_path / name
    path.write_bytes(formats["csv"].read_bytes())
    with pytest.raises(InputError, match="unsupported file type") as err:
        read_table(path)
    msg = str(err.value)
    assert str(path) in msg and ".csv" in msg and ".parquet" in msg  # lists what is supported
    assert (".xml" in msg) if name.endswith(".xml") else ("(none)" in msg)


def test_damaged_xlsx_and_parquet(tmp_path, formats):
    for ext in ("xlsx", "parquet"):
        path = tmp_path / f"broken.{ext}"
        path.write_bytes(formats["csv"].read_bytes())  # CSV text under a binary extension
        with pytest.raises(InputError) as err:
            read_table(path)
        assert str(path) in str(err.value)


def test_jsonl_with_one_broken_line(tmp_path, real40):
    header, rows = real40
    lines = [json.dumps(dict(zip(header, r))) for r in rows]
    lines[6] = lines[6][: len(lines[6]) // 2]  # line 7 cut in half
    lines[9] = json.dumps([rows[9][0], rows[9][1]])  # line 10 valid JSON, not an object
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    table = read_table(path)
    assert table.n_records == N
    assert table.frame.height == N - 2
    assert [r.row for r in table.rejects] == [7, 10]
    assert "malformed JSON" in table.rejects[0].reason
    assert "not a JSON object" in table.rejects[1].reason
    assert table.rejects[0].text == lines[6]
    assert 7 not in table.frame[ROW].to_list() and 10 not in table.frame[ROW].to_list()
    assert table.frame[ROW].to_list() == [n for n in range(1, N + 1) if n not in (7, 10)]
    assert table.frame.drop(ROW).rows() == [tuple(r) for i, r in enumerate(rows) if i not in (6, 9)]


def test_csv_row_with_wrong_field_count_is_a_reject_not_a_crash(tmp_path, real40):
    header, rows = real40
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerows([header, *rows[:10]])
    buf.write(",".join(rows[10][:5]) + "\n")  # a truncated real row: 5 fields
    writer.writerows(rows[11:])
    path = tmp_path / "short.csv"
    path.write_text(buf.getvalue(), encoding="utf-8")
    table = read_table(path)
    assert table.n_records == N
    assert len(table.rejects) == 1
    assert table.rejects[0].row == 12 and table.rejects[0].id == rows[10][0]
    assert "5 fields where the header has 9" in table.rejects[0].reason


def test_a_field_longer_than_the_csv_modules_default_limit_is_read(tmp_path):
    """A real description repeated past 128 KiB (long HTML descriptions happen), properly quoted:
    read whole, the limit put back afterwards."""
    described = read_table(data_file("bigbasket", "products_with_description_first6079.csv")).frame
    rows = described.select("index", "product", "description").filter(pl.col("description") != "").head(3)
    long = (rows["description"][1] + " ") * (300_000 // len(rows["description"][1]) + 1)
    rows = rows.with_columns(pl.Series("description", [rows["description"][0], long, rows["description"][2]]))
    path = tmp_path / "long.csv"
    rows.write_csv(path)
    before = csv.field_size_limit()
    table = read_table(path)
    assert table.frame.height == 3 and not table.rejects
    assert table.frame["description"][1] == long and len(long) > 131_072
    assert csv.field_size_limit() == before


def _excel_europe(path, header, rows, delimiter=";"):
    """What Excel writes where the decimal mark is a comma: ';' between fields, '12,5' prices, and
    commas inside the names."""
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows([[v.replace(".", ",") if i == 5 else v for i, v in enumerate(r)] for r in rows])


@pytest.mark.parametrize("delimiter", [";", "\t", "|"])
def test_the_field_separator_is_sniffed_from_the_file(tmp_path, real40, delimiter):
    header, rows = real40
    assert any("," in r[1] for r in rows)  # names with commas: a comma split would break them
    path = tmp_path / "europe.csv"
    _excel_europe(path, header, rows, delimiter)
    table = read_table(path)
    assert table.delimiter == delimiter and table.columns == header and not table.rejects
    assert table.frame["product"].to_list() == [r[1] for r in rows]
    assert table.frame["sale_price"].to_list()[0] == rows[0][5].replace(".", ",")  # a decimal comma stays text
    forced = read_table(path, delimiter=",")  # --delimiter: taken as given, never sniffed over
    assert forced.delimiter == "," and forced.columns != header


def test_a_semicolon_catalog_maps_and_the_summary_says_so(tmp_path, real40, migrator):
    from click.testing import CliRunner

    from migrate.cli import main

    header, rows = real40
    source = tmp_path / "europe.csv"
    _excel_europe(source, header, rows)
    out = tmp_path / "m.csv"
    done = CliRunner().invoke(main, ["migrate", str(source), "--target-taxonomy",
                                     str(SAMPLES / "google_taxonomy_subset.txt"), "-o", str(out), "-q"])
    assert done.exit_code == 0 and f"mapped {len(rows)} of {len(rows)} source rows (0 rejected)" in done.output
    summary = json.loads(out.with_name("m.summary.json").read_text())
    assert summary["Source columns"].endswith("fields separated by ';' (semicolon)")
    bad = CliRunner().invoke(main, ["migrate", str(source), "--target-taxonomy",
                                    str(SAMPLES / "google_taxonomy_subset.txt"), "-o", str(tmp_path / "x.csv"),
                                    "--delimiter", "ab"])
    assert bad.exit_code == 64 and "one character" in bad.output  # a usage error
    tab = CliRunner().invoke(main, ["migrate", str(source), "--target-taxonomy",
                                    str(SAMPLES / "google_taxonomy_subset.txt"), "-o", str(tmp_path / "t.csv"),
                                    "--delimiter", "tab", "-q"])
    assert tab.exit_code == 1 and "Error:" in tab.output  # one column: no product text column found
