"""``taxmig evaluate``: base and fine-tuned encoders side by side on a catalog's held-out split.

One run reports, for each model: held-out pair Pearson/Spearman (EmbeddingSimilarityEvaluator),
subcategory top-1/top-3 accuracy of the migrate path with unflagged precision and coverage (the
number that matters), accuracy at Matryoshka sizes 384/192/96/48, similarity distributions of
matched vs mismatched held-out pairs, and a table of tricky real pairs; then, paired on the same
products, whether the fine-tuned model's top-1 differs from the base's by more than chance (exact
McNemar test, :mod:`train.paired`). Writes ``report.md`` with the PNG plots beside it,
``metrics.json`` and ``predictions.csv`` (each held-out product's category and both models'
choices). Like sentence-transformers' evaluators, each model's results are a dict of metrics with
a primary metric (``migrate_top1``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from migrate.core.catalog import load_catalog
from migrate.core.embedding import RememberingModel
from migrate.core.encoder import Encoder, EncoderSettings, load_model
from migrate.core.files import atomic_path, escaped_text
from migrate.core.index import build_index, search
from migrate.errors import TaxmigError
from migrate.mapping.labels import CategoryLabels
from migrate.mapping.pipeline import Migrator
from migrate.mapping.scoring import ScoringParams, score_categories
from migrate.mapping.settings import MigrationSettings
from train.losses import MATRYOSHKA_DIMS
from train.paired import paired_comparison
from train.pairs import PairConfig, build_pairs
from train.splits import split_labels

log = logging.getLogger(__name__)
PRIMARY_METRIC = "migrate_top1"
REPORT_FILES = ("report.md", "metrics.json", "predictions.csv", "similarity_boxplot.png", "matryoshka.png")
_WORD = re.compile(r"[a-z]{3,}")


def _unit(vectors: np.ndarray, dim: int) -> np.ndarray:
    cut = vectors[:, :dim]
    return cut / np.linalg.norm(cut, axis=1, keepdims=True).clip(1e-12)


def matryoshka_accuracy(src: np.ndarray, tgt: np.ndarray, labels: CategoryLabels, name_vectors: np.ndarray,
                        tgt_cats: np.ndarray, truth: np.ndarray, dims=MATRYOSHKA_DIMS) -> dict[int, float]:
    """Top-1 of the migrate scoring (neighbour vote + labels) with embeddings truncated to each size
    (``name_vectors``: the embeddings of ``labels.names``)."""
    params = ScoringParams()
    out = {}
    for dim in [d for d in dims if d <= src.shape[1]]:
        s, t = _unit(src, dim), _unit(tgt, dim)
        nn_sims, nn_ids = search(build_index(t), s, params.neighbours)
        lab_sims, lab_ids = labels.fit(_unit(name_vectors, dim)).search(s, params.label_candidates)
        cats = np.where(nn_ids >= 0, tgt_cats[np.clip(nn_ids, 0, None)], -1)
        scores = score_categories(len(labels), params, nn_sims=nn_sims, nn_categories=cats,
                                  label_sims=lab_sims, label_ids=lab_ids)
        out[dim] = float((scores.top_ids[:, 0] == truth).mean())
    return out


def tricky_pairs(texts: list[str], cats: list[str], n: int = 8, seed: int = 0) -> list[tuple[str, str, str]]:
    """Real held-out pairs: same words but different category, and different words, same category."""
    rng = np.random.default_rng(seed)
    words = [set(_WORD.findall(t.split(" | ")[0].lower())) for t in texts]
    by_word: dict[str, list[int]] = {}
    for i, ws in enumerate(words):
        for w in ws:
            by_word.setdefault(w, []).append(i)
    same_words, diff_words = [], []
    for i in rng.permutation(len(texts)):
        if len(same_words) < n:
            for w in sorted(words[i]):
                other = [j for j in by_word[w][:200] if cats[j] != cats[i] and len(words[j] & words[i]) >= 1]
                if other:
                    same_words.append((texts[i], texts[other[0]], "same words, different category"))
                    break
        if len(diff_words) < n:
            mates = [j for j in range(len(texts)) if cats[j] == cats[i] and j != i and not (words[j] & words[i])]
            if mates:
                diff_words.append((texts[i], texts[mates[0]], "different words, same category"))
        if len(same_words) >= n and len(diff_words) >= n:
            break
    return same_words + diff_words


def evaluate_models(catalog_path: str | Path, *, model: str, baseline: str | None, output_dir: str | Path,
                    id: str | None = None, text: str | None = None, category: str | None = None,
                    seed: int = 0, overwrite: bool = False, encoding: str = "utf-8", backend: str = "torch") -> Path:
    """Run every evaluation for ``baseline`` and ``model`` and write the report; returns report.md.
    ``backend``: how both models run (``openvino``: a quantized folder from ``taxmig quantize``)."""
    output_dir = Path(output_dir)
    existing = [output_dir / f for f in REPORT_FILES if (output_dir / f).exists()]
    if existing and not overwrite:
        raise TaxmigError(f"{existing[0]} already exists", hint="pass --overwrite or choose another -o folder")
    catalog = load_catalog(catalog_path, role="catalog", id=id, text=text, category=category,
                           category_required=True, encoding=encoding)
    splits = split_labels(catalog.texts, seed=seed)
    held = splits == "test"
    if held.sum() < 10 or len({c for c, h in zip(catalog.categories, held) if h}) < 2:
        raise TaxmigError(f"{catalog.path}: too few held-out products ({int(held.sum())}) to evaluate",
                          hint="use a catalog with more products (the test split is 20% by product name)")
    encoders = {"base": load_model(EncoderSettings(model=baseline, backend=backend)),
                "fine-tuned": load_model(EncoderSettings(model=model, backend=backend))}
    test_texts = [t for t, h in zip(catalog.texts, held) if h]
    test_cats = [c for c, h in zip(catalog.categories, held) if h]
    pairs = build_pairs(test_texts, test_cats, dataclasses.replace(PairConfig(), max_pairs=4000, seed=seed))
    results: dict[str, dict[str, Any]] = {}
    sims: dict[str, dict[str, np.ndarray]] = {}
    predicted: dict[str, dict[str, str]] = {}
    tricky = tricky_pairs(test_texts, test_cats, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        src_path, tgt_path = Path(tmp) / "source.csv", Path(tmp) / "target.csv"
        pl.DataFrame({"id": [i for i, h in zip(catalog.ids, held) if h], "text": test_texts}).write_csv(src_path)
        pl.DataFrame({"id": [i for i, h in zip(catalog.ids, held) if not h],
                      "text": [t for t, h in zip(catalog.texts, held) if not h],
                      "category": [c for c, h in zip(catalog.categories, held) if not h]}).write_csv(tgt_path)
        test_ids = [i for i, h in zip(catalog.ids, held) if h]
        truth = dict(zip(test_ids, test_cats))
        for label, enc in encoders.items():
            results[label], sims[label], predicted[label] = _evaluate_one(enc, pairs, src_path, tgt_path, truth,
                                                                          tricky)
    predictions = pl.DataFrame({"id": test_ids, "text": test_texts, "category": test_cats,
                                **{label: [predicted[label].get(i, "") for i in test_ids] for label in encoders}})
    right = {label: (predictions[label] == predictions["category"]).to_numpy() for label in encoders}
    paired = paired_comparison(right["fine-tuned"], right["base"])
    output_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(output_dir / "predictions.csv") as tmp:
        escaped_text(predictions).write_csv(tmp)  # catalog texts: no live formulas when opened in Excel
    return _write_report(output_dir, catalog_path, encoders, results, sims, tricky, pairs.counts(), paired)


def _evaluate_one(enc: Encoder, pairs, src_path: Path, tgt_path: Path, truth: dict[str, str],
                  tricky: list[tuple[str, str, str]]
                  ) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, str]]:
    """(metrics, matched/mismatched held-out cosines, predicted category per held-out id) of one model."""
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

    if not isinstance(enc.model, RememberingModel):  # the migration and the curves read the same texts
        enc = Encoder(RememberingModel(enc.model), enc.name, enc.fingerprint)

    p = pairs.pairs
    evaluator = EmbeddingSimilarityEvaluator(p["sentence1"].to_list(), p["sentence2"].to_list(),
                                             p["score"].to_list(), name="heldout", show_progress_bar=False)
    pair_metrics = evaluator(enc.model)
    settings = MigrationSettings(source=src_path, target_catalog=tgt_path, source_id="id", source_text="text",
                                 target_id="id", target_text="text", target_category="category", progress=False)
    result = Migrator(enc).run(settings)
    m = result.mapping
    y = np.array([truth[i] for i in m["source_id"]], dtype=object)
    top1 = np.array(m["target_category"].to_list(), dtype=object) == y
    top3 = top1 | (np.array(m["alt1_category"].to_list(), dtype=object) == y) | \
        (np.array(m["alt2_category"].to_list(), dtype=object) == y)
    unflagged = ~m["needs_review"].to_numpy()
    # Matryoshka curve and similarity distributions from one encoding of each text
    src = pl.read_csv(src_path, infer_schema=False)
    tgt = pl.read_csv(tgt_path, infer_schema=False)
    cats = sorted(set(tgt["category"]))
    index_of = {c: i for i, c in enumerate(cats)}
    encode = lambda texts: enc.model.encode(texts, batch_size=64, normalize_embeddings=True,  # noqa: E731
                                            convert_to_numpy=True, show_progress_bar=False)
    labels = CategoryLabels(cats, ScoringParams().label_ancestor_weight)
    src_vec, tgt_vec = encode(src["text"].to_list()), encode(tgt["text"].to_list())
    truth_idx = np.array([index_of.get(truth[i], -1) for i in src["id"]])
    curve = matryoshka_accuracy(src_vec, tgt_vec, labels, encode(labels.names),
                                np.array([index_of[c] for c in tgt["category"]]), truth_idx)
    a, b = encode(p["sentence1"].to_list()), encode(p["sentence2"].to_list())
    cos = (a * b).sum(axis=1)
    kinds = p["kind"].to_numpy()
    left, right = encode([t[0] for t in tricky]), encode([t[1] for t in tricky])
    metrics = {
        "model": enc.name, "fingerprint": enc.fingerprint,
        "pearson": float(pair_metrics["heldout_pearson_cosine"]),
        "spearman": float(pair_metrics["heldout_spearman_cosine"]),
        PRIMARY_METRIC: float(top1.mean()), "migrate_top3": float(top3.mean()),
        "unflagged_precision": float(top1[unflagged].mean()) if unflagged.any() else None,
        "coverage": float(unflagged.mean()),
        "matryoshka_top1": {str(k): v for k, v in curve.items()},
        "primary_metric": PRIMARY_METRIC,
        "tricky_cosine": [float(x) for x in (left * right).sum(axis=1)],
    }
    return (metrics, {"matched": cos[kinds == "positive"], "mismatched": cos[kinds != "positive"]},
            dict(zip(m["source_id"].to_list(), m["target_category"].to_list())))


def _write_report(output_dir: Path, catalog_path, encoders, results, sims, tricky, pair_counts, paired) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
    data, names = [], []
    for label in encoders:
        for kind in ("matched", "mismatched"):
            data.append(sims[label][kind])
            names.append(f"{label}\n{kind}")
    ax.boxplot(data, tick_labels=names, showfliers=False)
    ax.set_ylabel("cosine similarity")
    ax.set_title("Held-out pairs: matched vs mismatched")
    fig.tight_layout()
    with atomic_path(output_dir / "similarity_boxplot.png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for label in encoders:
        curve = results[label]["matryoshka_top1"]
        ax.plot([int(d) for d in curve], list(curve.values()), marker="o", label=label)
    ax.set_xlabel("embedding dimensions")
    ax.set_ylabel("top-1 accuracy")
    ax.set_xscale("log", base=2)
    ax.legend()
    ax.grid(alpha=0.3)
    ax.set_title("Accuracy at Matryoshka sizes")
    fig.tight_layout()
    with atomic_path(output_dir / "matryoshka.png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)

    base, tuned = results["base"], results["fine-tuned"]

    def fmt(v):
        return "—" if v is None else f"{v:.4f}"

    rows = [("pair Pearson (held-out)", "pearson"), ("pair Spearman (held-out)", "spearman"),
            ("migrate top-1", PRIMARY_METRIC), ("migrate top-3", "migrate_top3"),
            ("unflagged precision", "unflagged_precision"), ("coverage (unflagged share)", "coverage")]
    table = ["| metric | base | fine-tuned |", "|---|---|---|",
             *[f"| {name} | {fmt(base[k])} | {fmt(tuned[k])} |" for name, k in rows],
             *[f"| top-1 at {d} dims | {fmt(base['matryoshka_top1'].get(d))} | {fmt(tuned['matryoshka_top1'].get(d))} |"
               for d in tuned["matryoshka_top1"]]]
    trick = ["| text A | text B | kind | base cosine | fine-tuned cosine |", "|---|---|---|---|---|",
             *[f"| {a} | {b} | {k} | {bc:.3f} | {tc:.3f} |".replace("\n", " ")
               for (a, b, k), bc, tc in zip(tricky, base["tricky_cosine"], tuned["tricky_cosine"])]]
    lines = [f"# Evaluation: {encoders['fine-tuned'].name} vs {encoders['base'].name}", "",
             f"Catalog `{catalog_path}`; held-out = the test split by normalised product name (the products "
             "training never saw); the migrate path maps them onto the other products' categories.", "",
             f"- base: {encoders['base'].name} (`{encoders['base'].fingerprint}`)",
             f"- fine-tuned: {encoders['fine-tuned'].name} (`{encoders['fine-tuned'].fingerprint}`)",
             f"- held-out pairs: {pair_counts}", "", *table, "",
             "Paired on the same held-out products (`predictions.csv`): only the fine-tuned "
             f"model is right on {paired.only_first}, only the base on {paired.only_second}; exact McNemar "
             f"p = {paired.p_value:.3g} (below 0.05: the difference is unlikely to be chance).", "",
             "![similarity distributions](similarity_boxplot.png)", "", "![matryoshka](matryoshka.png)", "",
             "## Tricky real pairs (held-out)", "", *trick, ""]
    metrics = {**results, "paired": {"only_fine_tuned": paired.only_first, "only_base": paired.only_second,
                                      "p_value": paired.p_value}}
    with atomic_path(output_dir / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=2))
    report = output_dir / "report.md"
    with atomic_path(report) as tmp:
        tmp.write_text("\n".join(lines))
    return report
