"""Issue 13 (d): compiling a model with gelanc against building it with the reference.

Takes a checkout of the reference implementation (WongKinYiu/yolov9; not part of
gelanc, not committed) and times, in fresh processes taking turns so that the
machine's drift touches all alike:

- reference  ``models.yolo.Model(cfg)``: the reference's build of its YAML — modules with
             PyTorch's initialisation, a forward pass for the strides, its weight and
             bias initialisation, and the summary with thop's count of GFLOPs;
- check      gelanc's compile of the same model to what a user asks the reference's
             build for: the spec parsed, lowered, validated, its shapes inferred and
             its parameters and FLOPs counted for the train and the deploy graph at
             640 (``gelanc stats``; torch-free);
- module     ``gelanc.compile(spec)``: the same spec to a ``torch.fx.GraphModule`` with
             weights initialised as the reference's are (the 69.5M random numbers of
             yolov9-e included).

Each process imports torch and the tool's modules before its clock starts: the figures
are of compiling, not of importing. The reference needs its own requirements (pandas,
seaborn, setuptools' pkg_resources, thop): name a python that has them with --python.

    python3 benchmarks/vs_reference_compile.py /path/to/yolov9 [--python PY] [--model yolov9-e]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

REFERENCE = """
import sys, time
sys.path.insert(0, sys.argv[1])
import torch
from models.yolo import Model
t = time.perf_counter()
Model(sys.argv[2])
print("SECONDS", time.perf_counter() - t)
"""

CHECK = """
import sys, time
from gelanc import pipeline
from gelanc.stats import model_stats
t = time.perf_counter()
model_stats(pipeline.graph(pipeline.program(sys.argv[1])))
print("SECONDS", time.perf_counter() - t)
"""

MODULE = """
import sys, time
import torch
import gelanc
import gelanc.backend.fx
t = time.perf_counter()
gelanc.compile(sys.argv[1])
print("SECONDS", time.perf_counter() - t)
"""


def seconds(python: str, code: str, *args: str, cwd: Path | None = None) -> float:
    out = subprocess.run([python, "-c", code, *args], check=True, capture_output=True, text=True, cwd=cwd).stdout
    lines = [line for line in out.splitlines() if line.startswith("SECONDS ")]
    return float(lines[-1].split()[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reference", type=Path, help="a checkout of WongKinYiu/yolov9")
    ap.add_argument("--python", default=sys.executable, help="a python with the reference's requirements")
    ap.add_argument("--model", default="yolov9-e", help="a model both have (models/detect/NAME.yaml, specs/NAME.gel)")
    ap.add_argument("--repeat", type=int, default=7)
    a = ap.parse_args()
    cfg = (a.reference / "models" / "detect" / f"{a.model}.yaml").resolve()
    spec = ROOT / "specs" / f"{a.model}.gel"
    for path in (cfg, spec):
        if not path.is_file():
            sys.exit(f"no such file: {path}")
    times: dict[str, list[float]] = {"reference": [], "check": [], "module": []}
    for i in range(a.repeat):
        times["reference"].append(seconds(a.python, REFERENCE, str(a.reference.resolve()), str(cfg),
                                          cwd=a.reference))
        times["check"].append(seconds(sys.executable, CHECK, str(spec)))
        times["module"].append(seconds(sys.executable, MODULE, str(spec)))
        print(f"round {i + 1}/{a.repeat}: " + ", ".join(f"{k} {v[-1]:.3f} s" for k, v in times.items()),
              file=sys.stderr)
    ref = statistics.median(times["reference"])
    rows = [(f"reference: `Model('models/detect/{a.model}.yaml')`", "reference"),
            (f"gelanc: `{a.model}.gel` → checked IR, shapes, counts (train and deploy, 640)", "check"),
            (f"gelanc: `gelanc.compile('{a.model}.gel')` → initialised GraphModule", "module")]
    print(f"| {a.model} | best of {a.repeat} (s) | median (s) | median ÷ the reference's |")
    print("|---|---|---|---|")
    for label, key in rows:
        med = statistics.median(times[key])
        print(f"| {label} | {min(times[key]):.3f} | {med:.3f} | {med / ref:.2f}× |")


if __name__ == "__main__":
    main()
