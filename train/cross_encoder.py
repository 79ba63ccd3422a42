"""Train a cross-encoder re-ranker for ``taxmig match --reranker`` (``taxmig train-match --cross-encoder``).

sentence-transformers' own stack for cross-encoders: ``CrossEncoder`` initialised from the
encoder's transformer weights (the bundled all-MiniLM-L6-v2 by default: no download) with a new
one-logit head, ``CrossEncoderTrainer`` with ``BinaryCrossEntropyLoss`` (positives weighted by the
non-match/match ratio of the pairs), and ``CrossEncoderClassificationEvaluator`` on the validation
pairs (average precision, its primary metric) choosing the best checkpoint and stopping early.
The records are serialised as the re-ranker reads them in ``match``
(:func:`migrate.matching.reranker.serialise`). After training, the threshold of best F1 on the
validation pairs is written to ``reranker.json`` beside the model, and the joined score
(:func:`migrate.matching.scoring.fit_join`: the hybrid's pair features, from the encoder ``match``
uses by default or ``--base-model``, fitted on the training pairs and joined to the re-ranker on the
validation pairs) that ``match --reranker`` without ``--labels`` scores by.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from migrate.errors import ModelError, TaxmigError
from migrate.matching.features import FEATURES
from migrate.matching.reranker import JOIN_FILE, RECORD, SERIALISATION, Reranker, serialise
from migrate.matching.scoring import JOIN_COLUMNS, JOIN_HYBRID, JOIN_KIND, can_fit, choose_threshold, fit_join
from models import fingerprint
from train.finetune import TrainConfig, TrainResult, jsonable, final_metrics, quiet_trainer, training_args
from train.match import MatchPairs, TrainingPairs, read_training_pairs, training_record, write_match_card

log = logging.getLogger(__name__)

LOSS = "BinaryCrossEntropyLoss"
CPU_BF16 = True
"""Train in bf16 mixed precision on a CPU that computes bf16 in hardware (only training: the saved
model is read in fp32); the re-ranker rows of BENCHMARKS.md, "match: Abt-Buy and Amazon-Google
(DeepMatcher splits)" train this way."""
SENTENCE_TRANSFORMERS_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json",
                               "README.md")
"""Files of a sentence-transformers folder that would make ``CrossEncoder`` load it as a bi-encoder."""


def transformer_folder(location: str, staging: Path) -> str:
    """A folder with only the transformer of the sentence-transformers model at ``location``
    (links, copies where links cannot be made), so ``CrossEncoder`` puts a fresh classification head on its weights. A
    plain transformers folder is returned as it is."""
    root = Path(location)
    modules = root / "modules.json"
    if not modules.is_file():
        return location
    entries = json.loads(modules.read_text())
    transformer = next((e for e in entries if e.get("type", "").endswith("Transformer")), None)
    if transformer is None:
        raise ModelError(f"{location}: no transformer module to start a cross-encoder from",
                         hint="give --base-model a transformer-based sentence-transformers or transformers folder")
    source = root / transformer.get("path", "")
    for item in source.iterdir():
        if item.is_file() and item.name not in SENTENCE_TRANSFORMERS_FILES:
            try:
                os.symlink(item.resolve(), staging / item.name)
            except OSError:  # Windows without the symlink privilege
                shutil.copy2(item, staging / item.name)
    return str(staging)


def _dataset(pairs: MatchPairs):
    from datasets import Dataset

    return Dataset.from_dict({"sentence1": pairs.sentence1, "sentence2": pairs.sentence2,
                              "label": [float(y) for y in pairs.labels]})


