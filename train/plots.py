"""PNG plots of a training run from the trainer's log history (loss, learning rate, grad norm)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

SERIES = (("loss", "training loss"), ("learning_rate", "learning rate"), ("grad_norm", "gradient norm"))


def plot_training(log_history: Sequence[dict[str, Any]], output_dir: Path) -> list[Path]:
    """Write ``training_<series>.png`` for each series present; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for key, title in SERIES:
        points = [(row["step"], float(row[key])) for row in log_history if key in row and "step" in row]
        if not points:
            continue
        fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="." if len(points) < 40 else None)
        ax.set_xlabel("step")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = output_dir / f"training_{key}.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written
