"""Fine-tune an encoder on a labelled catalog with sentence-transformers' own trainer.

Two objectives share the split, the trainer, the model card and the run record: ``products``
(pairs and encoder-mined triplets among products, :mod:`train.pairs`; held-out pair Spearman) and
``labels`` (product -> its category path, :mod:`train.label_alignment`; held-out top-1 of product -> path).

>>> from train.finetune import TrainConfig, train_encoder
>>> result = train_encoder("catalog.csv", "models/retail-minilm", TrainConfig(epochs=1))  # doctest: +SKIP
>>> result.metrics["eval"]["after"]                                                     # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from migrate.core.catalog import Catalog, load_catalog
from migrate.core.encoder import EncoderSettings
from migrate.core.hashing import file_fingerprint
from migrate.errors import ModelError, TaxmigError
from models import ModelRef, load_encoder
from train.decisions import DecisionExamples
from train.losses import LOSSES, build_loss, describe
from train.pairs import PairConfig, build_pairs
from train.splits import split_labels

log = logging.getLogger(__name__)
RECORD = "taxmig_train.json"
CHECKPOINTS = "checkpoints"
OBJECTIVES = {
    "products": "product-product pairs and encoder-mined triplets from shared categories (train.pairs)",
    "labels": "label alignment: (product, its category path) pairs, in-batch negatives (train.label_alignment)",
}


@dataclass
class TrainConfig:
    """Hyper-parameters with the retail recipe's defaults (CPU-friendly sequence length)."""

    base_model: str | None = None
    objective: str = "products"  # or "labels": (product, category path) pairs (train.label_alignment)
    leaf_names: bool = False  # labels: also (product, leaf name) pairs
    loss: str = "mnrl"  # on the encoder-mined triplets (train.pairs); "cosine" is the retail recipe
    matryoshka: bool = False
    epochs: float = 1.0
    batch_size: int = 32
    learning_rate: float = 2e-5
    warmup_ratio: float = 0.1
    max_seq_length: int = 64
    max_pairs: int | None = None
    max_eval_pairs: int = 2000
    seed: int = 0
    evaluations: int = 8            # evaluations (and checkpoints) spread over the run
    early_stopping_patience: int = 3
    report_to: str = "none"
    resume: bool = False
    pairs: PairConfig = field(default_factory=PairConfig)

    @property
    def encoder(self) -> EncoderSettings:
        """The encoder training starts from (``--base-model``; by default the bundled
        all-MiniLM-L6-v2), named as every command names its encoder: :func:`load_base` loads it."""
        return EncoderSettings(model=self.base_model)

    def validate(self) -> "TrainConfig":
        problems = []
        if self.objective not in OBJECTIVES:
            problems.append(f"--objective must be one of {', '.join(OBJECTIVES)}")
        elif self.objective == "labels" and self.loss != "mnrl":
            problems.append("--objective labels trains MultipleNegativesRankingLoss on (product, category) pairs: "
                            "use --loss mnrl")
        if self.leaf_names and self.objective != "labels":
            problems.append("--leaf-names goes with --objective labels")
        if self.loss not in LOSSES:
            problems.append(f"--loss must be one of {', '.join(LOSSES)}")
        if self.epochs <= 0:
            problems.append("--epochs must be positive")
        if self.batch_size < 2:
            problems.append("--batch-size must be at least 2")
        if self.max_pairs is not None and self.max_pairs < 10:
            problems.append("--max-pairs must be at least 10")
        if self.report_to not in ("none", "tensorboard", "wandb"):
            problems.append("--report-to must be none, tensorboard or wandb")
        if problems:
            raise TaxmigError("; ".join(problems), hint="see taxmig train --help")
        return self


@dataclass
class TrainResult:
    output_dir: Path
    metrics: dict[str, Any]
    pair_counts: dict[str, int]


