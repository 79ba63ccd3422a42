"""The model card of a trained encoder (``taxmig train`` and ``taxmig train-match``): provenance,
data fingerprint, pairs, loss, hyper-parameters and metrics, written by :func:`models.card.write_card`.
Never training rows: a card may travel where the catalog may not."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from models import fingerprint
from models.card import metrics_table, provenance, write_card


def write_model_card(output_dir: Path, *, record: dict[str, Any], metrics: dict[str, Any],
                     pair_counts: dict[str, int], loss: str, plots: Sequence[Path],
                     notes: Sequence[str] = (), objective: str | None = None,
                     evaluation: str | None = None, intro: str | None = None,
                     data: Sequence[str] | None = None, pairs_heading: str = "Pairs (train split)") -> Path:
    """Write ``README.md`` in ``output_dir`` (replacing the library's generated card).

    ``objective``: what the pairs teach, in words; ``evaluation``: the held-out metrics' heading
    (default: the products objective's held-out pair similarity); ``intro`` and ``data`` (the
    provenance lines about the training data) default to ``taxmig train``'s."""
    hyper = {k: v for k, v in record["config"].items() if k != "pairs"}
    if data is None:
        data = [f"- training data: `{Path(record['data_file']).name}` (sha256 `{record['data_fingerprint']}`), "
                f"split by normalised product name: {metrics['splits']}"]
    return write_card(
        output_dir, title=output_dir.name,
        intro=intro or ("A sentence encoder fine-tuned by `taxmig train` on a labelled retail catalog, for "
                        f"`taxmig migrate --model {output_dir}`."),
        provenance=[*provenance(record, fingerprint(output_dir)), *data,
                    *([f"- objective: {objective}"] if objective else []), f"- loss: {loss}"],
        sections=[(pairs_heading, ["| kind | pairs |", "|---|---|", *[f"| {k} | {v} |" for k, v in pair_counts.items()],
                                   *([""] + [f"- {n}" for n in notes] if notes else [])]),
                  ("Hyper-parameters", ["```json", json.dumps(hyper, indent=2), "```"]),
                  (evaluation or f"Held-out pair similarity ({metrics['eval_pairs']} pairs of the eval split)",
                   metrics_table(metrics["eval"]["before"], metrics["eval"]["after"]))],
        closing=[f"Trained {metrics['steps']} steps in {metrics['train_seconds']} s; best checkpoint metric "
                 f"{metrics['best_metric']}.", "", *[f"![{p.stem}]({p.name})" for p in plots]])
