"""Word and character n-gram matrices of product texts, fitted with scikit-learn, applied without it.

Fitting a TF-IDF vocabulary is scikit-learn's job (:func:`fit_tfidf`, its ``TfidfVectorizer``).
What a fitted vectorizer does to new texts is a vocabulary look-up and three array operations, so
taxmig keeps that -- :class:`FittedTfidf`, the vocabulary and idf weights -- and applies it here.
The reason is the nightly job: importing scikit-learn (it imports scipy.stats and pandas) is a
large share of a short night, and a night that kept its fitted target side has nothing left to
fit. Tests hold :meth:`FittedTfidf.transform` equal to scikit-learn's ``transform`` on real
catalogs and :func:`binary_word_matrix` equal to its ``CountVectorizer(binary=True)``.

>>> tfidf, matrix = fit_tfidf(["Amul Butter", "Amul Cheese"], analyzer="word", token_pattern=r"(?u)\\b\\w+\\b")
>>> sorted(tfidf.vocabulary)
['amul', 'butter', 'cheese']
>>> tfidf.transform(["butter"]).nnz
1
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from scipy.sparse import csr_matrix

WORDS_OF_TWO = r"(?u)\b\w\w+\b"
"""scikit-learn's default token pattern: words of two or more word characters."""

_WHITESPACE = re.compile(r"\s\s+")  # scikit-learn's char_wb analyzer collapses runs of whitespace first


@dataclass
class FittedTfidf:
    """A fitted TF-IDF vectorizer as data: lower-cased words (``token_pattern``) or character
    n-grams inside word boundaries (``char_wb``), raw counts, sublinear tf, idf, unit rows."""

    vocabulary: dict[str, int]
    idf: np.ndarray
    analyzer: str  # "word" or "char_wb"
    token_pattern: str
    ngram_range: tuple[int, int]
    sublinear_tf: bool

    @classmethod
    def from_sklearn(cls, vectorizer) -> "FittedTfidf":
        """The parts of a fitted ``TfidfVectorizer`` that transform; refuses settings this class
        does not apply (so a change of settings cannot silently change features)."""
        unsupported = {"lowercase": True, "strip_accents": None, "stop_words": None, "norm": "l2", "use_idf": True,
                       "binary": False, "preprocessor": None, "tokenizer": None, "input": "content"}
        wrong = {k: getattr(vectorizer, k) for k, v in unsupported.items() if getattr(vectorizer, k) != v}
        if vectorizer.analyzer not in ("word", "char_wb") or wrong or (
                vectorizer.analyzer == "word" and tuple(vectorizer.ngram_range) != (1, 1)):
            raise ValueError(f"FittedTfidf applies word unigrams or char_wb n-grams only, not {wrong or vectorizer}")
        return cls({str(k): int(v) for k, v in vectorizer.vocabulary_.items()}, np.asarray(vectorizer.idf_),
                   vectorizer.analyzer, vectorizer.token_pattern, tuple(vectorizer.ngram_range),
                   bool(vectorizer.sublinear_tf))

    def analyze(self, text: str, words: re.Pattern | None = None) -> list[str]:
        """The features of one text, as scikit-learn's analyzer gives them (repeats kept);
        ``words``: the token pattern compiled, by a caller analysing many texts."""
        text = text.lower()
        if self.analyzer == "word":
            return (words or re.compile(self.token_pattern)).findall(text)
        low, high = self.ngram_range
        grams: list[str] = []
        for word in _WHITESPACE.sub(" ", text).split():
            word = f" {word} "
            for n in range(low, high + 1):
                grams.extend(word[i:i + n] for i in range(max(1, len(word) - n + 1)))
                if len(word) <= n:  # a word shorter than n counts once, at its first n
                    break
        return grams

    def transform(self, texts: list[str]) -> csr_matrix:
        """TF-IDF rows of ``texts`` (float of the idf's type, unit length; empty rows for texts
        with no known feature)."""
        vocabulary = self.vocabulary
        words = re.compile(self.token_pattern)
        indices: list[int] = []
        counts: list[int] = []
        indptr = [0]
        for text in texts:
            row: dict[int, int] = {}
            for feature in self.analyze(text, words):
                column = vocabulary.get(feature)
                if column is not None:
                    row[column] = row.get(column, 0) + 1
            indices.extend(row)
            counts.extend(row.values())
            indptr.append(len(indices))
        matrix = csr_matrix((np.asarray(counts, dtype=self.idf.dtype), np.asarray(indices, dtype=np.int32),
                             np.asarray(indptr, dtype=np.int32)), shape=(len(texts), len(self.idf)))
        matrix.sort_indices()
        data = matrix.data
        if self.sublinear_tf:
            np.log(data, data)
            data += 1.0
        data *= self.idf[matrix.indices]
        # unit rows as scikit-learn's normalize: float32 squares summed in order in float64
        lengths = np.diff(matrix.indptr)
        squares = np.bincount(np.repeat(np.arange(len(texts)), lengths), weights=np.square(data).astype(np.float64),
                              minlength=len(texts))
        data /= np.repeat(np.sqrt(squares), lengths)
        return matrix


def fit_tfidf(texts: list[str], **params) -> tuple[FittedTfidf, csr_matrix]:
    """Fit scikit-learn's ``TfidfVectorizer(**params)`` (float32, sublinear tf unless said) on
    ``texts``: (the fitted vectorizer as :class:`FittedTfidf`, the texts' rows). Raises
    ValueError as scikit-learn does when no text has a feature (or none passes ``min_df``)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(**{"sublinear_tf": True, "dtype": np.float32, **params})
    matrix = vectorizer.fit_transform(texts)
    return FittedTfidf.from_sklearn(vectorizer), csr_matrix(matrix)


def binary_word_matrix(texts: list[str], token_pattern: str = WORDS_OF_TWO) -> csr_matrix | None:
    """Which words (lower-cased ``token_pattern`` matches; columns in sorted word order) each text
    has, as 1.0 -- scikit-learn's ``CountVectorizer(binary=True)`` fitted and applied on
    ``texts`` -- or None when no text has a word."""
    pattern = re.compile(token_pattern)
    rows = [set(pattern.findall(text.lower())) for text in texts]
    words = sorted(set().union(*rows)) if rows else []
    if not words:
        return None
    column = {word: j for j, word in enumerate(words)}
    indices = [column[w] for row in rows for w in row]
    indptr = np.cumsum([0] + [len(row) for row in rows])
    matrix = csr_matrix((np.ones(len(indices)), np.asarray(indices, dtype=np.int32), indptr.astype(np.int32)),
                        shape=(len(texts), len(words)))
    matrix.sort_indices()
    return matrix
