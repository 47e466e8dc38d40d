"""The op registry is the one place that knows an op by name (issue 13 b).

Every other module reads the registry's facts (``source``, ``head``, ``lower``,
``init``, ``has_weights``, ``multi_output``), so that a new op or block is one
declaration. These tests parse gelanc's own source and refuse a comparison with an
op's or a zoo block's name anywhere else."""

import ast
from pathlib import Path

import pytest

import gelanc
from gelanc.dsl.loader import library_root, load
from gelanc.ops import REGISTRY

PACKAGE = Path(gelanc.__file__).parent
# Where names are the point: the registry itself, and the deploy transforms' patterns (a
# BatchNorm after a conv, an add of two convs). The YAML importer keys its module table by
# the reference's names and reads each module's kind from it, as the rest reads the registry.
ALLOWED = {"ops", "passes/deploy.py"}


def _block_names() -> set[str]:
    """Every block the zoo's specs use (each spec's program holds the blocks it imports)."""
    return set().union(*(load(p).blocks for p in sorted((library_root() / "specs").glob("*.gel"))))


def _names_in(node: ast.AST) -> set[str]:
    """String constants of an expression, including those in a tuple, list or set of them."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return set().union(*(_names_in(e) for e in node.elts)) if node.elts else set()
    return set()


def name_tests(source: str, names: set[str]) -> list[tuple[int, str]]:
    """(line, name) of every comparison (==, !=, in, not in) of something with a literal
    in ``names``, and of every ``REGISTRY["name"]`` lookup."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            for side in (node.left, *node.comparators):
                found += [(node.lineno, n) for n in _names_in(side) & names]
        elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "REGISTRY":
            found += [(node.lineno, n) for n in _names_in(node.slice) & names]
    return found


def _allowed(path: Path) -> bool:
    rel = path.relative_to(PACKAGE).as_posix()
    return any(rel == a or rel.startswith(a + "/") for a in ALLOWED)


def test_no_module_outside_the_registry_tests_an_op_or_block_name():
    names = set(REGISTRY) | _block_names()
    offences = [f"{p.relative_to(PACKAGE)}:{line}: '{n}'"
                for p in sorted(PACKAGE.rglob("*.py")) if not _allowed(p)
                for line, n in name_tests(p.read_text(encoding="utf-8"), names)]
    assert not offences, "op or block names tested outside the registry:\n" + "\n".join(offences)


@pytest.mark.parametrize("code", [
    'if d["op"] == "input": pass',
    'x = op != "detect"',
    'y = g.nodes[n]["op"] in ("conv2d", "batchnorm")',
    'z = label == "CBLinear"',
    'w = REGISTRY["concat"].arity',
])
def test_the_name_check_finds_each_kind_of_test(code):
    """The grep above is not vacuous: each way of testing a name is caught."""
    assert name_tests(code, set(REGISTRY) | _block_names())


def test_the_flags_the_passes_read_mark_exactly_the_ops_they_stand_for():
    """shapes gives the image size to `source` ops, the backend forms PGI's dual output from
    `head` ops, initialise runs `init`: each flag on the one op it replaces a name test for."""
    assert [n for n, op in REGISTRY.items() if op.source] == ["input"]
    assert [n for n, op in REGISTRY.items() if op.head] == ["detect"]
    assert [n for n, op in REGISTRY.items() if op.init] == ["detect"]
