"""Issue 5 (a): gelan-t and yolov9-t trained on the synthetic set on this CPU, to mAP@0.5 ≥ 0.6.

Each model trains with `gelanc train` (the default recipe; --hyp passes another) at 320 px on
the built-in synthetic dataset (512 train / 64 val images), then `gelanc val` scores
its best.pt twice — the deploy graph (aux branch removed, BN and RepConvN folded) and
the train graph's main head — which must agree. The curves are copied to docs/img/.

Run: python benchmarks/train_synth.py [--epochs N] [--models gelan-t yolov9-t] [--out runs/bench]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def gelanc(*argv: str) -> dict:
    p = subprocess.run([sys.executable, "-m", "gelanc", *argv], stdout=subprocess.PIPE, text=True)
    if p.returncode:
        sys.exit(f"gelanc {' '.join(argv)} failed ({p.returncode})")
    return json.loads(p.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--models", nargs="+", default=["gelan-t", "yolov9-t"])
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--out", default="runs/bench")
    ap.add_argument("--hyp", help="a recipe or hyp file (default: gelanc's default recipe)")
    ap.add_argument("--no-docs", action="store_true", help="do not copy the curves into docs/img")
    a = ap.parse_args()
    rows = []
    for name in a.models:
        out = Path(a.out) / name
        t = time.perf_counter()
        s = gelanc("train", str(ROOT / "specs" / f"{name}.gel"), "--epochs", str(a.epochs), "--imgsz",
                   str(a.imgsz), "--batch", str(a.batch), "--device", "cpu", "--out", str(out), "--json",
                   *(["--hyp", a.hyp] if a.hyp else []))
        minutes = (time.perf_counter() - t) / 60
        deploy = gelanc("val", str(out / "best.pt"), "--device", "cpu", "--json")
        train = gelanc("val", str(out / "best.pt"), "--device", "cpu", "--graph", "train", "--json")
        rows.append((name, a.epochs, s["best_epoch"], minutes, deploy["map50"], deploy["map"], train["map50"],
                     train["map"]))
        if not a.no_docs:
            shutil.copy(out / "results.png", ROOT / "docs" / "img" / f"train-{name}.png")
    print("| model | epochs | best epoch | minutes | mAP50 (deploy) | mAP50-95 (deploy) "
          "| mAP50 (train, main head) | mAP50-95 (train, main head) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, epochs, best, minutes, d50, d, t50, t in rows:
        print(f"| {name} | {epochs} | {best} | {minutes:.1f} | {d50:.3f} | {d:.3f} | {t50:.3f} | {t:.3f} |")


if __name__ == "__main__":
    main()