def fit_joined_score(data: TrainingPairs, config: TrainConfig, reranker: Reranker, eval_probabilities: np.ndarray,
                     output_dir: Path, within: bool) -> dict[str, Any] | None:
    """Fit the joined score (:func:`~migrate.matching.scoring.fit_join`) on the run's pairs, keep both
    sets' features in :data:`~migrate.matching.reranker.JOIN_FILE` and return what ``reranker.json``
    records of it; ``None`` (and a warning) when either set of pairs is too small. The validation
    pairs' re-ranker gaps are measured among the candidates ``match`` would score, so ``reranker``
    reads those too (``eval_probabilities``: what it gave the validation pairs)."""
    from migrate.core.encoder import load_model
    from migrate.matching.matcher import Matcher, MatchInputs, MatchSettings, PairFeatures, search_pairs

    train_y, valid_y = np.asarray(data.train.labels), np.asarray(data.eval.labels)
    if not (can_fit(train_y) and can_fit(valid_y)):
        log.warning("too few matches or non-matches for a joined score: without --labels, 'match --reranker' will "
                    "score by the re-ranker alone")
        return None
    encoder = load_model(config.encoder)
    k = MatchSettings.candidates  # what match searches by default: the gap features depend on it
    inputs = MatchInputs(data.left, data.right, within=within)
    context, forward, _ = Matcher(encoder).context(inputs, k=k, batch_size=config.batch_size)
    candidates = search_pairs(context, forward, within)
    log.info("joined score: the re-ranker reads %d candidate pairs", len(candidates[0]))
    features = PairFeatures(context, inputs, reranker, candidates=candidates)
    features.remember(data.eval.left_rows, data.eval.right_rows, eval_probabilities)
    train_x = context.features(data.train.left_rows, data.train.right_rows)
    valid_x = features(data.eval.left_rows, data.eval.right_rows)
    scorer, threshold = fit_join(train_x, train_y, valid_x, valid_y, data.eval.left_rows, seed=config.seed)
    np.savez(output_dir / JOIN_FILE, train_features=train_x, train_labels=train_y, valid_features=valid_x,
             valid_labels=valid_y)
    log.info("joined score: threshold %.3f, validation F1 %.3f out-of-fold", threshold.value, threshold.f1)
    return {"encoder": encoder.name, "encoder_fingerprint": encoder.fingerprint, "candidates": k, "features": list(FEATURES),
            "columns": list(JOIN_COLUMNS), "hybrid": JOIN_HYBRID, "join": JOIN_KIND, "hybrid_pairs": len(train_y),
            "join_pairs": len(valid_y), "within": within, "seed": config.seed, "threshold": threshold.value,
            "valid": {"pairs": len(valid_y), "precision": threshold.precision, "recall": threshold.recall,
                      "f1": threshold.f1, "chosen": threshold.source}}


