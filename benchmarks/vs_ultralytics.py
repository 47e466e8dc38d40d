"""Issue 12 (e): gelanc against ultralytics on the same data, epochs, batch and image size.

gelanc trains each model given (default gelan-t and yolov9-t) with `gelanc train`, each
recipe given (default the default recipe, and the reference's, `--hyp scratch-high`); ultralytics
trains its yolov9t (no PGI: gelan-t's equal) from scratch with its defaults. Both on
this machine, one after the other, so seconds compare. A run finished before in the same
--out is read back, not trained again. The table printed — mAP50 and
mAP50-95 per epoch and the mean seconds an epoch — is what docs/benchmarks.md records.

ultralytics is not one of gelanc's dependencies: install it for the benchmark only,
into its own environment that sees this one's torch, and name its python:

    python3 -m venv --system-site-packages /tmp/ul && /tmp/ul/bin/pip install ultralytics
    python3 benchmarks/vs_ultralytics.py [DATA.yaml | --hard] --ultralytics-python /tmp/ul/bin/python

Without DATA.yaml it draws the built-in synthetic set (`--hard`: the harder one, with
clutter, occlusion, small objects and noise) of --images/--val images.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

from bench_data import benchmark_data

ROOT = Path(__file__).resolve().parent.parent

ULTRALYTICS = """
import sys
from ultralytics import YOLO
data, epochs, batch, imgsz, workers, out, model = sys.argv[1:8]
YOLO(model).train(data=data, epochs=int(epochs), batch=int(batch), imgsz=int(imgsz), workers=int(workers),
                  device="cpu", project=out, name="run", exist_ok=True, pretrained=False, plots=False, amp=False,
                  seed=0, verbose=False)
"""


def finished(rows_of, out: Path, epochs: int) -> list[dict] | None:
    """A run this benchmark finished before, in this --out (rerunning one costs half an hour)."""
    try:
        rows = rows_of(out)
    except (OSError, KeyError, ValueError):
        return None
    return rows if len(rows) == epochs else None


def gelanc_rows(out: Path) -> list[dict]:
    with (out / "results.csv").open() as f:
        return [{"epoch": int(r["epoch"]), "map50": float(r["metrics/mAP50"]), "map": float(r["metrics/mAP50-95"]),
                 "seconds": float(r["time_s"])} for r in csv.DictReader(f)]


def gelanc_run(spec: Path, data: Path, out: Path, a, hyp: str | None) -> list[dict]:
    if (rows := finished(gelanc_rows, out, a.epochs)) is not None:
        return rows
    argv = [sys.executable, "-m", "gelanc", "train", str(spec), "--data", str(data), "--epochs", str(a.epochs),
            "--batch", str(a.batch), "--imgsz", str(a.imgsz), "--device", "cpu", "--out", str(out), "-q",
            "--no-plots", "--patience", str(10 * a.epochs), "--json"]
    if a.workers is not None:
        argv += ["--workers", str(a.workers)]
    if hyp is not None:
        argv += ["--hyp", hyp]
    if out.exists():
        shutil.rmtree(out)  # an unfinished run of an earlier try
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return gelanc_rows(out)


def ultralytics_run(python: str, data: Path, out: Path, a) -> list[dict]:
    if (rows := finished(ultralytics_rows, out, a.epochs)) is not None:
        return rows
    workers = a.workers if a.workers is not None else 2
    subprocess.run([python, "-c", ULTRALYTICS, str(data), str(a.epochs), str(a.batch), str(a.imgsz), str(workers),
                    str(out), a.ultralytics_model], check=True, stdout=subprocess.DEVNULL)
    return ultralytics_rows(out)


def ultralytics_rows(out: Path) -> list[dict]:
    rows, before = [], 0.0
    with (out / "run" / "results.csv").open() as f:
        for r in csv.DictReader(f):
            r = {k.strip(): v for k, v in r.items()}
            total = float(r["time"])  # ultralytics writes the run's time so far
            rows.append({"epoch": int(float(r["epoch"])), "map50": float(r["metrics/mAP50(B)"]),
                         "map": float(r["metrics/mAP50-95(B)"]), "seconds": total - before})
            before = total
    return rows


def table(runs: dict[str, list[dict]], every: int) -> str:
    names = list(runs)
    head = "| epoch | " + " | ".join(f"{n} mAP50 / mAP50-95" for n in names) + " |"
    lines = [head, "|---|" + "---|" * len(names)]
    epochs = max(len(r) for r in runs.values())
    for e in range(1, epochs + 1):
        if e % every and e != epochs:
            continue
        cells = []
        for n in names:
            row = next((r for r in runs[n] if r["epoch"] == e), None)
            cells.append(f"{row['map50']:.3f} / {row['map']:.3f}" if row else "–")
        lines.append(f"| {e} | " + " | ".join(cells) + " |")
    lines.append("| best mAP50-95 | " + " | ".join(f"{max(r['map'] for r in runs[n]):.3f}" for n in names) + " |")
    lines.append("| s / epoch | " + " | ".join(
        f"{sum(r['seconds'] for r in runs[n]) / len(runs[n]):.1f}" for n in names) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="?", help="a data.yaml (default: draw the synthetic set)")
    ap.add_argument("--hard", action="store_true", help="without DATA: the harder synthetic set")
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--val", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--workers", type=int, help="data workers of both (default: each tool's own)")
    ap.add_argument("--models", nargs="+", default=["gelan-t", "yolov9-t"],
                    help="zoo names or .gel files (benchmarks/gelan-t-detect.gel: gelan-t with ultralytics' head)")
    ap.add_argument("--recipes", nargs="+", default=["default", "reference"],
                    help="gelanc's recipes: default (its defaults), reference (--hyp scratch-high), or hyp files")
    ap.add_argument("--ultralytics-python", help="the python of an environment with ultralytics (none: skip it)")
    ap.add_argument("--ultralytics-model", default="yolov9t.yaml")
    ap.add_argument("--out", default="runs/vs_ultralytics")
    ap.add_argument("--every", type=int, default=5, help="table rows every N epochs")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    data = benchmark_data(a.data, out, a.images, a.val, a.imgsz, a.hard)
    runs: dict[str, list[dict]] = {}
    for recipe in a.recipes:
        hyp = None
        if recipe == "reference":
            hyp = "scratch-high"  # the reference's recipe, built in
        elif recipe != "default":
            hyp = str(Path(recipe).resolve())
        for model in a.models:
            spec = Path(model) if model.endswith(".gel") else ROOT / "specs" / f"{model}.gel"
            model = spec.stem
            name = f"gelanc {model}" + ("" if recipe == "default" else f" ({Path(recipe).stem})")
            print(f"training {name}…", file=sys.stderr, flush=True)
            runs[name] = gelanc_run(spec, data, out / name.replace(" ", "_"), a, hyp)
            (out / "runs.json").write_text(json.dumps(runs, indent=1))  # what is done so far
    if a.ultralytics_python:
        name = f"ultralytics {Path(a.ultralytics_model).stem}"
        print(f"training {name}…", file=sys.stderr, flush=True)
        runs[name] = ultralytics_run(a.ultralytics_python, data, (out / "ultralytics").resolve(), a)
    (out / "runs.json").write_text(json.dumps(runs, indent=1))
    print(f"{data} — {a.epochs} epochs, batch {a.batch}, {a.imgsz} px, CPU\n")
    print(table(runs, a.every))


if __name__ == "__main__":
    main()
