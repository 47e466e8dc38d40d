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


def read_csv(path: Path) -> list[dict[str, float]]:
    """The rows written so far (a resumed run continues the table)."""
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def write_csv(path: Path, rows: list[dict[str, float]]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (int(v) if k == "epoch" else f"{v:.6g}") for k, v in r.items()})
    write_text(path, buf.getvalue())


def plot(path: Path, rows: list[dict[str, float]], title: str = "") -> None:
    """One small panel per column, against the epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in rows[0] if k != "epoch"]
    cols = 4
    nrows = -(-len(keys) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 2.5 * nrows), squeeze=False)
    epochs = [r["epoch"] for r in rows]
    for ax, k in zip(axes.flat, keys):
        ax.plot(epochs, [r[k] for r in rows], marker=".", linewidth=1.5, markersize=4)
        ax.set_title(k, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    finally:
        plt.close(fig)  # also when the write fails: a long run must not gather open figures
