"""Issue 12 (b): PGI's auxiliary head assigned independently (the reference) or lead-guided.

yolov9-t (or --model) trains with `aux_assign: independent` and with `aux_assign: lead`,
the same seed, data, epochs and everything else, for each seed given; the table printed
— best mAP50 and mAP50-95 of each run, their means, and the seconds an epoch — is what
docs/benchmarks.md records.

    python3 benchmarks/aux_assign.py [DATA.yaml] [--epochs 20] [--seeds 0 1] [--hard]

A run finished before in the same --out is read back; an interrupted one continues.
Without DATA.yaml it draws the built-in synthetic set (`--hard`: the harder one).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from bench_data import benchmark_data, gelanc_train

ROOT = Path(__file__).resolve().parent.parent


def run(spec: Path, data: Path, out: Path, hyp: Path, seed: int, a) -> dict:
    rows = gelanc_train([str(spec), "--data", str(data), "--batch", str(a.batch), "--imgsz", str(a.imgsz),
                         "--device", a.device, "--seed", str(seed), "--hyp", str(hyp), "--no-plots",
                         "--patience", str(10 * a.epochs)], out, a.epochs)
    return {"map50": max(r["map50"] for r in rows), "map": max(r["map"] for r in rows),
            "seconds": sum(r["seconds"] for r in rows) / len(rows)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="?", help="a data.yaml (default: draw the synthetic set)")
    ap.add_argument("--hard", action="store_true")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--val", type=int, default=64)
    ap.add_argument("--imgsz", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--model", default="yolov9-t")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--recipe", action="append", default=[], metavar="KEY: VALUE",
                    help="a line for both runs' hyp file, e.g. 'optimizer: auto'")
    ap.add_argument("--out", default="runs/aux_assign")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    data = benchmark_data(a.data, out, a.images, a.val, a.imgsz, a.hard)
    results: dict[str, list[dict]] = {"independent": [], "lead": []}
    for seed in a.seeds:
        for mode in results:
            hyp = out / f"{mode}.yaml"
            hyp.write_text("".join(f"{line}\n" for line in [f"aux_assign: {mode}", *a.recipe]))
            print(f"seed {seed}: aux_assign {mode}…", file=sys.stderr, flush=True)
            r = run(ROOT / "specs" / f"{a.model}.gel", data, out / f"{mode}-seed{seed}", hyp, seed, a)
            results[mode].append(r)
    print(f"{a.model} on {data}, {a.epochs} epochs, {a.imgsz} px, batch {a.batch}, {a.device}, seeds {a.seeds}\n")
    print("| aux_assign | " + " | ".join(f"seed {s} mAP50 / mAP50-95" for s in a.seeds)
          + " | mean mAP50-95 | s / epoch |")
    print("|---|" + "---|" * (len(a.seeds) + 2))
    for mode, rs in results.items():
        cells = " | ".join(f"{r['map50']:.3f} / {r['map']:.3f}" for r in rs)
        print(f"| {mode} | {cells} | {statistics.mean(r['map'] for r in rs):.3f} | "
              f"{statistics.mean(r['seconds'] for r in rs):.1f} |")


if __name__ == "__main__":
    main()
