"""Issue 12 (e): gelanc against ultralytics on the same data, epochs, batch and image size.

gelanc trains each model given (default gelan-t and yolov9-t) with `gelanc train`, each
recipe given (default the default recipe, and the reference's, `--hyp scratch-high`); ultralytics
trains its yolov9t (no PGI: gelan-t's equal) from scratch with its defaults. Both on
this machine, one after the other, so seconds compare. A run finished before in the same
--out is read back, not trained again, and an interrupted gelanc run continues. The table
printed — mAP50 and mAP50-95 per epoch by each tool's own metric, the best mAP50-95 of
each by COCO's rules (ultralytics' best.pt validated again and its detections scored by
gelanc's pycocotools evaluator), and the mean seconds an epoch — is what
docs/benchmarks.md records.

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
from pathlib import Path

from bench_data import benchmark_data, finished, gelanc_train

ROOT = Path(__file__).resolve().parent.parent

ULTRALYTICS = """
import sys
from ultralytics import YOLO
data, epochs, batch, imgsz, workers, out, model, seed = sys.argv[1:9]
YOLO(model).train(data=data, epochs=int(epochs), batch=int(batch), imgsz=int(imgsz), workers=int(workers),
                  device="cpu", project=out, name="run", exist_ok=True, pretrained=False, plots=False, amp=False,
                  seed=int(seed), verbose=False)
"""

# its best weights on the val split again, keeping the detections (predictions.json) for gelanc's evaluator
ULTRALYTICS_VAL = """
import sys
from ultralytics import YOLO
weights, data, batch, imgsz, workers, out = sys.argv[1:7]
YOLO(weights).val(data=data, batch=int(batch), imgsz=int(imgsz), workers=int(workers), device="cpu", save_json=True,
                  plots=False, project=out, name="val", exist_ok=True, verbose=False)
"""


def gelanc_run(spec: Path, data: Path, out: Path, a, hyp: str | None) -> list[dict]:
    argv = [str(spec), "--data", str(data), "--batch", str(a.batch), "--imgsz", str(a.imgsz), "--device", "cpu",
            "--no-plots", "--patience", str(10 * a.epochs), "--seed", str(a.seed)]
    if a.workers is not None:
        argv += ["--workers", str(a.workers)]
    if hyp is not None:
        argv += ["--hyp", hyp]
    return gelanc_train(argv, out, a.epochs)


def ultralytics_run(python: str, data: Path, out: Path, a) -> list[dict]:
    workers = str(a.workers if a.workers is not None else 2)
    if (rows := finished(ultralytics_rows, out, a.epochs)) is None:
        subprocess.run([python, "-c", ULTRALYTICS, str(data), str(a.epochs), str(a.batch), str(a.imgsz), workers,
                        str(out), a.ultralytics_model, str(a.seed)], check=True, stdout=subprocess.DEVNULL)
        rows = ultralytics_rows(out)
    predictions = out / "val" / "predictions.json"
    if not predictions.is_file():
        subprocess.run([python, "-c", ULTRALYTICS_VAL, str(out / "run" / "weights" / "best.pt"), str(data),
                        str(a.batch), str(a.imgsz), workers, str(out)], check=True, stdout=subprocess.DEVNULL)
    rows[-1]["coco_best"] = coco_score(predictions, data)
    return rows


def coco_score(predictions: Path, data: Path) -> float:
    """mAP50-95 of ultralytics' detections (its predictions.json) on the val split by gelanc's
    evaluator — pycocotools, COCO's rules, as every gelanc figure. The tools' own metrics
    differ: ultralytics matches a detection to the object of highest IoU first and counts
    all 300 of an image; COCO matches in score order and counts an image's best 100."""
    import torch
    from torchvision.ops import box_convert

    from gelanc.data.config import load_data_config
    from gelanc.data.dataset import load_split, measure_image
    from gelanc.train.metrics import coco_map

    found, names = load_split(load_data_config(data), "val", data.parent)
    by_image: dict[object, list] = {}
    for p in json.loads(predictions.read_text()):
        x, y, w, h = p["bbox"]  # pixels of the original image, top-left corner
        by_image.setdefault(p["image_id"], []).append([x, y, x + w, y + h, p["score"], p["category_id"] - 1])
    detections, truths = [], []
    for image, labels in zip(found.images, found.labels):
        (w, h), _ = measure_image(image)
        xyxy = box_convert(labels[:, 1:5].double(), "cxcywh", "xyxy") * torch.tensor([w, h, w, h])
        truths.append(torch.cat([labels[:, :1].double(), xyxy], 1))
        key = int(image.stem) if image.stem.isnumeric() else image.stem  # ultralytics' image_id
        detections.append(torch.tensor(by_image.get(key, []), dtype=torch.float64).reshape(-1, 6))
    return coco_map(detections, truths, names)["map"]


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
    lines.append("| best mAP50-95, COCO's rules | " + " | ".join(
        f"{runs[n][-1].get('coco_best', max(r['map'] for r in runs[n])):.3f}" for n in names) + " |")
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
    ap.add_argument("--seed", type=int, default=0, help="both tools' seed (runs of a seed but 0 go to *-seedN)")
    ap.add_argument("--out", default="runs/vs_ultralytics")
    ap.add_argument("--every", type=int, default=5, help="table rows every N epochs")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    data = benchmark_data(a.data, out, a.images, a.val, a.imgsz, a.hard)
    tail = f"-seed{a.seed}" if a.seed else ""
    saved = out / f"runs{tail}.json"  # every run of this seed so far, this invocation's added to them
    runs: dict[str, list[dict]] = json.loads(saved.read_text()) if saved.is_file() else {}
    mine: list[str] = []
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
            runs[name] = gelanc_run(spec, data, out / (name.replace(" ", "_") + tail), a, hyp)
            mine.append(name)
            saved.write_text(json.dumps(runs, indent=1))  # what is done so far
    if a.ultralytics_python:
        name = f"ultralytics {Path(a.ultralytics_model).stem}"
        print(f"training {name}…", file=sys.stderr, flush=True)
        runs[name] = ultralytics_run(a.ultralytics_python, data, (out / f"ultralytics{tail}").resolve(), a)
        mine.append(name)
    saved.write_text(json.dumps(runs, indent=1))
    print(f"{data} — {a.epochs} epochs, batch {a.batch}, {a.imgsz} px, CPU\n")
    print(table({n: runs[n] for n in mine}, a.every))


if __name__ == "__main__":
    main()
