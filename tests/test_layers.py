"""gelanc's packages are layers: each imports only from the layers below it (issue 13).

Read from gelanc's own source — every import, at the top of a module or inside a
function, but not the type-only ones under ``if TYPE_CHECKING:`` — so that an upward
import (the data importing the trainer, say) fails here rather than in a review.
"""

import ast
from pathlib import Path

import gelanc

PACKAGE = Path(gelanc.__file__).parent

# lowest first; a module may import its own layer and those before it
LAYERS = [
    {"errors", "limits", "files", "yamlfile", "diagnostics", "interrupts", "terminal", "report", "atomic",
     "safeload"},
    {"dsl", "ops", "ir", "passes"},  # the torch-free compiler core
    {"pipeline", "stats"},
    {"backend"},  # torch
    {"data"},
    {"inference", "train"},
    {"interop", "tools"},
    {"cli", "__init__", "__main__"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}
# Reaching up on purpose, each inside a function, so that nothing torch is imported before it runs:
EXCEPTIONS = {
    ("ops", "backend"),  # an op's torch lowering builds the backend's leaf modules (Detect, resize_to)
    ("pipeline", "backend"),  # the pipeline's last step is the torch stage
}


def unit(path: Path) -> str:
    """The layer name of a module: its subpackage, or its own name at the top level."""
    rel = path.relative_to(PACKAGE).with_suffix("").parts
    return rel[0]


def _type_only(tree: ast.Module) -> set[int]:
    """Line numbers of imports under ``if TYPE_CHECKING:``."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            lines |= {n.lineno for b in node.body for n in ast.walk(b) if isinstance(n, (ast.Import, ast.ImportFrom))}
    return lines


def imported_units(source: str) -> list[tuple[int, str]]:
    """(line, layer name) of every gelanc import in ``source`` but the type-only ones."""
    tree = ast.parse(source)
    skip = _type_only(tree)
    found = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "gelanc":
            parts = node.module.split(".")
            names = [parts[1]] if len(parts) > 1 else [a.name for a in node.names]
            found += [(node.lineno, n) for n in names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name.split(".")[1]) for a in node.names
                      if a.name.startswith("gelanc.")]
    return found


def test_every_module_has_a_layer():
    units = {unit(p) for p in PACKAGE.rglob("*.py")}
    assert units - set(RANK) == set(), "add these to LAYERS"


def test_no_module_imports_a_layer_above_its_own():
    upward = []
    for p in sorted(PACKAGE.rglob("*.py")):
        src = unit(p)
        for line, dst in imported_units(p.read_text(encoding="utf-8")):
            if dst in RANK and RANK[dst] > RANK[src] and (src, dst) not in EXCEPTIONS:
                upward.append(f"{p.relative_to(PACKAGE)}:{line}: {src} imports {dst}")
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def test_the_scan_sees_each_kind_of_import_and_skips_type_only_ones():
    code = ("from gelanc.train.hyp import Hyp\nimport gelanc.backend.fx\nfrom gelanc import files\n"
            "def f():\n    from gelanc.tools import viz\n"
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from gelanc.cli import main\n")
    assert sorted(imported_units(code)) == [(1, "train"), (2, "backend"), (3, "files"), (5, "tools")]
