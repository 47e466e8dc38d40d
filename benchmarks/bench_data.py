"""What the training benchmarks share: their data (the user's, or a synthetic set drawn
once) and gelanc runs that a later try reads back or continues."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path


def benchmark_data(data: str | None, out: Path, images: int, val: int, imgsz: int, hard: bool) -> Path:
    """``data`` resolved, or the synthetic set (``hard``: the harder one) of that many
    images drawn into ``out`` with seed 0 — once: a later run of the benchmark reuses it."""
    if data:
        return Path(data).resolve()
    from gelanc.data.synth import write

    folder = out / f"synth{'-hard' if hard else ''}-{images}-{val}-{imgsz}"
    if (folder / "data.yaml").is_file():
        return (folder / "data.yaml").resolve()
    return write(folder, images, val, imgsz, seed=0, hard=hard).resolve()


def gelanc_rows(out: Path) -> list[dict]:
    """Per-epoch best-known figures of a gelanc run from its results.csv."""
    with (out / "results.csv").open() as f:
        return [{"epoch": int(r["epoch"]), "map50": float(r["metrics/mAP50"]), "map": float(r["metrics/mAP50-95"]),
                 "seconds": float(r["time_s"])} for r in csv.DictReader(f)]


def finished(rows_of, out: Path, epochs: int) -> list[dict] | None:
    """A run a benchmark finished before in this folder (rerunning one costs up to half an hour)."""
    try:
        rows = rows_of(out)
    except (OSError, KeyError, ValueError):
        return None
    return rows if len(rows) == epochs else None


def gelanc_train(argv: list[str], out: Path, epochs: int) -> list[dict]:
    """`gelanc train ARGV --out OUT` for ``epochs`` epochs: read back if a run in ``out``
    finished before, continued from its last.pt if one was interrupted, else trained."""
    if (rows := finished(gelanc_rows, out, epochs)) is not None:
        return rows
    cmd = [sys.executable, "-m", "gelanc", "train"]
    if (out / "last.pt").is_file():
        cmd += ["--resume", str(out / "last.pt"), "--epochs", str(epochs), "-q", "--json"]
    else:
        if out.exists():
            shutil.rmtree(out)  # a try that stopped before its first checkpoint
        cmd += [*argv, "--epochs", str(epochs), "--out", str(out), "-q", "--json"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return gelanc_rows(out)
