"""Matching two real catalogs without labels when most left products have no twin (issue 38): the
Fellegi-Sunter estimate of the overlap on 150 real Abt products, most of whose Buy twins are left
out; its Summary lines; code levels; code columns that say nothing are ignored."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from migrate.cli import main
from migrate.matching.features import FEATURES
from migrate.matching.inputs import load_match_catalog
from migrate.matching.matcher import Matcher
from migrate.matching.settings import MatchSettings, read_match_inputs
from migrate.matching.unsupervised import CODE_LEVELS, code_levels
from tests.conftest import data_file

N_LEFT = 150
WITH_TWIN = 30  # of the 150 left products, only these keep their Buy twin: true overlap 20%


def _full(name: str) -> pl.DataFrame:
    return pl.read_csv(data_file("entity_matching", "full_gold_mapping", "d2_abt_buy", name), infer_schema=False)


@pytest.fixture(scope="module")
def few_twins(tmp_path_factory, migrator):
    """150 real Abt products; the right table: the Buy twins of 30 of them and 300 other Buy products
    (twins of Abt products not on the left). Both runs (old default, the estimate's cut) share one
    read of the inputs."""
    gold = _full("matches.csv")
    left, right = _full("tableA.csv"), _full("tableB.csv")
    lefts = gold["tableA_id"].unique().sort().head(N_LEFT).to_list()
    kept = set(lefts[:WITH_TWIN])
    twins = gold.filter(pl.col("tableA_id").is_in(list(kept)))["tableB_id"].to_list()
    others = gold.filter(~pl.col("tableA_id").is_in(lefts))["tableB_id"].unique().sort().head(150).to_list()
    folder = tmp_path_factory.mktemp("few_twins")
    left.filter(pl.col("id").is_in(lefts)).write_csv(folder / "abt.csv")
    right.filter(pl.col("id").is_in(twins + others)).write_csv(folder / "buy.csv")
    truth = {(a, b) for a, b in gold.iter_rows() if a in kept}
    settings = MatchSettings(left=folder / "abt.csv", right=folder / "buy.csv", progress=False)
    inputs = read_match_inputs(settings)
    matcher = Matcher(migrator.encoder)
    old = matcher.run(settings, inputs)
    cut = matcher.run(MatchSettings(left=folder / "abt.csv", right=folder / "buy.csv", progress=False,
                                    cut_by_estimate=True), inputs)
    share = len({a for a, _ in truth}) / N_LEFT
    return {"old": old, "cut": cut, "truth": truth, "share": share, "folder": folder}


def _precision(result, truth) -> float:
    m = result.matches.filter(pl.col("is_match"))
    found = set(zip(m["left_id"], m["right_id"]))
    return len(found & truth) / max(len(found), 1)


def test_the_overlap_is_estimated_near_the_truth_and_the_cut_is_not_less_precise(few_twins):
    """20% of the left products have a twin: the estimate says so within 8 points (its interval
    brackets it within that), and the matches the estimate's cut keeps are at least as precise as
    the mutual best's (measured when written: estimate 0.213 (0.17-0.25) for 0.20; precision 0.875 ->
    0.9)."""
    e = few_twins["old"].estimate
    assert e is not None and abs(e.overlap - few_twins["share"]) < 0.08, (e.overlap, few_twins["share"])
    assert e.low <= e.overlap <= e.high and e.high - e.low < 0.2
    assert _precision(few_twins["cut"], few_twins["truth"]) >= _precision(few_twins["old"], few_twins["truth"])
    assert few_twins["cut"].matches["is_match"].sum() <= few_twins["old"].matches["is_match"].sum()


def test_the_summary_says_how_many_have_a_twin_and_how_good_the_matches_are_without_labels(few_twins):
    info = few_twins["old"].summary_dict()
    assert info["Estimated overlap (no labels)"].startswith("about ")
    assert "of left products have a twin on the right (90% interval" in info["Estimated overlap (no labels)"]
    glance = info["At a glance"]
    assert glance["How good the threshold is"].startswith("estimated without labels: precision about")
    quality = info["Estimated precision / recall of the matches (no labels)"]
    assert 0 < quality["precision"] <= 1 and 0 < quality["recall"] <= 1
    data = few_twins["old"].summary_json()
    assert data["Estimated overlap"]["share"] == round(few_twins["old"].estimate.overlap, 4)
    assert set(data["Expected-F1 cut (no labels)"]) == {"probability", "expected_precision", "expected_recall"}
    assert len(data["Match weights (log2 m/u per level, worst first)"]["codes"]) == len(CODE_LEVELS)


def test_code_levels_and_their_weights_move_the_probability_the_right_way(few_twins):
    """Exact, fuzzy, missing and conflicting code levels; on the real run, the EM's match weight
    (log2 m/u: what a level adds to a pair's log-odds, the other comparisons unchanged) of an exact
    or fuzzy code is above a missing one's, a conflicting code's below."""
    x = np.zeros((4, len(FEATURES)), dtype=np.float32)
    x[:, FEATURES.index("code_agreement")] = [1.0, 1.0, 0.5, 0.0]
    left = [frozenset({"pslx350h"})] * 4
    right = [frozenset({"pslx350h"}), frozenset(), frozenset(), frozenset({"am53bk"})]
    got = code_levels(x, left, right, np.zeros(4, np.int64), np.arange(4))
    assert [CODE_LEVELS[k] for k in got] == ["exact", "fuzzy", "missing", "conflicting"]
    weights = few_twins["old"].estimate.weights["codes"]  # worst level first, as CODE_LEVELS
    at = dict(zip(CODE_LEVELS, weights))
    assert at["fuzzy"] > at["missing"] > at["conflicting"], at
    assert at["exact"] > at["missing"], at  # an exact normalised code: a far stronger match than none
    # so a real best pair's probability moves with its code level, the rest of it unchanged
    assert at["exact"] - at["conflicting"] > 3  # over 8 times the odds


def test_a_code_column_mostly_empty_or_constant_is_ignored_with_a_summary_line(tmp_path, migrator):
    abt = _full("tableA.csv").head(40)
    abt = abt.with_columns(pl.Series("mpn", ["X123"] * 40), pl.Series("upc", [""] * 38 + ["0885909950805", "1"]))
    abt.write_csv(tmp_path / "abt.csv")
    catalog = load_match_catalog(tmp_path / "abt.csv", role="left")
    assert catalog.code_columns == () and len(catalog.code_ignored) == 2
    assert "mpn (constant: 1 distinct value among 40 filled)" in catalog.code_ignored
    assert "upc (filled on 5% of the rows)" in catalog.code_ignored
    buy = _full("tableB.csv").head(40)
    buy.write_csv(tmp_path / "buy.csv")
    result = Matcher(migrator.encoder).run(MatchSettings(left=tmp_path / "abt.csv", right=tmp_path / "buy.csv",
                                                         progress=False))
    line = result.summary_dict()["Code columns ignored (left)"]
    assert line.startswith("mpn (constant") and "mostly empty or constant" in line


def test_the_cli_cuts_by_the_estimate_and_says_the_overlap_and_refuses_it_where_there_is_none(few_twins):
    """``taxmig match --cut-by-estimate`` writes the matches the estimate's cut keeps (the same pairs as
    the library run) and its line says how many left products have a twin; where no estimate is made
    (--many-to-one) or the cut is given (--threshold), the flag is refused, every problem at once."""
    folder = few_twins["folder"]
    abt, buy = str(folder / "abt.csv"), str(folder / "buy.csv")
    said = CliRunner().invoke(main, ["match", abt, buy, "-o", str(folder / "cut.csv"), "-q", "--cut-by-estimate"])
    assert said.exit_code == 0, said.output
    expected = few_twins["cut"].estimate
    assert f"about {expected.overlap:.0%} of left products have a twin (estimated without labels" in said.output
    written = pl.read_csv(folder / "cut.csv", infer_schema=False).filter(pl.col("is_match") == "true")
    kept = few_twins["cut"].matches.filter(pl.col("is_match"))
    assert sorted(zip(written["left_id"], written["right_id"])) == sorted(zip(kept["left_id"], kept["right_id"]))
    assert kept.height < few_twins["old"].matches["is_match"].sum()  # the cut dropped some mutual best pairs
    assert f"estimated match probability >= {expected.cut:.3f}" in said.output
    assert few_twins["cut"].summary_dict()["Cut by the estimate (--cut-by-estimate)"].startswith(
        f"a mutual best pair is a match only when its estimated match probability reaches {expected.cut:.3f}")
    assert "Cut by the estimate (--cut-by-estimate)" not in few_twins["old"].summary_dict()
    refused = CliRunner().invoke(main, ["match", abt, buy, "-o", str(folder / "x.csv"), "--cut-by-estimate",
                                        "--many-to-one", "--threshold", "0.3"])
    assert refused.exit_code != 0
    assert "--cut-by-estimate cuts by the no-labels estimate" in refused.output
    assert "not with --threshold" in refused.output
