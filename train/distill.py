"""The static tier: distil a static embedding model (model2vec) from any sentence encoder.

A static model keeps one vector per token -- computed once by passing each token through the
encoder -- and embeds a text as the weighted mean of its tokens' vectors: no transformer at run
time, so it encodes tens of thousands of texts per second on a CPU. A catalog's own words can be
added to the vocabulary as whole tokens (each word passed through the encoder in one piece), so
"earbuds" gets its own vector rather than the mean of "ear", "##bud", "##s" -- but with MiniLM
that cost accuracy on both grocery sets (BENCHMARKS.md, "speed tiers: torch fp32 against OpenVINO
and distilled static models"), so no words are added unless vocabulary files are given.

The result is a sentence-transformers folder (a ``StaticEmbedding`` module): ``--model FOLDER``
takes it wherever it takes an encoder, and loading it needs neither model2vec nor a transformer.

>>> result = distill_static("models/retail-static")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from migrate.errors import ModelError, TaxmigError
from models.card import provenance, write_card
from models.registry import fingerprint
from train.derived import check_new_folder, local_model, sources_line, staged_folder, texts_with_sources

log = logging.getLogger(__name__)

RECORD = "distill.json"
# model2vec.distill's own default width (pca_dims=256); 384 keeps MiniLM's full width
DEFAULT_PCA_DIMS = 256
# a word joins the vocabulary when the catalogs use it at least this often: a word seen once is
# usually a typo or a code, and every added word costs one encoder pass at distillation time
DEFAULT_MIN_COUNT = 2
# at most this many added words (the most frequent first); each costs an encoder pass (the time:
# "seconds to build" in BENCHMARKS.md, "speed tiers: torch fp32 against OpenVINO and distilled static models")
DEFAULT_MAX_WORDS = 50_000
_WORD = re.compile(r"[^\W\d_]{3,}")  # letters only, 3+ long: no codes, sizes or ids; hyphens split


@dataclass(frozen=True)
class DistillResult:
    """What ``distill_static`` wrote: the folder, its fingerprint and the vocabulary it added."""

    output_dir: Path
    fingerprint: str
    base_model: str
    added_words: int
    vocabulary_size: int
    dimension: int
    seconds: float
    sources: list[dict[str, str]] = field(default_factory=list)


def catalog_words(texts: Iterable[str], *, min_count: int = DEFAULT_MIN_COUNT,
                  max_words: int = DEFAULT_MAX_WORDS) -> list[str]:
    """The words of ``texts`` (lower-cased, letters only) used at least ``min_count`` times,
    most frequent first, at most ``max_words``."""
    counts = Counter(w for text in texts for w in _WORD.findall(text.lower()))
    frequent = [w for w, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n >= min_count]
    return frequent[:max_words]


def distill_static(output_dir: str | Path, *, model: str | None = None,
                   vocabulary_files: Sequence[str | Path] = (), pca_dims: int = DEFAULT_PCA_DIMS,
                   min_count: int = DEFAULT_MIN_COUNT, max_words: int = DEFAULT_MAX_WORDS,
                   vocabulary_text: str | None = None, overwrite: bool = False,
                   encoding: str = "utf-8", progress: bool = True) -> DistillResult:
    """Distil ``model`` (default: the bundled base encoder) into a static model at ``output_dir``.

    The folder is built beside ``output_dir`` and renamed into place only when complete; an
    existing non-empty ``output_dir`` is replaced only with ``overwrite``. ``progress=False``
    turns model2vec's progress bar off.
    """
    output_dir = Path(output_dir)
    check_new_folder(output_dir, overwrite)
    if not 2 <= pca_dims <= 4096:
        raise TaxmigError(f"--pca-dims {pca_dims} is out of range", hint="use a width between 2 and 4096, e.g. 256")
    try:
        from model2vec.distill import distill  # noqa: F401  (checked here: the error names the extra)
        from sentence_transformers import SentenceTransformer
        try:
            from sentence_transformers.sentence_transformer.modules import StaticEmbedding
        except ImportError:  # sentence-transformers before 6.3
            from sentence_transformers.models import StaticEmbedding
    except ImportError as exc:
        raise ModelError(f"the static tier needs model2vec ({exc})",
                         hint="pip install 'taxmig[static]'") from None
    ref = local_model(model, "distil")
    base_fp = fingerprint(ref.location)
    started = time.perf_counter()
    texts, sources = texts_with_sources(vocabulary_files, text=vocabulary_text, encoding=encoding)
    words = catalog_words(texts, min_count=min_count, max_words=max_words)
    log.info("distilling %s with %d catalog words added (PCA to %d dims)", ref.name, len(words), pca_dims)
    try:
        with _quiet_distillation(StaticEmbedding.__module__, progress):
            module = StaticEmbedding.from_distillation(ref.location, vocabulary=words or None, device="cpu",
                                                       pca_dims=pca_dims)
    except (ValueError, OSError, RuntimeError) as exc:
        raise ModelError(f"cannot distil '{ref.name}': {str(exc).splitlines()[0][:200]}",
                         hint="check that the folder holds a complete sentence-transformers model") from None
    static = SentenceTransformer(modules=[module], device="cpu")
    with staged_folder(output_dir) as staging:
        static.save(str(staging))
        seconds = round(time.perf_counter() - started, 1)
        result = DistillResult(output_dir, fingerprint(staging), ref.name, len(words),
                               int(module.embedding.num_embeddings), int(module.embedding.embedding_dim),
                               seconds, sources)
        record = {"base_model": ref.name, "base_model_fingerprint": base_fp, "pca_dims": pca_dims,
                  "min_count": min_count, "max_words": max_words, "added_words": len(words),
                  "vocabulary_size": result.vocabulary_size, "dimension": result.dimension,
                  "vocabulary_files": sources, "seconds": seconds}
        (staging / RECORD).write_text(json.dumps(record, indent=2))
        _write_card(staging, output_dir, result, record)
    log.info("saved %s: %d tokens x %d dims (fingerprint %s) in %.1f s", output_dir, result.vocabulary_size,
             result.dimension, result.fingerprint, seconds)
    return result


class _DropVersionNotice(logging.Filter):
    """sentence-transformers asks for arguments newer model2vec versions dropped; harmless."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "does not support the" not in record.getMessage()