def train_cross_encoder(left_path: str | Path, right_path: str | Path | None,
                        pairs_path: str | Path | Sequence[str | Path], output_dir: str | Path, config: TrainConfig, *,
                        valid: str | Path | None = None, within: bool = False, left_id: str | None = None,
                        left_text: str | None = None, right_id: str | None = None, right_text: str | None = None,
                        encoding: str = "utf-8") -> TrainResult:
    """Train a re-ranker on the labelled pairs (as :func:`train.match.train_match_encoder` reads
    them); save the model, ``reranker.json`` (threshold, metrics), ``metrics.json`` and a card."""
    import torch
    from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.evaluation import CrossEncoderClassificationEvaluator
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss
    from transformers import EarlyStoppingCallback

    output_dir = Path(output_dir)
    data = read_training_pairs(left_path, right_path, pairs_path, output_dir, config, valid=valid, within=within,
                               left_id=left_id, left_text=left_text, right_id=right_id, right_text=right_text,
                               encoding=encoding, texts=serialise)
    counts = data.train.counts()
    if not counts["match"] or not counts["non_match"]:
        raise TaxmigError(f"{data.labelled.path}: the training pairs need matches and non-matches "
                          f"({counts['match']} and {counts['non_match']})", hint="label pairs of both kinds")
    ref = config.encoder.resolve()
    base_fp = fingerprint(ref.location) if ref.is_local else ref.name
    eval_pairs = [[a, b] for a, b in zip(data.eval.sentence1, data.eval.sentence2)]
    evaluator = CrossEncoderClassificationEvaluator(eval_pairs, data.eval.labels, name="valid",
                                                    batch_size=config.batch_size, show_progress_bar=False,
                                                    write_csv=False)
    from transformers import set_seed

    set_seed(config.seed)  # the new head's initial weights, hence "before" and the run, repeat
    with tempfile.TemporaryDirectory() as staging:
        try:
            model = CrossEncoder(transformer_folder(ref.location, Path(staging)), num_labels=1,
                                 max_length=config.max_seq_length, local_files_only=ref.is_local)
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot start a cross-encoder from '{ref.name}': {str(exc).splitlines()[0][:200]}",
                             hint="check that the folder holds a complete model") from None
        before = evaluator(model)
        steps = math.ceil(len(data.train) / config.batch_size * config.epochs)
        pos_weight = counts["non_match"] / counts["match"]
        log.info("training a cross-encoder on %d pairs (%d steps, positives weighted %.2f), evaluating on %d",
                 len(data.train), steps, pos_weight, len(data.eval))
        output_dir.mkdir(parents=True, exist_ok=True)
        record = training_record(data, config, base=ref.name, location=ref.location, fingerprint=base_fp,
                                 valid=valid, within=within)
        metric = f"eval_{evaluator.primary_metric}"
        trainer = CrossEncoderTrainer(
            model=model, args=training_args(config, output_dir, steps, metric, CrossEncoderTrainingArguments,
                                            cpu_bf16=CPU_BF16),
            train_dataset=_dataset(data.train), evaluator=evaluator,
            loss=BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(pos_weight)),
            callbacks=[EarlyStoppingCallback(early_stopping_patience=config.early_stopping_patience)])
        quiet_trainer(trainer)
        started = time.perf_counter()
        trainer.train()
        train_seconds = time.perf_counter() - started
    after = final_metrics(trainer, evaluator, model)
    os.environ["HF_HUB_OFFLINE"] = "1"  # saving otherwise looks the base model up on the hub
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Writing model shards" is noise
    model.save_pretrained(str(output_dir))
    # score with the model as match loads it: the trained one still runs under the trainer's autocast
    # (bf16 on CPU), whose probabilities differed by up to 0.11 from the saved model's on Abt-Buy
    saved = CrossEncoder(str(output_dir), local_files_only=True, max_length=config.max_seq_length)
    trained = Reranker(saved, output_dir, 0.5, record, config.batch_size)
    probabilities = trained.score(data.eval.sentence1, data.eval.sentence2)
    threshold = choose_threshold(probabilities, np.asarray(data.eval.labels), source="validation pairs")
    join = fit_joined_score(data, config, trained, probabilities, output_dir, within)
    metrics: dict[str, Any] = {
        "eval": {"before": before, "after": after, "primary_metric": evaluator.primary_metric},
        "train_pairs": len(data.train), "train_examples": len(data.train), "eval_pairs": len(data.eval),
        "steps": trainer.state.global_step, "train_seconds": round(train_seconds, 1),
        "best_checkpoint": trainer.state.best_model_checkpoint, "best_metric": trainer.state.best_metric,
        "log_history": trainer.state.log_history, "unusable_label_rows": len(data.labelled.rejects),
        "threshold": threshold.as_dict(), "join": join,
    }
    (output_dir / "metrics.json").write_text(json.dumps(jsonable(metrics), indent=2))
    reranker_record = {**record, "kind": "cross-encoder re-ranker", "serialisation": SERIALISATION,
                       "max_length": config.max_seq_length, "threshold": threshold.value,
                       "valid": {"pairs": len(data.eval), "precision": threshold.precision,
                                 "recall": threshold.recall, "f1": threshold.f1,
                                 evaluator.primary_metric: after.get(evaluator.primary_metric)},
                       "join": join}
    (output_dir / RECORD).write_text(json.dumps(jsonable(reranker_record), indent=2))
    from train.plots import plot_training

    plots = plot_training(trainer.state.log_history, output_dir)
    write_match_card(output_dir, record, metrics, counts, LOSS, plots,
                intro="A cross-encoder re-ranker trained by `taxmig train-match --cross-encoder` on labelled "
                      f"product pairs, for `taxmig match --reranker {output_dir}`; threshold "
                      f"{threshold.value:.3f} (best F1 on the validation pairs)"
                      + ("." if join is None else
                         f"; without `--labels`, `match` scores by the joined score (the hybrid's features, "
                         f"gradient boosting fitted on the training pairs, joined to the re-ranker's probability and "
                         f"its gaps by gradient boosting on the validation pairs), threshold {join['threshold']:.3f}, "
                         f"F1 {join['valid']['f1']:.3f} out-of-fold on the validation pairs, with the encoder "
                         f"{join['encoder']}."))
    key = evaluator.primary_metric
    log.info("saved %s (%s %.4f -> %.4f; threshold %.3f)", output_dir, key, before[key], after[key], threshold.value)
    return TrainResult(output_dir, metrics, counts)

