"""Speed of the torch-free pipeline (issue: `gelanc check` / `gelanc stats`).

Measures, each in a fresh interpreter:
  * import: `import gelanc.stats` (everything stats needs);
  * zoo: parse, lower, validate, infer shapes and count, train and deploy graphs,
    for all ten zoo specs in one process (the first parse builds lark's tables,
    or loads them from lark's cache);
  * cli: `gelanc --help` and `gelanc check specs/gelan-c.gel` wall time.
Run: python benchmarks/core_speed.py  (prints a Markdown table)

A shared 2-core machine's speed varies from minute to minute (CPU time moves with
wall time, so it is the host, not waiting); the table gives the best and the median
of several fresh processes. The best is the code's cost, the median what a user sees.
"""

import statistics
import subprocess
import sys
import time

ZOO = """
import time
t0 = time.perf_counter()
from gelanc.dsl.loader import builtin_specs
from gelanc.pipeline import compile_file
from gelanc.stats import model_stats
t1 = time.perf_counter()
from gelanc.dsl.loader import load
from gelanc.ir.lower import lower
from gelanc.passes.cost import count
from gelanc.passes.shapes import infer
from gelanc.passes.validate import validate
specs = [p for p in builtin_specs() if p.stem.split('-')[0] in ('gelan', 'yolov9') and p.stem.count('-') == 1]
assert len(specs) == 10, specs
t1 = time.perf_counter()
for p in specs:  # the issue's pipeline: parse, lower, validate, infer shapes, count
    g = lower(load(p))
    validate(g)
    count(g, infer(g, (640, 640)))
t2 = time.perf_counter()
for p in specs:  # everything `gelanc stats` does, deploy graphs included (files already parsed)
    for g in compile_file(p):
        model_stats(g)
t3 = time.perf_counter()
print(t1 - t0, t2 - t1, t3 - t2)
"""


def run(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t


def main(repeat: int = 7) -> None:
    imports, zoo, stats = [], [], []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", ZOO], check=True, capture_output=True, text=True).stdout
        a, b, c = map(float, out.split())
        imports.append(a)
        zoo.append(b)
        stats.append(c)
    help_ = [run([sys.executable, "-m", "gelanc", "--help"]) for _ in range(repeat)]
    check = [run([sys.executable, "-m", "gelanc", "check", "specs/gelan-c.gel"]) for _ in range(repeat)]
    rows = [
        ("import gelanc (parser, IR, passes)", imports),
        ("all ten zoo specs: parse → lower → validate → infer shapes → count", zoo),
        ("the same ten, already parsed: train and deploy graphs as `gelanc stats` counts them", stats),
        ("`gelanc --help` (process wall time)", help_),
        ("`gelanc check specs/gelan-c.gel` (process wall time)", check),
    ]
    print(f"| measure | best of {repeat} (s) | median (s) |")
    print("|---|---|---|")
    for name, xs in rows:
        print(f"| {name} | {min(xs):.3f} | {statistics.median(xs):.3f} |")


if __name__ == "__main__":
    main()
