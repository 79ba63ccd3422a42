"""Fine-tune an encoder for product matching on labelled pairs (``taxmig train-match``).

The same stack as :mod:`train.finetune`: sentence-transformers' ``SentenceTransformerTrainer``
with the same training arguments (checkpoints, best model by the evaluator, early stopping), a
loss from :mod:`train.losses` (``online_contrastive`` by default) and the texts exactly as
``taxmig match`` embeds them (the same column rules). Only the data differs: labelled (left,
right, label) pairs instead of pairs drawn from a catalog's categories. Evaluation uses
sentence-transformers' ``BinaryClassificationEvaluator`` (average precision of the cosine) on
``--valid`` pairs, or on a held-out 10 % of the pairs (split by the left product's name).

>>> from train.finetune import TrainConfig
>>> result = train_match_encoder("abt.csv", "buy.csv", "train.csv", "models/match-abt-buy",
...                              TrainConfig(loss="online_contrastive"), valid="valid.csv")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from migrate.core.hashing import file_fingerprint
from migrate.errors import TaxmigError
from migrate.matching.inputs import LabelledPairs, MatchCatalog, load_labels, load_match_catalog
from train.finetune import RECORD, TrainConfig, TrainResult, jsonable, load_base, run_trainer
from train.losses import LOSSES, MATCH_LOSSES, describe
from train.splits import split_labels

log = logging.getLogger(__name__)


@dataclass
class MatchPairs:
    """Labelled pairs as texts: ``sentence1`` (left), ``sentence2`` (right), ``labels`` (1 = same product)."""

    sentence1: list[str]
    sentence2: list[str]
    labels: list[int]
    left_ids: list[str]
    left_rows: np.ndarray | None = None  # the pairs' products, as indices into the catalogs
    right_rows: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def counts(self) -> dict[str, int]:
        return {"match": int(sum(self.labels)), "non_match": len(self.labels) - int(sum(self.labels))}

    def to_dataset(self, fmt: str, *, right_texts: list[str] | None = None, seed: int = 0):
        """A ``datasets.Dataset``: ``"labelled_pairs"`` -> sentence1, sentence2, label (Contrastive
        losses); ``"triplets"`` -> anchor, positive, negative (MNRL) from the matches, the negative a
        labelled non-match of the same left product, else a random right product."""
        from datasets import Dataset

        if fmt == "labelled_pairs":
            return Dataset.from_dict({"sentence1": self.sentence1, "sentence2": self.sentence2,
                                      "label": [int(y) for y in self.labels]})
        if fmt != "triplets":
            raise TaxmigError(f"the loss needs '{fmt}' data, which labelled match pairs cannot give",
                              hint=f"use --loss {', '.join(MATCH_LOSSES)}")
        rng = np.random.default_rng(seed)
        negatives: dict[str, list[str]] = {}
        for lid, b, y in zip(self.left_ids, self.sentence2, self.labels):
            if not y:
                negatives.setdefault(lid, []).append(b)
        pool = right_texts or [b for b, y in zip(self.sentence2, self.labels) if not y] or self.sentence2
        rows: dict[str, list[str]] = {"anchor": [], "positive": [], "negative": []}
        for lid, a, b, y in zip(self.left_ids, self.sentence1, self.sentence2, self.labels):
            if not y:
                continue
            hard = [n for n in negatives.get(lid, []) if n != b]
            negative = hard[rng.integers(len(hard))] if hard else pool[rng.integers(len(pool))]
            rows["anchor"].append(a)
            rows["positive"].append(b)
            rows["negative"].append(negative)
        if not rows["anchor"]:
            raise TaxmigError("no labelled matches to build triplets from", hint="label some pairs 1")
        return Dataset.from_dict(rows)


def match_pairs(left_texts: list[str], right_texts: list[str], left_ids: list[str], labels: LabelledPairs,
                keep: np.ndarray | None = None) -> MatchPairs:
    """The texts of the labelled pairs (``keep``: a boolean mask over them)."""
    idx = np.arange(len(labels)) if keep is None else np.flatnonzero(keep)
    return MatchPairs([left_texts[i] for i in labels.left[idx]], [right_texts[j] for j in labels.right[idx]],
                      [int(y) for y in labels.labels[idx]], [left_ids[i] for i in labels.left[idx]],
                      labels.left[idx], labels.right[idx])


@dataclass
class TrainingPairs:
    """The catalogs and labelled pairs a ``train-match`` run reads, split into train and eval."""

    left: MatchCatalog
    right: MatchCatalog
    paths: list[str | Path]
    labelled: LabelledPairs
    train: MatchPairs
    eval: MatchPairs


def read_training_pairs(left_path: str | Path, right_path: str | Path | None,
                        pairs_path: str | Path | Sequence[str | Path], output_dir: Path, config: TrainConfig, *,
                        valid: str | Path | None, within: bool, left_id: str | None, left_text: str | None,
                        right_id: str | None, right_text: str | None, encoding: str,
                        texts: Callable[[MatchCatalog], list[str]] | None = None) -> TrainingPairs:
    """Read both catalogs and the labelled pairs (several files: :meth:`LabelledPairs.combined`),
    split off the eval pairs (``valid``, else 10% held out by the left product's name) and cap the
    train pairs at ``config.max_pairs``. ``texts``: what the model reads of a catalog (default: the
    texts ``taxmig match`` embeds). Refuses a non-empty ``output_dir`` unless resuming."""
    config.validate()
    if within == (right_path is not None):
        raise TaxmigError("give LEFT and RIGHT catalogs, or LEFT with --within", hint="see taxmig train-match --help")
    if output_dir.exists() and any(output_dir.iterdir()) and not config.resume:
        raise TaxmigError(f"{output_dir} already exists and is not empty",
                          hint="choose a new -o folder, or pass --resume to continue a run there")
    left = load_match_catalog(left_path, role="left", id=left_id, text=left_text, encoding=encoding)
    right = left if within else load_match_catalog(right_path, role="right", id=right_id, text=right_text,
                                                   encoding=encoding)
    paths = [pairs_path] if isinstance(pairs_path, (str, Path)) else list(pairs_path)
    labelled = LabelledPairs.combined([load_labels(p, left, right, encoding=encoding, within=within) for p in paths])
    read = texts or (lambda catalog: catalog.texts)
    left_texts = read(left)
    right_texts = left_texts if within else read(right)

    def pairs(labels: LabelledPairs, keep: np.ndarray | None = None) -> MatchPairs:
        return match_pairs(left_texts, right_texts, left.ids, labels, keep)

    if valid is not None:
        train_pairs = pairs(labelled)
        eval_pairs = pairs(load_labels(valid, left, right, encoding=encoding, within=within))
    else:
        held_out = split_labels([left.texts[i] for i in labelled.left], seed=config.seed, eval_percent=10,
                                test_percent=0) == "eval"
        train_pairs, eval_pairs = pairs(labelled, ~held_out), pairs(labelled, held_out)
        if len(set(eval_pairs.labels)) < 2:
            raise TaxmigError(f"{labelled.path}: the held-out 10% of the pairs lacks matches or non-matches",
                              hint="pass --valid FILE with labelled validation pairs, or label more pairs")
    if config.max_pairs is not None and len(train_pairs) > config.max_pairs:
        pick = np.sort(np.random.default_rng(config.seed).choice(len(train_pairs), config.max_pairs, replace=False))
        train_pairs = MatchPairs(*[[col[i] for i in pick] for col in (train_pairs.sentence1, train_pairs.sentence2,
                                                                       train_pairs.labels, train_pairs.left_ids)],
                                 train_pairs.left_rows[pick], train_pairs.right_rows[pick])
    return TrainingPairs(left, right, paths, labelled, train_pairs, eval_pairs)


def training_record(data: TrainingPairs, config: TrainConfig, *, base: str, location: str, fingerprint: str,
                    valid: str | Path | None, within: bool) -> dict[str, Any]:
    """What ``train-match`` records about a run (``training.json``, the card's provenance)."""
    return {"base_model": base, "base_model_location": location, "base_model_fingerprint": fingerprint,
            "task": "product matching", "data_file": ", ".join(str(p) for p in data.paths),
            "data_fingerprint": ", ".join(file_fingerprint(p) for p in data.paths),
            "left_file": str(data.left.path), "right_file": None if within else str(data.right.path),
            "left_fingerprint": file_fingerprint(data.left.path),
            "right_fingerprint": None if within else file_fingerprint(data.right.path),
            "valid_file": None if valid is None else str(valid),
            "left_columns": data.left.describe(), "right_columns": None if within else data.right.describe(),
            "config": jsonable(dataclasses.asdict(config))}


def _evaluator(pairs: MatchPairs, batch_size: int):
    from sentence_transformers.sentence_transformer.evaluation import BinaryClassificationEvaluator

    return BinaryClassificationEvaluator(pairs.sentence1, pairs.sentence2, pairs.labels, name="valid",
                                         batch_size=batch_size, show_progress_bar=False, write_csv=False)


def train_match_encoder(left_path: str | Path, right_path: str | Path | None,
                        pairs_path: str | Path | Sequence[str | Path],
                        output_dir: str | Path, config: TrainConfig, *, valid: str | Path | None = None,
                        within: bool = False, left_id: str | None = None, left_text: str | None = None,
                        right_id: str | None = None, right_text: str | None = None,
                        encoding: str = "utf-8") -> TrainResult:
    """Fine-tune on the labelled pairs in ``pairs_path`` (a labels table or a reviewed match workbook,
    or several: :meth:`LabelledPairs.combined`); save model, ``metrics.json`` and a card.

    ``right_path`` is ``None`` with ``within`` (pairs inside one catalog). ``config.max_pairs``
    caps the training pairs (a deterministic subsample).
    """
    if config.loss not in MATCH_LOSSES:
        raise TaxmigError(f"--loss {config.loss} is for catalog training", hint=f"use one of {', '.join(MATCH_LOSSES)}")
    output_dir = Path(output_dir)
    data = read_training_pairs(left_path, right_path, pairs_path, output_dir, config, valid=valid, within=within,
                               left_id=left_id, left_text=left_text, right_id=right_id, right_text=right_text,
                               encoding=encoding)
    train_pairs, eval_pairs, right = data.train, data.eval, data.right
    ref, model, base_fp = load_base(config.encoder)
    model.max_seq_length = config.max_seq_length
    fmt = LOSSES[config.loss].data_format
    train_ds = train_pairs.to_dataset(fmt, right_texts=right.texts, seed=config.seed)
    evaluator = _evaluator(eval_pairs, config.batch_size)
    before = evaluator(model)
    steps = math.ceil(len(train_ds) / config.batch_size * config.epochs)
    log.info("training %s on %d %s (%d steps), evaluating on %d pairs", describe(config.loss, config.matryoshka),
             len(train_ds), fmt, steps, len(eval_pairs))
    output_dir.mkdir(parents=True, exist_ok=True)
    record = training_record(data, config, base=ref.name, location=ref.location, fingerprint=base_fp, valid=valid,
                             within=within)
    (output_dir / RECORD).write_text(json.dumps(record, indent=2))
    trainer, after, train_seconds = run_trainer(model, config, output_dir, steps, train_ds, evaluator)
    metrics: dict[str, Any] = {
        "eval": {"before": before, "after": after, "primary_metric": evaluator.primary_metric},
        "train_pairs": len(train_pairs), "train_examples": len(train_ds), "eval_pairs": len(eval_pairs),
        "steps": trainer.state.global_step, "train_seconds": round(train_seconds, 1),
        "best_checkpoint": trainer.state.best_model_checkpoint, "best_metric": trainer.state.best_metric,
        "log_history": trainer.state.log_history, "unusable_label_rows": len(data.labelled.rejects),
    }
    (output_dir / "metrics.json").write_text(json.dumps(jsonable(metrics), indent=2))
    from train.plots import plot_training

    plots = plot_training(trainer.state.log_history, output_dir)
    write_match_card(output_dir, record, metrics, train_pairs.counts(), describe(config.loss, config.matryoshka), plots)
    key = evaluator.primary_metric
    log.info("saved %s (%s %.4f -> %.4f)", output_dir, key, before[key], after[key])
    return TrainResult(output_dir, metrics, train_pairs.counts())


def write_match_card(output_dir: Path, record: dict, metrics: dict, counts: dict[str, int], loss: str, plots, *,
                intro: str | None = None) -> Path:
    """``README.md``: provenance, pair counts, hyper-parameters, metrics; never training rows.
    ``intro``: the card's first paragraph (default: the fine-tuned encoder's)."""
    from train.card import write_model_card

    data = ["- labelled pairs: " + ", ".join(f"`{Path(name).name}` (sha256 `{sha}`)" for name, sha in
                                             zip(record["data_file"].split(", "), record["data_fingerprint"].split(", "))),
            f"- catalogs: `{Path(record['left_file']).name}`"
            + (f", `{Path(record['right_file']).name}`" if record["right_file"] else " (within)"),
            f"- texts: left {record['left_columns']}"
            + (f"; right {record['right_columns']}" if record["right_columns"] else "")]
    return write_model_card(output_dir, record=record, metrics=metrics, pair_counts=counts, loss=loss, plots=plots,
                            intro=intro or ("A sentence encoder fine-tuned by `taxmig train-match` on labelled "
                                            f"product pairs, for `taxmig match --model {output_dir}`."),
                            data=data, pairs_heading="Pairs",
                            evaluation=f"Validation ({metrics['eval_pairs']} labelled pairs)")
