"""The one model card writer: every model folder taxmig writes (fine-tuned, matching, distilled,
quantized) gets a ``README.md`` of the same shape -- a title, what the model is for, its
provenance (the base model and both weights fingerprints first), then sections. Never training
rows: a card may travel where the catalog may not."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence


def provenance(record: dict[str, Any], fingerprint: str, *, derived: str = "base model") -> list[str]:
    """The two lines every card's provenance opens with: the base model and this model's weights."""
    return [f"- {derived}: {record['base_model']} (weights fingerprint `{record['base_model_fingerprint']}`)",
            f"- this model's weights fingerprint: `{fingerprint}`"]


def metrics_table(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """A markdown table of the numeric metrics, base model against this one."""
    return ["| metric | base | fine-tuned |", "|---|---|---|",
            *[f"| {k} | {before.get(k, float('nan')):.4f} | {after[k]:.4f} |" for k in after
              if isinstance(after[k], (int, float))]]


def write_card(folder: Path, *, title: str, intro: str, provenance: Sequence[str],
               sections: Sequence[tuple[str, Sequence[str]]] = (), closing: Sequence[str] = ()) -> Path:
    """Write ``folder/README.md``: ``# title``, ``intro``, ``## Provenance``, each (heading, lines)
    section, then ``closing`` lines; returns its path."""
    lines = [f"# {title}", "", intro, "", "## Provenance", *provenance, ""]
    for heading, body in sections:
        lines += [f"## {heading}", *body, ""]
    lines += [*closing, ""] if closing else []
    path = Path(folder) / "README.md"
    path.write_text("\n".join(lines))
    return path