@contextlib.contextmanager
def _quiet_distillation(st_module: str, progress: bool) -> Iterator[None]:
    """model2vec logs one warning per catalog word the encoder already knows (thousands of lines)
    and draws a progress bar it has no switch for: quiet the log for the call, and the bar (its
    module's ``tqdm``, swapped for a disabled one) unless ``progress``."""
    from functools import partial

    from model2vec.distill import inference
    from tqdm import tqdm

    st_logger, m2v_logger = logging.getLogger(st_module), logging.getLogger("model2vec")
    notice, level, bar = _DropVersionNotice(), m2v_logger.level, inference.tqdm
    st_logger.addFilter(notice)
    m2v_logger.setLevel(logging.ERROR)
    if not progress:
        inference.tqdm = partial(tqdm, disable=True)
    try:
        yield
    finally:
        st_logger.removeFilter(notice)
        m2v_logger.setLevel(level)
        inference.tqdm = bar


def _write_card(folder: Path, output_dir: Path, result: DistillResult, record: dict) -> None:
    write_card(folder, title=output_dir.name,
               intro="A static embedding model distilled by `taxmig distill` (model2vec) for the fast tier: "
                     f"`taxmig migrate --model {output_dir}`. One vector per token, no transformer at run time.",
               provenance=[*provenance(record, result.fingerprint, derived="distilled from"),
                           f"- vocabulary: the encoder's own tokens plus {result.added_words} catalog words used at "
                           f"least {record['min_count']} times (at most {record['max_words']}), from "
                           + sources_line(record["vocabulary_files"]),
                           f"- {result.vocabulary_size} tokens x {result.dimension} dimensions (PCA to "
                           f"{record['pca_dims']}), distilled in {result.seconds} s"],
               closing=["No catalog rows are stored here: only words and their vectors."])
