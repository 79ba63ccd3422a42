"""What a night applies without scikit-learn equals what scikit-learn computes, on real catalogs:
TF-IDF rows, the binary word matrix, the linear classifier's decisions, the calibrator's
probabilities, the Kolmogorov-Smirnov drift statistic; and a night's code path imports no scikit-learn."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import polars as pl
import pytest

from migrate.mapping.calibration import ConfidenceCalibrator
from migrate.mapping.classifier import CategoryClassifier
from migrate.mapping.sparse_text import FittedTfidf, binary_word_matrix
from migrate.nightly.changes import ks_two_sample
from tests.conftest import data_file


@pytest.fixture(scope="module")
def texts(bigbasket) -> tuple[list[str], list[str]]:
    """(4,000 BigBasket product texts to fit on, 2,000 Instacart and BigBasket texts to apply to)."""
    products = bigbasket.filter(pl.col("product").is_not_null())["product"].to_list()
    instacart = pl.read_csv(data_file("instacart", "products.csv"), infer_schema=False)["product_name"].to_list()
    return products[:4000], products[-1000:] + instacart[:1000]


@pytest.mark.parametrize("params", [
    {"token_pattern": r"(?u)\b\w+\b"},
    {"analyzer": "char_wb", "ngram_range": (3, 4), "min_df": 2},
])
def test_tfidf_transform_equals_scikit_learn(texts, params):
    from sklearn.feature_extraction.text import TfidfVectorizer

    fit_on, apply_to = texts
    vectorizer = TfidfVectorizer(sublinear_tf=True, dtype=np.float32, **params).fit(fit_on)
    ours, theirs = FittedTfidf.from_sklearn(vectorizer).transform(apply_to), vectorizer.transform(apply_to)
    assert ours.shape == theirs.shape and ours.dtype == np.float32
    assert np.array_equal(ours.indptr, theirs.indptr) and np.array_equal(ours.indices, theirs.indices)
    assert np.array_equal(ours.data, theirs.data)  # the same float32 values, bit for bit
    assert ours.nnz > 10 * len(apply_to) if params.get("analyzer") else ours.nnz > 2 * len(apply_to)


def test_unsupported_vectorizer_settings_are_refused():
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(ngram_range=(1, 2)).fit(["amul butter", "tata tea"])
    with pytest.raises(ValueError, match="word unigrams or char_wb"):
        FittedTfidf.from_sklearn(vectorizer)


def test_binary_word_matrix_equals_count_vectorizer(texts):
    from sklearn.feature_extraction.text import CountVectorizer

    sample = texts[0][:1500] + texts[1]
    theirs = CountVectorizer(token_pattern=r"(?u)\b\w\w+\b", binary=True, dtype=np.float64).fit_transform(sample)
    ours = binary_word_matrix(sample)
    assert ours.shape == theirs.shape and (ours != theirs).nnz == 0
    assert binary_word_matrix(["-", "a", "+"]) is None  # no word of two letters


def test_classifier_decisions_equal_linear_svc(bigbasket):
    from sklearn.svm import LinearSVC

    rows = bigbasket.filter(pl.col("product").is_not_null()).head(3000)
    texts = rows["product"].to_list()
    names = sorted(set(rows["sub_category"]))
    cats = np.array([names.index(c) for c in rows["sub_category"]])
    clf = CategoryClassifier().fit(texts[:2500], cats[:2500])
    matrix = clf.features.transform(texts[2500:])
    svc = LinearSVC(C=1.0, tol=1e-2, random_state=0).fit(clf.features.fit_transform(texts[:2500]), cats[:2500])
    assert np.array_equal(clf.model.classes, svc.classes_)
    assert np.allclose(clf.model.decision_function(matrix), svc.decision_function(matrix), rtol=0, atol=1e-12)
    assert (clf.vote(texts[2500:], top=1)[1][:, 0] == svc.predict(matrix)).all()


def test_calibrator_equals_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    features = rng.random((400, 4))
    correct = features[:, 0] + 0.3 * rng.standard_normal(400) > 0.5
    ours = ConfidenceCalibrator().fit(features, correct)
    theirs = LogisticRegression(C=10.0, max_iter=1000).fit(features, correct)
    assert ours.logistic and np.array_equal(ours.predict(features), theirs.predict_proba(features)[:, 1])
    assert ConfidenceCalibrator().fit(features, np.ones(400, bool)).predict(features[:3]).tolist() == [1.0] * 3


def test_ks_statistic_equals_scipy_and_p_value_is_the_asymptotic_one():
    from scipy.stats import ks_2samp

    rng = np.random.default_rng(1)
    for before, after in ((rng.random(5000), rng.random(4000) ** 1.05), (np.round(rng.random(900), 1),
                                                                         np.round(rng.random(300) + 0.05, 1))):
        statistic, p = ks_two_sample(before, after)
        exact = ks_2samp(before, after, method="asymp")
        assert statistic == pytest.approx(exact.statistic, abs=1e-15)
        assert p == pytest.approx(exact.pvalue, rel=0.05) and 0 <= p <= 1  # limiting vs exact-n tail


def test_the_nightly_code_imports_no_scikit_learn():
    """Importing what a night runs (reconcile, the mapping pipeline, the kept target side) must not
    import scikit-learn: that import alone costs about a second (migrate.mapping.sparse_text)."""
    code = ("import sys, migrate.nightly.reconcile, migrate.mapping.pipeline, migrate.mapping.fitted_target, "
            "migrate.cli; print(sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'pandas')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
