"""Issue 12 (e): gelanc against ultralytics on the same data, epochs, batch and image size.

gelanc trains each model given (default gelan-t and yolov9-t) with `gelanc train`, each
recipe given (default the default recipe, and the reference's SGD one); ultralytics
trains its yolov9t (no PGI: gelan-t's equal) from scratch with its defaults. Both on
this machine, one after the other, so seconds compare. The table printed — mAP50 and
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
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

ULTRALYTICS = """
import sys
from ultralytics import YOLO
data, epochs, batch, imgsz, workers, out, model = sys.argv[1:8]
YOLO(model).train(data=data, epochs=int(epochs), batch=int(batch), imgsz=int(imgsz), workers=int(workers),
                  device="cpu", project=out, name="run", exist_ok=True, pretrained=False, plots=False, amp=False,
                  seed=0, verbose=False)
"""


def gelanc_run(spec: Path, data: Path, out: Path, a, hyp: Path | None) -> list[dict]:
    argv = [sys.executable, "-m", "gelanc", "train", str(spec), "--data", str(data), "--epochs", str(a.epochs),
            "--batch", str(a.batch), "--imgsz", str(a.imgsz), "--device", "cpu", "--out", str(out), "-q",
            "--no-plots", "--patience", str(10 * a.epochs), "--json"]
    if a.workers is not None:
        argv += ["--workers", str(a.workers)]
    if hyp is not None:
        argv += ["--hyp", str(hyp)]
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    with (out / "results.csv").open() as f:
        return [{"epoch": int(r["epoch"]), "map50": float(r["metrics/mAP50"]), "map": float(r["metrics/mAP50-95"]),
                 "seconds": float(r["time_s"])} for r in csv.DictReader(f)]


def ultralytics_run(python: str, data: Path, out: Path, a) -> list[dict]:
    workers = a.workers if a.workers is not None else 2
    subprocess.run([python, "-c", ULTRALYTICS, str(data), str(a.epochs), str(a.batch), str(a.imgsz), str(workers),
                    str(out), a.ultralytics_model], check=True, stdout=subprocess.DEVNULL)
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
    ap.add_argument("--models", nargs="+", default=["gelan-t", "yolov9-t"])
    ap.add_argument("--recipes", nargs="+", default=["default", "reference"],
                    help="gelanc's recipes: default (its defaults), reference (optimizer: SGD), or hyp files")
    ap.add_argument("--ultralytics-python", help="the python of an environment with ultralytics (none: skip it)")
    ap.add_argument("--ultralytics-model", default="yolov9t.yaml")
    ap.add_argument("--out", default="runs/vs_ultralytics")
    ap.add_argument("--every", type=int, default=5, help="table rows every N epochs")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.data:
        data = Path(a.data).resolve()
    else:
        from gelanc.data.synth import write

        folder = out / f"synth{'-hard' if a.hard else ''}-{a.images}-{a.val}-{a.imgsz}"
        data = folder / "data.yaml" if (folder / "data.yaml").is_file() else write(
            folder, a.images, a.val, a.imgsz, seed=0, hard=a.hard)
        data = data.resolve()
    runs: dict[str, list[dict]] = {}
    for recipe in a.recipes:
        hyp = None
        if recipe == "reference":
            hyp = Path(tempfile.mkdtemp()) / "reference.yaml"
            hyp.write_text("optimizer: SGD\n")
        elif recipe != "default":
            hyp = Path(recipe)
        for model in a.models:
            name = f"gelanc {model}" + ("" if recipe == "default" else f" ({Path(recipe).stem})")
            print(f"training {name}…", file=sys.stderr, flush=True)
            runs[name] = gelanc_run(ROOT / "specs" / f"{model}.gel", data, out / name.replace(" ", "_"), a, hyp)
    if a.ultralytics_python:
        name = f"ultralytics {Path(a.ultralytics_model).stem}"
        print(f"training {name}…", file=sys.stderr, flush=True)
        runs[name] = ultralytics_run(a.ultralytics_python, data, (out / "ultralytics").resolve(), a)
    (out / "runs.json").write_text(json.dumps(runs, indent=1))
    print(f"{data} — {a.epochs} epochs, batch {a.batch}, {a.imgsz} px, CPU\n")
    print(table(runs, a.every))


if __name__ == "__main__":
    main()
