"""The losses ``taxmig train`` offers, built from sentence-transformers' own loss classes.

- ``mnrl`` (the default): MultipleNegativesRankingLoss on (anchor, positive, negative) triplets,
  the encoder-mined ones first (:mod:`train.pairs`), trained with the no-duplicates batch sampler
  (many products share a category: a duplicate text in a batch would be a false negative);
- ``cosine``: CosineSimilarityLoss on (sentence1, sentence2, score) pairs (the published retail
  recipe; against ``mnrl``: BENCHMARKS.md, "train: BigBasket fine-tuning, base vs fine-tuned");
- ``cosent``: CoSENTLoss on the same pairs (ranks pair scores).
``--matryoshka`` wraps any of them in MatryoshkaLoss so embeddings can be truncated.

For product matching (``taxmig train-match``, :mod:`train.match`) on labelled pairs:

- ``online_contrastive``: OnlineContrastiveLoss on (sentence1, sentence2, label 0/1) pairs: only
  the hard positives and hard negatives of each batch count (the duplicate-detection recipe);
- ``contrastive``: ContrastiveLoss on the same pairs;
- ``mnrl`` (above) on (anchor, positive, negative) triplets built from the labelled matches, the
  negative a labelled non-match of the same left product when there is one.

>>> LOSSES["cosine"].data_format
'pairs'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from migrate.errors import TaxmigError

MATRYOSHKA_DIMS = (384, 192, 96, 48)


@dataclass(frozen=True)
class LossSpec:
    name: str
    data_format: str  # "pairs" or "triplets"
    factory: Callable


def _cosine(model):
    from sentence_transformers.sentence_transformer.losses import CosineSimilarityLoss
    return CosineSimilarityLoss(model)


def _cosent(model):
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss
    return CoSENTLoss(model)


def _contrastive(model):
    from sentence_transformers.sentence_transformer.losses import ContrastiveLoss
    return ContrastiveLoss(model)


def _online_contrastive(model):
    from sentence_transformers.sentence_transformer.losses import OnlineContrastiveLoss
    return OnlineContrastiveLoss(model)


def _mnrl(model):
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    return MultipleNegativesRankingLoss(model)


LOSSES: dict[str, LossSpec] = {
    "cosine": LossSpec("CosineSimilarityLoss", "pairs", _cosine),
    "cosent": LossSpec("CoSENTLoss", "pairs", _cosent),
    "mnrl": LossSpec("MultipleNegativesRankingLoss", "triplets", _mnrl),
    "contrastive": LossSpec("ContrastiveLoss", "labelled_pairs", _contrastive),
    "online_contrastive": LossSpec("OnlineContrastiveLoss", "labelled_pairs", _online_contrastive),
}
MATCH_LOSSES = ("online_contrastive", "contrastive", "mnrl")
"""The losses ``taxmig train-match`` offers (labelled pairs or triplets from them)."""


def build_loss(model, name: str, *, matryoshka: bool = False, dims: tuple[int, ...] = MATRYOSHKA_DIMS):
    """The loss object for ``name`` (see :data:`LOSSES`), optionally inside MatryoshkaLoss."""
    if name not in LOSSES:
        raise TaxmigError(f"unknown loss '{name}'", hint=f"use one of {', '.join(LOSSES)}")
    loss = LOSSES[name].factory(model)
    if matryoshka:
        from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss

        full = model.get_sentence_embedding_dimension()
        usable = [d for d in dims if d <= full]
        loss = MatryoshkaLoss(model, loss, matryoshka_dims=usable)
    return loss


def describe(name: str, matryoshka: bool) -> str:
    base = LOSSES[name].name
    return f"MatryoshkaLoss({base}, dims={list(MATRYOSHKA_DIMS)})" if matryoshka else base
