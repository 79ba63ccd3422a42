"""Our model card for a fine-tuned encoder: provenance, data fingerprint, pairs, loss,
hyper-parameters and metrics. Never training rows: a card may travel where the catalog may not."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from models import fingerprint


def write_model_card(output_dir: Path, *, record: dict[str, Any], metrics: dict[str, Any],
                     pair_counts: dict[str, int], loss: str, plots: Sequence[Path],
                     notes: Sequence[str] = (), objective: str | None = None,
                     evaluation: str | None = None) -> Path:
    """Write ``README.md`` in ``output_dir`` (replacing the library's generated card).

    ``objective``: what the pairs teach, in words; ``evaluation``: the held-out metrics' heading
    (default: the products objective's held-out pair similarity)."""
    cfg = record["config"]
    before, after = metrics["eval"]["before"], metrics["eval"]["after"]
    keys = [k for k in after if isinstance(after[k], (int, float))]
    rows = "\n".join(f"| {k} | {before.get(k, float('nan')):.4f} | {after[k]:.4f} |" for k in keys)
    hyper = {k: v for k, v in cfg.items() if k != "pairs"}
    lines = [
        f"# {output_dir.name}",
        "",
        "A sentence encoder fine-tuned by `taxmig train` on a labelled retail catalog, for "
        "`taxmig migrate --model " + str(output_dir) + "`.",
        "",
        "## Provenance",
        f"- base model: {record['base_model']} (weights fingerprint `{record['base_model_fingerprint']}`)",
        f"- this model's weights fingerprint: `{fingerprint(output_dir)}`",
        f"- training data: `{Path(record['data_file']).name}` (sha256 `{record['data_fingerprint']}`), split by "
        f"normalised product name: {metrics['splits']}",
        *([f"- objective: {objective}"] if objective else []),
        f"- loss: {loss}",
        "",
        "## Pairs (train split)",
        "| kind | pairs |", "|---|---|", *[f"| {k} | {v} |" for k, v in pair_counts.items()],
        *([""] + [f"- {n}" for n in notes] if notes else []),
        "",
        "## Hyper-parameters",
        "```json", json.dumps(hyper, indent=2), "```",
        "",
        "## " + (evaluation or f"Held-out pair similarity ({metrics['eval_pairs']} pairs of the eval split)"),
        "| metric | base | fine-tuned |", "|---|---|---|", rows,
        "",
        f"Trained {metrics['steps']} steps in {metrics['train_seconds']} s; best checkpoint metric "
        f"{metrics['best_metric']}.",
        "",
        *[f"![{p.stem}]({p.name})" for p in plots],
        "",
    ]
    path = output_dir / "README.md"
    path.write_text("\n".join(lines))
    return path
