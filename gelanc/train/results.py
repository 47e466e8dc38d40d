"""Per-epoch metrics: ``results.csv`` (one row an epoch) and ``results.png`` (their curves).

Both are rewritten whole after every epoch (through :mod:`gelanc.atomic`), so an
interrupted run leaves the table of the epochs it finished, never half a line; the
rows come from the checkpoint, so a resumed run rewrites them whole, the epochs a
kill kept out of the table included.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from gelanc.atomic import atomic_write, write_text

MAX_RESULTS_BYTES = 16 << 20  # a results.csv: 100,000 epochs of 16 columns


def read_csv(path: Path) -> list[dict[str, float]]:
    """The rows written so far (a resumed run continues the table)."""
    from gelanc.files import read_bounded

    if not path.is_file():
        return []
    text = read_bounded(path, MAX_RESULTS_BYTES, "a results.csv").decode("utf-8")  # a run folder may be foreign
    return [{k: float(v) for k, v in row.items() if k and v not in (None, "")}
            for row in csv.DictReader(io.StringIO(text, newline=""))]


def write_csv(path: Path, rows: list[dict[str, float]]) -> None:
    """The table, one column for every key any row has, in the order they first appear
    (a run resumed from an older gelanc gains columns: its earlier rows leave them empty)."""
    columns = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (int(v) if k == "epoch" else f"{v:.6g}") for k, v in r.items()})
    write_text(path, buf.getvalue())


def plot(path: Path, rows: list[dict[str, float]], title: str = "") -> None:
    """The curves of ``rows`` against the epoch, a panel for each kind
    (:func:`gelanc.train.plots.panels`):
    each series as measured (dots) and smoothed (a dashed line, once there are 5 epochs).
    A column that some rows lack (an older run resumed) is a gap in its curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    from gelanc.train.plots import PANEL_COLS, PANEL_INCHES, PLOT_DPI, SMOOTH_SIGMA, panels, smooth

    if not rows:
        raise ValueError("no rows to plot")
    columns = list(dict.fromkeys(k for r in rows for k in r))
    drawn = panels(columns)
    cols = max(1, min(PANEL_COLS, len(drawn)))
    nrows = max(1, -(-len(drawn) // cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(PANEL_INCHES[0] * cols, PANEL_INCHES[1] * nrows), squeeze=False,
                             dpi=PLOT_DPI)
    try:
        epochs = np.array([r.get("epoch", i + 1) for i, r in enumerate(rows)], dtype=np.float64)
        for ax, (name, keys) in zip(axes.flat, drawn):
            for j, k in enumerate(keys):
                y = np.array([r.get(k, np.nan) for r in rows], dtype=np.float64)
                y[~np.isfinite(y)] = np.nan  # an infinite loss is a gap too, not an axis to infinity
                colour = f"C{j}"
                label = k.split("/")[0] if name.endswith("loss") else k.split("/")[-1]
                ax.plot(epochs, y, marker=".", linewidth=1, markersize=4, alpha=0.6, color=colour, label=label)
                if np.isfinite(y).sum() >= 5:
                    ax.plot(epochs, smooth(y), linestyle="--", linewidth=1.5, color=colour)
            ax.set_title(name, fontsize=9)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
            if len(keys) > 1:
                ax.legend(fontsize=7, frameon=False)
        for ax in list(axes.flat)[len(drawn):]:
            ax.axis("off")
        for ax in axes[-1]:
            ax.set_xlabel("epoch", fontsize=8)
        notes = [title] if title else []
        if len(rows) >= 5:
            notes.append(f"dashed: smoothed (Gaussian, σ = {SMOOTH_SIGMA:g} epochs)")
        if notes:
            fig.suptitle("  —  ".join(notes), fontsize=10)
        fig.tight_layout()
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=PLOT_DPI))
    finally:
        plt.close(fig)  # also when the write fails: a long run must not gather open figures


RESULT_COLUMNS = ("epoch", "train/box_loss", "train/cls_loss", "train/dfl_loss", "val/box_loss", "val/cls_loss",
                  "val/dfl_loss", "metrics/precision", "metrics/recall", "metrics/mAP50", "metrics/mAP50-95",
                  "lr/bias", "lr/bn", "lr/weights", "images_per_s", "time_s")


def results_row(epoch: int, stats: dict, metrics: dict, seconds: float) -> dict[str, float]:
    """One epoch's row of results.csv, its columns in :data:`RESULT_COLUMNS` order
    (docs/train.md says what each is)."""
    values = {**stats, **{k: v for k, v in metrics.items() if k.startswith("val/")},
              "metrics/precision": metrics["precision"], "metrics/recall": metrics["recall"],
              "metrics/mAP50": metrics["map50"], "metrics/mAP50-95": metrics["map"], "epoch": epoch,
              "time_s": seconds}
    return {k: float(values[k]) if k != "epoch" else epoch for k in RESULT_COLUMNS if k in values}


def fitness(metrics: dict) -> float:
    """The reference's model selection: 0.1 · mAP@0.5 + 0.9 · mAP@0.5:0.95."""
    return 0.1 * metrics["map50"] + 0.9 * metrics["map"]


def row_fitness(row: dict[str, float]) -> float:
    return fitness({"map50": row["metrics/mAP50"], "map": row["metrics/mAP50-95"]})


def best_epoch(rows: list[dict[str, float]]) -> int | None:
    """The epoch best.pt holds: the first with the highest fitness (a later epoch replaces
    best.pt only by beating it)."""
    return int(max(rows, key=row_fitness)["epoch"]) if rows else None
