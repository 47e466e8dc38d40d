"""Speed of the torch-free pipeline (issue: `gelanc check` / `gelanc stats`).

Measures, each in a fresh interpreter:
  * import: `import gelanc.stats` (everything stats needs);
  * zoo: parse, lower, validate, infer shapes and count, train and deploy graphs,
    for all ten zoo specs in one process (the first parse builds lark's tables,
    or loads them from lark's cache);
  * cli: `gelanc --help` and `gelanc check specs/gelan-c.gel` wall time.
Run: python benchmarks/core_speed.py  (prints a Markdown table)
"""

import statistics
import subprocess
import sys
import time

ZOO = """
import time
t0 = time.perf_counter()
from gelanc.dsl.loader import builtin_specs
from gelanc.stats import compile_file, model_stats
t1 = time.perf_counter()
specs = [p for p in builtin_specs() if p.stem.split('-')[0] in ('gelan', 'yolov9') and p.stem.count('-') == 1]
assert len(specs) == 10, specs
for p in specs:
    for g in compile_file(p):
        model_stats(g)
t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
"""


def run(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t


def main(repeat: int = 5) -> None:
    imports, zoo = [], []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", ZOO], check=True, capture_output=True, text=True).stdout
        a, b = map(float, out.split())
        imports.append(a)
        zoo.append(b)
    help_ = [run([sys.executable, "-m", "gelanc", "--help"]) for _ in range(repeat)]
    check = [run([sys.executable, "-m", "gelanc", "check", "specs/gelan-c.gel"]) for _ in range(repeat)]
    med = statistics.median
    print(f"| measure | median of {repeat} (s) |")
    print("|---|---|")
    print(f"| import gelanc.stats | {med(imports):.3f} |")
    print(f"| all ten zoo specs: parse → lower → validate → shapes → counts (train + deploy) | {med(zoo):.3f} |")
    print(f"| `gelanc --help` (process wall time) | {med(help_):.3f} |")
    print(f"| `gelanc check specs/gelan-c.gel` (process wall time) | {med(check):.3f} |")


if __name__ == "__main__":
    main()
