"""The data a training benchmark runs on: the user's data.yaml, or a synthetic set drawn once."""

from __future__ import annotations

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
