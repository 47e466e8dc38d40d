"""Would the tests notice? A hand list of bugs injected into the compiler core, one at a time.

Each mutation below is a small, plausible mistake in `gelanc/ops/`, `gelanc/passes/` or
`gelanc/ir/` — a dropped check, an off-by-one, a term forgotten in a count. For each,
the tree is copied to a temporary folder, the one line changed there (never in this
checkout), and the core's tests run against the copy; the mutation is *killed* when a
test fails. The kill rate is what docs/benchmarks.md records.

    python3 tools/mutations.py [--only SUBSTRING] [-v]

A mutation that survives is either a missing test or an equivalent mutant (a change
no valid input can tell apart); the ones known to be equivalent say so, and why.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ["tests/test_passes.py", "tests/test_counts.py", "tests/test_registry.py", "tests/test_diagnostics.py",
         "tests/test_spec_limits.py", "tests/test_torch_fx.py", "tests/test_ops.py"]


@dataclass(frozen=True)
class Mutation:
    file: str
    old: str
    new: str
    what: str
    equivalent: str = ""  # why no valid input can tell it apart, if it cannot


MUTATIONS = [
    Mutation("gelanc/ops/registry.py", "out = (-(-span // s) if ceil else span // s) + 1", "out = span // s + 1",
             "pooling ignores ceil_mode"),
    Mutation("gelanc/ops/registry.py", "span = size + 2 * p - d * (k - 1) - 1", "span = size + 2 * p - (k - 1) - 1",
             "windows ignore dilation"),
    Mutation("gelanc/ops/registry.py", "if out <= 0:", "if out < 0:", "a window larger than the map gives size 0"),
    Mutation("gelanc/ops/conv.py", "+ (a.c2 if a.bias else 0)", "", "conv parameters forget the bias"),
    Mutation("gelanc/ops/conv.py", "macs=lambda a, i, o: numel(o[0]) * (i[0][0] // a.groups) * a.k * a.k",
             "macs=lambda a, i, o: numel(o[0]) * i[0][0] * a.k * a.k", "conv MACs ignore groups"),
    Mutation("gelanc/ops/conv.py", "    if c1 % a.groups:\n", "    if False:\n",
             "groups that do not divide the input channels are accepted"),
    Mutation("gelanc/ops/conv.py", "macs=lambda a, i, o: 4 * numel(i[0])", "macs=lambda a, i, o: 2 * numel(i[0])",
             "BatchNorm MACs not doubled for the affine part"),
    Mutation("gelanc/ops/tensor.py", "        if s[0] != ref[0]:\n", "        if False:\n",
             "add accepts different channel counts"),
    Mutation("gelanc/ops/tensor.py", "return [(sum(s[0] for s in ins), *ins[0][1:])]", "return [ins[0]]",
             "concat keeps the first input's channels"),
    Mutation("gelanc/ops/tensor.py", "    if c and c % a.n:\n", "    if False:\n",
             "chunk into unequal parts accepted"),
    Mutation("gelanc/ops/tensor.py", "    if c and sum(a.sizes) != c:\n", "    if False:\n",
             "split sizes need not add up"),
    Mutation("gelanc/ops/resample.py", "*(None if d is None else d * a.scale for d in i[0][1:])",
             "*(None if d is None else d * 2 for d in i[0][1:])", "upsample ignores its scale"),
    Mutation("gelanc/ops/resample.py", "macs=lambda a, i, o: numel(o[0])", "macs=lambda a, i, o: numel(i[0])",
             "upsample counted on its input"),
    Mutation("gelanc/ops/resample.py", "    if 2 * a.padding > a.k:\n", "    if False:\n",
             "pool padding over half the window accepted"),
    Mutation("gelanc/ops/detect.py", "return [(4 + a.nc, sum(s[1] * s[2] for s in ins))]",
             "return [(4 + a.nc, ins[0][1] * ins[0][2])]", "detect counts the first level's anchors only"),
    Mutation("gelanc/ops/detect.py", "modules[box].bias.fill_(1.0)", "modules[box].bias.fill_(0.0)",
             "box logits' bias prior lost"),
    Mutation("gelanc/ir/builtins.py", "return bounded(math.ceil(x / d) * d, span)", "return bounded(x, span)",
             "make_divisible does not round"),
    Mutation("gelanc/passes/validate.py", "if sorted(p for p, _ in _positions(g, n)) != list(range(len(ins))):",
             "if False:", "gaps in argument positions accepted"),
    Mutation("gelanc/passes/validate.py", "if not nx.is_directed_acyclic_graph(g):", "if False:",
             "cycles not looked for"),
    Mutation("gelanc/passes/validate.py", 'if src.get("branch") == "aux" and d.get("branch") == "main":',
             "if False:", "the main branch may read the aux branch"),
    Mutation("gelanc/passes/validate.py", "        if len(ins) < lo or (hi is not None and len(ins) > hi):",
             "        if len(ins) < lo:", "too many inputs accepted"),
    Mutation("gelanc/passes/shapes.py", "    if h % s or w % s:", "    if h % s:",
             "a width the stride does not divide accepted"),
    Mutation("gelanc/passes/deploy.py", 'out.remove_nodes_from([n for n, b in out.nodes(data="branch") if b == "aux"])',
             "pass", "deploy keeps the aux branch"),
    Mutation("gelanc/passes/deploy.py", 'if out.nodes[src.node]["op"] != "conv2d" or not _sole_reader(out, src, n):',
             'if out.nodes[src.node]["op"] != "conv2d":', "BatchNorm folded into a conv that others read too"),
    Mutation("gelanc/passes/deploy.py", "ka.padding == ka.dilation * (ka.k // 2)", "True",
             "parallel convs merged without checking that the 1×1 is the centre tap",
             equivalent="a conv whose padding does not centre it gives a map of another size than the 1×1's, "
                        "so the add of the two fails the shape check first"),
    Mutation("gelanc/passes/deploy.py", "and ka.c2 == kb.c2)", ")",
             "parallel convs of different widths merged",
             equivalent="the add of the two already requires equal channels"),
    Mutation("gelanc/passes/cost.py", "        total += c\n", "", "the total counts nothing"),
    # the ops of issue 14's first step
    Mutation("gelanc/ops/tensor.py", "        elif dx == dy or dy == 1:", "        elif True:",
             "mul accepts sizes that do not broadcast (issue 14)"),
    Mutation("gelanc/ops/resample.py", "return int(((h / size) * (w / size) + 1) * outputs)",
             "return int((h / size) * (w / size) * outputs)", "adaptive pooling's divisions not counted (issue 14)"),
    Mutation("gelanc/passes/shapes.py", "    if any(REGISTRY[op].fixed_size for _, op in g.nodes(data=\"op\")):",
             "    if False:", "maps pooled to a fixed size counted in the largest stride (issue 14)"),
    Mutation("gelanc/passes/deploy.py", "_fold_bn(_drop_train_only(_strip_aux(g.copy())))",
             "_fold_bn(_strip_aux(g.copy()))", "deploy keeps dropout (issue 14)"),
    Mutation("gelanc/ops/activation.py", "(xs[0], a.slope))", "(xs[0],))", "leaky_relu ignores its slope (issue 14)"),
    Mutation("gelanc/ops/dense.py", "i[0][0] * a.c2 + (a.c2 if a.bias else 0)", "i[0][0] * a.c2",
             "linear's bias not counted (issue 14)"),
    Mutation("gelanc/ops/resample.py", '_UPSAMPLE_OPS = {"nearest": 1, "bilinear": 11}',
             '_UPSAMPLE_OPS = {"nearest": 1, "bilinear": 1}', "bilinear upsampling counted as nearest (issue 14)"),
    Mutation("gelanc/ops/conv.py", "(d - 1) * a.s - 2 * a.p + a.k", "(d - 1) * a.s + a.k",
             "a transposed convolution's padding ignored in its shape (issue 14)"),
    Mutation("gelanc/ops/norm.py", "    if ins[0][0] % a.groups:", "    if False:",
             "groupnorm's groups need not divide the channels (issue 14)"),
]


def copy_tree(dst: Path) -> None:
    """The files git knows (and the untracked ones it does not ignore), as they are now."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.splitlines()
    for f in files:
        src = ROOT / f
        if src.is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / f)