def load_base(settings: EncoderSettings) -> tuple[ModelRef, Any, str]:
    """``(ref, model, fingerprint)`` of the encoder a run trains: resolved and loaded through the
    same :class:`EncoderSettings` as every command's encoder, now and as a model of its own
    (training changes its weights), with torch and fp32 weights -- the trainer's mixed precision
    is :func:`training_args`' -- so another backend or precision is refused."""
    problems = settings.problems()
    if not problems and settings.backend != "torch":
        problems.append(f"training runs the model with torch, not --backend {settings.backend}")
    if not problems and settings.precision not in ("fp32", "auto"):
        problems.append(f"training keeps fp32 weights (bf16 mixed precision where the hardware has it), "
                        f"not --precision {settings.precision}")
    if problems:
        raise ModelError("; ".join(problems), hint="train from a torch model in fp32; see taxmig train --help")
    ref = settings.resolve()
    model, fp = load_encoder(ref, **{**settings.load_options(), "precision": "fp32"})
    return ref, model, fp


def _subset(catalog: Catalog, mask) -> tuple[list[str], list[str]]:
    return ([t for t, m in zip(catalog.texts, mask) if m], [c for c, m in zip(catalog.categories, mask) if m])


def _check_resume(output_dir: Path, base_fingerprint: str, objective: str = "products") -> None:
    record = output_dir / RECORD
    if not record.exists():
        raise TaxmigError(f"{output_dir} holds no earlier run to resume",
                          hint="drop --resume, or point -o at the folder of the interrupted run")
    earlier = json.loads(record.read_text())
    if earlier.get("base_model_fingerprint") != base_fingerprint:
        raise TaxmigError(f"the checkpoints in {output_dir} come from another base model "
                          f"({earlier.get('base_model')}, fingerprint {earlier.get('base_model_fingerprint')})",
                          hint="resume with the same --base-model, or train into a new folder")
    if earlier.get("objective", "products") != objective:
        raise TaxmigError(f"the checkpoints in {output_dir} were trained with --objective {earlier.get('objective')}",
                          hint=f"resume with --objective {earlier.get('objective')}, or train into a new folder")


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX), so mixed precision pays
    (:func:`models.registry.cpu_computes_bf16`)."""
    from models.registry import cpu_computes_bf16

    return cpu_computes_bf16()


def training_args(config: TrainConfig, output_dir: Path, steps: int, metric: str, args_class=None, *,
                  cpu_bf16: bool = False):
    """The trainer arguments every taxmig training run shares: ``config.evaluations`` evaluations
    and checkpoints spread over the run, the best by ``metric`` kept, bf16 on a GPU that has it --
    and with ``cpu_bf16``, on a CPU that has it (:func:`cpu_has_bf16`) when there is no GPU.
    ``args_class``: sentence-transformers' arguments class (default: the bi-encoder's;
    ``CrossEncoderTrainingArguments`` for the re-ranker)."""
    import torch
    from sentence_transformers import SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers

    every = max(1, steps // max(1, config.evaluations))
    on_cpu = not torch.cuda.is_available()
    bf16 = bool(torch.cuda.is_bf16_supported() if not on_cpu else cpu_bf16 and cpu_has_bf16())
    extra = {"use_cpu": True} if on_cpu and bf16 else {}  # transformers refuses bf16 without a GPU otherwise
    return (args_class or SentenceTransformerTrainingArguments)(
        output_dir=str(output_dir / CHECKPOINTS),
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        warmup_steps=config.warmup_ratio,  # a float below 1 is a ratio in transformers v5
        bf16=bf16,
        eval_strategy="steps", eval_steps=every,
        save_strategy="steps", save_steps=every, save_total_limit=2,
        load_best_model_at_end=True, metric_for_best_model=metric, greater_is_better=True,
        logging_steps=max(1, min(every, 25)),
        batch_sampler=BatchSamplers.NO_DUPLICATES if config.loss == "mnrl" else BatchSamplers.BATCH_SAMPLER,
        report_to=[] if config.report_to == "none" else [config.report_to],
        seed=config.seed, data_seed=config.seed,
        disable_tqdm=not log.isEnabledFor(logging.INFO),
        dataloader_pin_memory=torch.cuda.is_available(),
        **extra,
    )


@dataclass
class _TrainingData:
    """What an objective hands the shared trainer: the dataset, the evaluator and what to record."""

    train_ds: Any
    evaluator: Any
    counts: dict[str, int]
    notes: list[str]
    n_eval: int
    data_format: str
    eval_title: str
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def _n_examples(dataset) -> int:
    """Rows of a ``Dataset``, or of all datasets of a ``DatasetDict``."""
    return sum(len(d) for d in dataset.values()) if hasattr(dataset, "values") else len(dataset)


def _product_data(model, config: TrainConfig, train: tuple[list[str], list[str]], held: tuple[list[str], list[str]],
                  decisions: "DecisionExamples | None") -> _TrainingData:
    """``--objective products``: pairs/triplets among products; checkpoints chosen by the held-out
    migrate-path top-1 (:mod:`train.migration_evaluator`), the pair Spearman reported beside it."""
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

    from train.migration_evaluator import MigrationTop1Evaluator

    (train_texts, train_cats), (eval_texts, eval_cats) = train, held
    pair_config = dataclasses.replace(config.pairs, max_pairs=config.max_pairs, seed=config.seed)
    embed = lambda texts: model.encode(texts, batch_size=config.encoder.batch_size, normalize_embeddings=True,  # noqa: E731
                                       convert_to_numpy=True, show_progress_bar=False)
    started = time.perf_counter()
    train_pairs = build_pairs(train_texts, train_cats, pair_config, embed=embed)
    eval_pairs = build_pairs(eval_texts, eval_cats,
                             dataclasses.replace(pair_config, max_pairs=config.max_eval_pairs), embed=None)
    pair_seconds = time.perf_counter() - started
    fmt = LOSSES[config.loss].data_format
    train_ds = train_pairs.to_dataset(fmt)
    decision_counts: dict[str, int] = {}
    if decisions is not None:
        from datasets import concatenate_datasets

        from train.decisions import decision_pairs

        held_out = split_labels(decisions.texts, seed=config.seed) != "train"
        usable = DecisionExamples([t for t, h in zip(decisions.texts, held_out) if not h],
                                  [c for c, h in zip(decisions.categories, held_out) if not h],
                                  [s for s, h in zip(decisions.suggested, held_out) if not h],
                                  notes=[f"{int(held_out.sum())} decisions on products of the eval/test split "
                                         "were left out"] if held_out.any() else [])
        extra = decision_pairs(usable, train_texts, train_cats, seed=config.seed)
        train_ds = concatenate_datasets([train_ds, extra.to_dataset(fmt)])
        decision_counts = {"decisions": len(decisions), "decisions_used": len(usable),
                           "corrections": usable.corrections, "decision_pairs": extra.pairs.height,
                           "decision_triplets": extra.triplets.height}
        train_pairs.notes.extend(extra.notes)
    similarity = EmbeddingSimilarityEvaluator(eval_pairs.pairs["sentence1"].to_list(),
                                              eval_pairs.pairs["sentence2"].to_list(),
                                              eval_pairs.pairs["score"].to_list(), name="heldout",
                                              batch_size=64, show_progress_bar=False)
    evaluator = MigrationTop1Evaluator(eval_texts, eval_cats, train_texts, train_cats, name="heldout",
                                       secondary=[similarity], seed=config.seed)
    counts = {**train_pairs.counts(), **{k: v for k, v in decision_counts.items() if k.startswith("decision_")}}
    n_eval = len(eval_pairs.pairs)
    return _TrainingData(train_ds, evaluator, counts, train_pairs.notes, n_eval, fmt,
                         f"Held-out migrate-path top-1 ({len(evaluator.texts)} products of the eval split; pair "
                         f"similarity on {n_eval} pairs beside it)", pair_seconds,
                         {"reviewer_decisions": decision_counts} if decision_counts else {})


def _label_data(config: TrainConfig, train: tuple[list[str], list[str]], held: tuple[list[str], list[str]],
                taxonomy: list[str]) -> _TrainingData:
    """``--objective labels``: (product, category path) pairs; held-out top-1 of product -> path by cosine."""
    from train.label_alignment import CategoryAccuracyEvaluator, build_label_pairs

    started = time.perf_counter()
    pairs = build_label_pairs(*train, leaf_names=config.leaf_names, max_pairs=config.max_pairs, seed=config.seed)
    eval_texts, eval_cats = held
    if len(eval_texts) > config.max_eval_pairs:  # a seeded subset keeps each evaluation cheap on CPU
        keep = np.sort(np.random.default_rng(config.seed).choice(len(eval_texts), config.max_eval_pairs,
                                                                 replace=False))
        eval_texts, eval_cats = [eval_texts[i] for i in keep], [eval_cats[i] for i in keep]
    evaluator = CategoryAccuracyEvaluator(eval_texts, eval_cats, taxonomy, name="heldout", batch_size=64)
    return _TrainingData(pairs.to_dataset(), evaluator, pairs.counts(), pairs.notes, len(eval_texts),
                         "(product, category) pairs",
                         f"Held-out category accuracy ({len(eval_texts)} products of the eval split mapped onto "
                         f"the catalog's {len(taxonomy)} category paths by cosine)", time.perf_counter() - started)


def train_encoder(catalog_path: str | Path, output_dir: str | Path, config: TrainConfig, *,
                  id: str | None = None, text: str | None = None, category: str | None = None,
                  encoding: str = "utf-8", decisions: "DecisionExamples | None" = None) -> TrainResult:
    """Split ``catalog_path`` by normalised name, build the objective's training data, train, save
    model + card + metrics (``config.objective``: ``products`` or ``labels``)."""
    config.validate()
    if decisions is not None and config.objective != "products":
        raise TaxmigError("--decisions adds product pairs: it goes with --objective products",
                          hint="drop --decisions, or train with --objective products")
    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()) and not config.resume:
        raise TaxmigError(f"{output_dir} already exists and is not empty",
                          hint="choose a new -o folder, or pass --resume to continue a run there")
    catalog = load_catalog(catalog_path, role="catalog", id=id, text=text, category=category,
                           category_required=True, encoding=encoding)
    ref, model, base_fp = load_base(config.encoder)
    if config.resume:
        _check_resume(output_dir, base_fp, config.objective)
    model.max_seq_length = config.max_seq_length

    splits = split_labels(catalog.texts, seed=config.seed)
    train_split = _subset(catalog, splits == "train")
    eval_split = _subset(catalog, splits == "eval")
    if len(set(eval_split[1])) < 2:
        raise TaxmigError(f"{catalog.path}: the held-out split has fewer than 2 categories",
                          hint="use a larger catalog (a few products per category at least)")
    if config.objective == "labels":
        data = _label_data(config, train_split, eval_split, sorted(set(catalog.categories)))
    else:
        data = _product_data(model, config, train_split, eval_split, decisions)
    evaluator = data.evaluator
    before = evaluator(model)
    n_train = _n_examples(data.train_ds)
    steps = math.ceil(n_train / config.batch_size * config.epochs)
    log.info("training %s (objective %s) on %d %s (%d steps), evaluating on %d held-out %s",
             describe(config.loss, config.matryoshka), config.objective, n_train, data.data_format, steps, data.n_eval,
             "products" if config.objective == "labels" else "pairs")
    output_dir.mkdir(parents=True, exist_ok=True)
    record = {"base_model": ref.name, "base_model_location": ref.location, "base_model_fingerprint": base_fp,
              "objective": config.objective, "data_file": str(catalog_path),
              "data_fingerprint": file_fingerprint(catalog_path), "config": jsonable(dataclasses.asdict(config))}
    (output_dir / RECORD).write_text(json.dumps(record, indent=2))
    # the evaluator alone drives evaluation, checkpoints and early stopping (an eval_dataset would
    # encode the held-out pairs a second time for a loss value nobody reads: half the eval cost on CPU)
    trainer, after, train_seconds = run_trainer(model, config, output_dir, steps, data.train_ds, evaluator)
    metrics = {
        "objective": config.objective,
        "eval": {"before": before, "after": after, "primary_metric": evaluator.primary_metric},
        "train_pairs": n_train, "eval_pairs": data.n_eval, "steps": trainer.state.global_step,
        "train_seconds": round(train_seconds, 1), "pair_seconds": round(data.seconds, 1),
        "best_checkpoint": trainer.state.best_model_checkpoint, "best_metric": trainer.state.best_metric,
        "log_history": trainer.state.log_history,
        "splits": {s: int((splits == s).sum()) for s in ("train", "eval", "test")},
        **data.extra,
    }
    (output_dir / "metrics.json").write_text(json.dumps(jsonable(metrics), indent=2))
    from train.card import write_model_card
    from train.plots import plot_training

    plots = plot_training(trainer.state.log_history, output_dir)
    write_model_card(output_dir, record=record, metrics=metrics, pair_counts=data.counts,
                     loss=describe(config.loss, config.matryoshka), plots=plots, notes=data.notes,
                     objective=f"{config.objective} -- {OBJECTIVES[config.objective]}"
                               + (", plus (product, leaf name) pairs" if config.leaf_names else ""),
                     evaluation=data.eval_title)
    log.info("saved %s (held-out %s %.4f -> %.4f)", output_dir, evaluator.primary_metric,
             before[evaluator.primary_metric], after[evaluator.primary_metric])
    return TrainResult(output_dir, metrics, data.counts)


def run_trainer(model, config: TrainConfig, output_dir: Path, steps: int, train_ds, evaluator
                ):
    """Train ``model`` with SentenceTransformerTrainer (the evaluator drives checkpoints and early
    stopping; ``config.resume`` continues from the last checkpoint), then save it to ``output_dir``.

    Returns the trainer (its ``state`` knows the best checkpoint), the evaluator's metrics after
    training and the training seconds.
    """
    from sentence_transformers import SentenceTransformerTrainer
    from transformers import EarlyStoppingCallback

    metric = f"eval_{evaluator.primary_metric}"
    trainer = SentenceTransformerTrainer(
        model=model, args=training_args(config, output_dir, steps, metric), train_dataset=train_ds,
        loss=build_loss(model, config.loss, matryoshka=config.matryoshka),
        evaluator=evaluator, callbacks=[EarlyStoppingCallback(early_stopping_patience=config.early_stopping_patience)])
    quiet_trainer(trainer)
    last = _last_checkpoint(output_dir) if config.resume else None
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(last) if last else None)
    train_seconds = time.perf_counter() - t0
    after = final_metrics(trainer, evaluator, model)
    os.environ["HF_HUB_OFFLINE"] = "1"  # saving otherwise looks the base model up on the hub
    model.save(str(output_dir))
    return trainer, after, train_seconds


TRAINER_EVAL_KEYS = ("eval_runtime", "eval_samples_per_second", "eval_steps_per_second", "eval_loss")
"""What the trainer adds to an evaluation's log entry beside the evaluator's own metrics."""


def final_metrics(trainer, evaluator, model) -> dict[str, float]:
    """The evaluator's metrics of the model training ended with: the best checkpoint's, which
    ``load_best_model_at_end`` loaded and whose evaluation the trainer logged at that step, so the
    held-out set is not encoded once more (up to :data:`train.migration_evaluator.MAX_TARGET_PRODUCTS`
    and :data:`~train.migration_evaluator.MAX_HELD_OUT` texts); the evaluator runs again only when no evaluation of that checkpoint was logged."""
    best = trainer.state.best_model_checkpoint
    if best:
        step = int(Path(best).name.rsplit("-", 1)[-1])
        for entry in reversed(trainer.state.log_history):
            if entry.get("step") == step and f"eval_{evaluator.primary_metric}" in entry:
                return {key.removeprefix("eval_"): value for key, value in entry.items()
                        if key.startswith("eval_") and key not in TRAINER_EVAL_KEYS}
    return evaluator(model)


def quiet_trainer(trainer) -> None:
    """Without INFO logging (``-q``) the trainer prints nothing: transformers swaps its progress bar
    for a callback that prints every log dict to stdout, which this removes."""
    from transformers.trainer_callback import PrinterCallback

    if not log.isEnabledFor(logging.INFO):
        trainer.remove_callback(PrinterCallback)


def _last_checkpoint(output_dir: Path) -> Path | None:
    folder = output_dir / CHECKPOINTS
    found = sorted(folder.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1])) if folder.exists() else []
    if not found:
        raise TaxmigError(f"no checkpoint under {folder}", hint="drop --resume to start a new run")
    return found[-1]


def jsonable(value: Any) -> Any:
    """``value`` as JSON takes it: numpy scalars as Python numbers, NaN and infinities as None."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        return value.item()
    return value
