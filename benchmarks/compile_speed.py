"""`gelanc.compile` of yolov9-e: text → GraphModule with initialised weights.

Each run is a fresh process that imports torch and gelanc's modules first (not timed), then
times `gelanc.compile("specs/yolov9-e.gel")`: parse, lower, validate, build the fx
graph and its 69.5M initialised parameters, generate the forward's code.
Run: python benchmarks/compile_speed.py
"""

import statistics
import subprocess
import sys

RUN = """
import time
import torch
import gelanc
import gelanc.backend.fx  # imported up front: the timing is of compiling, not of importing
from gelanc.dsl.loader import library_root
spec = library_root() / "specs" / "yolov9-e.gel"
t = time.perf_counter()
m = gelanc.compile(spec)
total = time.perf_counter() - t
t = time.perf_counter()
x = torch.empty(69_529_664).uniform_(-1, 1)
rng = time.perf_counter() - t
print(total, rng)
"""


def main(repeat: int = 7) -> None:
    runs = [tuple(map(float, subprocess.run([sys.executable, "-c", RUN], check=True, capture_output=True,
                                            text=True).stdout.split())) for _ in range(repeat)]
    total, rng = zip(*runs)
    print(f"| measure | best of {repeat} (s) | median (s) |")
    print("|---|---|---|")
    print(f"| `gelanc.compile('specs/yolov9-e.gel')` | {min(total):.3f} | {statistics.median(total):.3f} |")
    print(f"| of which unavoidable: drawing 69.5M uniform random numbers | {min(rng):.3f} | "
          f"{statistics.median(rng):.3f} |")


if __name__ == "__main__":
    main()