def run_tests(tree: Path, verbose: bool, tests: list[str]) -> bool:
    """Whether the core's tests pass in ``tree`` (stopping at the first failure)."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    r = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "no:warnings",
                        *tests], cwd=tree, env=env, capture_output=True, text=True)
    if verbose:
        print(r.stdout[-2000:])
    return r.returncode == 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="the mutations whose file or description contains this")
    ap.add_argument("--tests", nargs="+", default=TESTS, help="the test files to run (default: the core's)")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args()
    chosen = [m for m in MUTATIONS if not a.only or a.only in m.file or a.only in m.what]
    killed, survived, equivalent = [], [], []
    with tempfile.TemporaryDirectory(prefix="gelanc-mutants-") as tmp:
        tree = Path(tmp)
        copy_tree(tree)
        for m in chosen:
            path = tree / m.file
            before = path.read_text()
            if before.count(m.old) != 1:
                sys.exit(f"{m.file}: the text to mutate is not there exactly once: {m.old!r}")
            path.write_text(before.replace(m.old, m.new))
            t = time.perf_counter()
            try:
                passed = run_tests(tree, a.verbose, a.tests)
            finally:
                path.write_text(before)
            verdict = "survived" if passed else "killed"
            (equivalent if passed and m.equivalent else survived if passed else killed).append(m)
            print(f"{verdict:8}  {time.perf_counter() - t:5.1f} s  {m.file}: {m.what}", flush=True)
    real = len(chosen) - len(equivalent)
    print(f"\nkilled {len(killed)} of {real} mutations ({100 * len(killed) / max(real, 1):.0f} %); "
          f"{len(equivalent)} equivalent mutants left out of the rate")
    for m in equivalent:
        print(f"  equivalent: {m.file}: {m.what} — {m.equivalent}")
    for m in survived:
        print(f"  SURVIVED: {m.file}: {m.what}")
    sys.exit(1 if survived else 0)


if __name__ == "__main__":
    main()
