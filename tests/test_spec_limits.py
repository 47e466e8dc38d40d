"""Specs are hostile: their evaluation is bounded and their imports read only .gel files.

Each test builds the malicious spec in tmp_path and runs `gelanc check` in-process
(exit 2, one located error, no traceback), or calls the loader/lowerer directly.
The bounds are the ones in gelanc/limits.py; nothing here patches them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gelanc.cli import main
from gelanc.diagnostics import GelError, Span, render
from gelanc.dsl import parser
from gelanc.dsl.loader import load, load_embedded, load_text
from gelanc.ir.lower import lower
from gelanc.limits import (
    MAX_INT,
    MAX_LIST_DEPTH,
    MAX_LIST_LEN,
    MAX_PROGRAM_BYTES,
    MAX_SPEC_BYTES,
    MAX_SPEC_FILES,
)

ROOT = Path(__file__).resolve().parents[1]
SECRET = "SECRET-MARKER-7f3a9c"  # never to appear in anything gelanc prints
_LOC = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): error: (?P<msg>.*)$")


def check(path: Path, capsys, *extra: str) -> tuple[int, str]:
    """`gelanc check path`: its exit status and everything it printed."""
    capsys.readouterr()
    code = main(["check", str(path), *extra])
    out, err = capsys.readouterr()
    return code, out + err


def located_error(path: Path, capsys, *extra: str) -> tuple[re.Match, str]:
    """Check ``path``: exit 2 and one error, on the first line, located in a file; and all it printed."""
    code, printed = check(path, capsys, *extra)
    assert "Traceback" not in printed
    assert code == 2, printed
    errors = [line for line in printed.splitlines() if ": error: " in line or line.startswith("error: ")]
    assert len(errors) == 1, printed
    m = _LOC.match(printed.splitlines()[0])
    assert m, f"the error has no file:line:col: {printed.splitlines()[0]!r}"
    return m, printed


def same_file(shown: str, path: Path) -> bool:
    return Path(shown).resolve() == path.resolve()


def spec(tmp_path: Path, body: str, name: str = "s.gel") -> Path:
    path = tmp_path / name
    path.write_text(body, encoding="utf-8")
    return path


@pytest.fixture
def in_root(monkeypatch):
    monkeypatch.chdir(ROOT)


@pytest.fixture
def no_parsing(monkeypatch):
    """lark fails the test if it is asked to parse anything: a size check must come first."""
    def refuse():
        raise AssertionError("lark was asked to parse an oversized text")
    monkeypatch.setattr(parser, "_lark", refuse)


# ---- evaluation: steps, lists, numbers ---------------------------------------------------


def test_nested_loops_stop_at_the_step_limit(tmp_path, capsys):
    # 10⁸ loop turns on main; bounded, the run stops at the inner loop
    path = spec(tmp_path, """model m() {
    x = input(3)
    for i in range(10000) {
        for j in range(10000) {
        }
    }
    return x
}
""")
    m, printed = located_error(path, capsys)
    assert same_file(m["file"], path) and m["line"] == "4"
    assert "MAX_EVAL_STEPS" in m["msg"]


def test_list_doubling_stops_at_the_list_limit(tmp_path, capsys):
    # on main: a MemoryError after 27 s
    path = spec(tmp_path, """model m() {
    x = input(3)
    a[0] = [1]
    for i in range(1, 64) {
        a[i] = a[i - 1] + a[i - 1]
    }
    return x
}
""")
    m, printed = located_error(path, capsys)
    assert (m["line"], m["col"]) == ("5", "16")
    assert f"more than {MAX_LIST_LEN} elements" in m["msg"] and "MAX_LIST_LEN" in m["msg"]


def test_nested_list_doubling_counts_nested_elements(tmp_path, capsys):
    # each list has two elements, but flattening the last would make 2⁶³ tensors
    path = spec(tmp_path, """model m() {
    x = input(3)
    a[0] = [x]
    for i in range(1, 64) {
        a[i] = [a[i - 1], a[i - 1]]
    }
    return concat(a[63])
}
""")
    m, printed = located_error(path, capsys)
    assert (m["line"], m["col"]) == ("5", "16")
    assert "MAX_LIST_LEN" in m["msg"]


def test_an_indexed_name_holding_itself_is_refused(tmp_path, capsys):
    # returning it flattened it without end (RecursionError) on main
    path = spec(tmp_path, """model m() {
    s[0] = input(3)
    s[1] = s
    return s
}
""")
    m, printed = located_error(path, capsys)
    assert m["line"] == "4" and f"nested more than {MAX_LIST_DEPTH} deep" in m["msg"]


def test_one_list_shared_by_an_indexed_name_counts_every_time(tmp_path, capsys):
    # 5,000 references to one 5,000-element list: 25 million values once flattened
    path = spec(tmp_path, """model m() {
    x = input(3)
    r = range(5000)
    for i in range(5000) {
        k[i] = r
    }
    return x, k
}
""")
    m, printed = located_error(path, capsys)
    assert m["line"] == "7" and "MAX_LIST_LEN" in m["msg"]


def test_repeated_squaring_stops_at_max_int(tmp_path, capsys):
    # on main: integers of billions of digits
    path = spec(tmp_path, """model m() {
    x = input(3)
    a[0] = 3
    for i in range(1, 64) {
        a[i] = a[i - 1] * a[i - 1]
    }
    return x
}
""")
    m, printed = located_error(path, capsys)
    assert (m["line"], m["col"]) == ("5", "16")
    assert "MAX_INT" in m["msg"]


@pytest.mark.parametrize("expr", ["2 ** 60", "1e300", "-1e300", f"{MAX_INT} + 1", f"{MAX_INT} * 2.5"],
                         ids=["power", "float-literal", "negative-literal", "sum", "product"])
def test_numbers_past_max_int_are_refused(tmp_path, capsys, expr):
    path = spec(tmp_path, f"""model m() {{
    v = {expr}
    return input(3)
}}
""")
    m, printed = located_error(path, capsys)
    assert m["line"] == "2" and "MAX_INT" in m["msg"]


def test_an_op_with_too_many_outputs_is_refused_before_its_shapes(tmp_path, capsys):
    # chunk's shape rule makes a list of n shapes: 2⁴⁰ of them on main
    path = spec(tmp_path, f"""model m() {{
    x = input({2 ** 40})
    return chunk(x, {2 ** 40})
}}
""")
    m, printed = located_error(path, capsys)
    assert m["line"] == "3" and "MAX_LIST_LEN" in m["msg"]


def test_one_tensor_read_many_times_is_bounded(tmp_path, capsys):
    # 200,000 reads of one tensor: each is an input of an op, bounded in all by MAX_EDGES
    path = spec(tmp_path, f"""model m() {{
    x = input(3)
    xs = [x for i in range({MAX_LIST_LEN})]
    for i in range(20) {{
        c[i] = concat(xs)
    }}
    return concat([c[i] for i in range(20)])
}}
""")
    m, printed = located_error(path, capsys)
    assert m["line"] == "5" and "MAX_EDGES" in m["msg"]


def test_a_deeply_nested_default_is_an_error_not_a_crash(tmp_path, capsys):
    depth = 400  # deep enough for the interpreter, shallow enough for the parser
    path = spec(tmp_path, f"model m(a: list = {'[' * depth}1{']' * depth}) {{\n    return input(3)\n}}\n")
    m, printed = located_error(path, capsys)
    assert m["line"] == "1"


# ---- model parameters from outside the spec -----------------------------------------------

_PARAM_SPEC = """model m(w: any = 1) {
    return input(3)
}
"""


@pytest.mark.parametrize("value, words", [
    pytest.param(2 ** 80, "MAX_INT", id="huge-int"),
    pytest.param(float("inf"), "finite", id="inf"),
    pytest.param([[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]], "MAX_LIST_DEPTH", id="deep-list"),
    pytest.param(list(range(MAX_LIST_LEN + 1)), "MAX_LIST_LEN", id="long-list"),
    pytest.param("x" * (MAX_SPEC_BYTES + 1), "too long", id="long-string"),
    pytest.param(b"bytes", "bytes", id="bytes"),
])
def test_a_checkpoints_model_parameters_are_bounded(value, words):
    # a checkpoint's metadata passes its stored parameters to lower() as they are
    prog = load_text(_PARAM_SPEC, "p.gel")
    with pytest.raises(GelError) as e:
        lower(prog, "m", w=value)
    span = e.value.span
    assert span is not None and (span.file, span.line, span.column) == ("p.gel", 1, 1)
    assert words in e.value.message and "model parameter 'w'" in e.value.message


def test_set_with_an_infinite_number_is_a_located_error(tmp_path, capsys):
    path = spec(tmp_path, _PARAM_SPEC)
    m, printed = located_error(path, capsys, "--set", "w=1e400")
    assert m["line"] == "1" and "finite" in m["msg"]


# ---- the size of a program ----------------------------------------------------------


def _dense(lines: int, start: int = 0) -> str:
    return "".join(f"    a{i} = 1 + 2 * {i}\n" for i in range(start, start + lines))


def test_a_big_spec_is_refused_before_parsing(tmp_path, capsys, no_parsing):
    # on main: 154 s and 2.4 GB for 13 MB
    text = "model m() {\n" + _dense(MAX_SPEC_BYTES // 10) + "    return input(3)\n}\n"
    assert len(text) > MAX_SPEC_BYTES
    path = spec(tmp_path, text)
    m, printed = located_error(path, capsys)
    head = text.encode()[:MAX_SPEC_BYTES].decode()
    assert (int(m["line"]), int(m["col"])) == (head.count("\n") + 1, len(head) - head.rfind("\n"))
    assert "MAX_SPEC_BYTES" in m["msg"]


def test_a_big_import_is_refused_at_the_import(tmp_path, capsys):
    (tmp_path / "big.gel").write_text(f"# {SECRET}\n" * (MAX_SPEC_BYTES // 20), encoding="utf-8")
    path = spec(tmp_path, 'import "big.gel"\nmodel m() { return input(3) }\n')
    m, printed = located_error(path, capsys)
    assert SECRET not in printed
    assert same_file(m["file"], path) and (m["line"], m["col"]) == ("1", "1")
    assert "'big.gel'" in m["msg"] and "MAX_SPEC_BYTES" in m["msg"]


def test_a_program_is_bounded_in_bytes_in_all(tmp_path, capsys):
    # files each under MAX_SPEC_BYTES whose sum is over MAX_PROGRAM_BYTES
    n = MAX_PROGRAM_BYTES // (MAX_SPEC_BYTES // 2) + 1
    sizes = []
    for k in range(n):
        text = f"block B{k}() {{\n" + _dense(MAX_SPEC_BYTES // 2 // 25, 1000 * k) + "    return 1\n}\n"
        (tmp_path / f"lib{k}.gel").write_text(text, encoding="utf-8")
        sizes.append(len(text))
    assert max(sizes) < MAX_SPEC_BYTES and sum(sizes) > MAX_PROGRAM_BYTES
    imports = "".join(f'import "lib{k}.gel"\n' for k in range(n))
    path = spec(tmp_path, imports + "model m() { return input(3) }\n")
    m, printed = located_error(path, capsys)
    assert same_file(m["file"], path) and "MAX_PROGRAM_BYTES" in m["msg"]
    total, passing = path.stat().st_size, None
    for k, size in enumerate(sizes):
        total += size
        if total > MAX_PROGRAM_BYTES:
            passing = k + 1
            break
    assert int(m["line"]) == passing  # the import that passed it, after the others were read


def test_a_program_is_bounded_in_imports(tmp_path, capsys):
    # duplicates count: each import statement is a file-system search
    (tmp_path / "lib.gel").write_text("block B() {\n    return 1\n}\n", encoding="utf-8")
    path = spec(tmp_path, 'import "lib.gel"\n' * (MAX_SPEC_FILES + 1) + "model m() { return input(3) }\n")
    m, printed = located_error(path, capsys)
    assert m["line"] == str(MAX_SPEC_FILES + 1) and "MAX_SPEC_FILES" in m["msg"]


# ---- imports read only .gel files, and never echo another file ----------------------------


@pytest.fixture
def secret(tmp_path) -> Path:
    """A file that is not a spec, holding a marker that must never be printed."""
    d = tmp_path / "private"
    d.mkdir()
    path = d / "shadow"
    path.write_text(f"root:{SECRET}:19000:0:99999:7:::\n", encoding="utf-8")
    return path


def test_import_of_a_file_that_is_not_gel(tmp_path, capsys, secret):
    # on main: the parse error quoted the file's first line
    work = tmp_path / "work"
    work.mkdir()
    path = spec(work, 'import "../private/shadow"\nmodel m() { return input(3) }\n')
    m, printed = located_error(path, capsys)
    assert SECRET not in printed
    assert (m["line"], m["col"]) == ("1", "1") and "only .gel files" in m["msg"]


def test_import_by_absolute_path_of_a_file_that_is_not_gel(tmp_path, capsys, secret):
    path = spec(tmp_path, f'import "{secret}"\nmodel m() {{ return input(3) }}\n')
    code, printed = check(path, capsys)
    assert code == 2 and SECRET not in printed and "only .gel files" in printed


def test_import_through_a_link_named_gel(tmp_path, capsys, secret):
    link = tmp_path / "x.gel"
    try:
        link.symlink_to(secret)
    except OSError:
        pytest.skip("no symbolic links here")
    path = spec(tmp_path, 'import "x.gel"\nmodel m() { return input(3) }\n')
    m, printed = located_error(path, capsys)
    assert SECRET not in printed
    assert "'x.gel'" in m["msg"] and "not a .gel file" in m["msg"]


def test_checking_a_link_named_gel(tmp_path, capsys, secret):
    link = tmp_path / "x.gel"
    try:
        link.symlink_to(secret)
    except OSError:
        pytest.skip("no symbolic links here")
    code, printed = check(link, capsys)
    assert code == 2 and "Traceback" not in printed
    assert SECRET not in printed and "not a .gel file" in printed


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="no /proc")
def test_import_of_proc_self_environ(tmp_path):
    # /proc/self/environ is the process's own: the marker goes into a fresh process's environment
    path = spec(tmp_path, 'import "/proc/self/environ"\nmodel m() { return input(3) }\n')
    env = {**os.environ, "GELANC_TEST_SECRET": SECRET}
    run = subprocess.run([sys.executable, "-m", "gelanc", "check", str(path)], env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert SECRET not in run.stdout + run.stderr
    assert "Traceback" not in run.stderr and "only .gel files" in run.stderr


def test_import_of_a_gel_file_that_is_not_utf8(tmp_path, capsys):
    (tmp_path / "bin.gel").write_bytes(b"\xff\xfe" + SECRET.encode() + b"\n\x80\x81\n")
    path = spec(tmp_path, 'import "bin.gel"\nmodel m() { return input(3) }\n')
    m, printed = located_error(path, capsys)
    assert SECRET not in printed
    assert same_file(m["file"], path) and "'bin.gel'" in m["msg"] and "UTF-8" in m["msg"]


def test_checking_a_gel_file_that_is_not_utf8_quotes_nothing(tmp_path, capsys):
    path = tmp_path / "bin.gel"
    path.write_bytes(SECRET.encode() + b"\n\xff" + SECRET.encode() + b"\n")
    m, printed = located_error(path, capsys)
    assert SECRET not in printed
    assert (m["line"], m["col"]) == ("2", "1") and "UTF-8" in m["msg"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs")
def test_import_of_a_fifo_named_gel_does_not_wait_on_it(tmp_path, capsys):
    os.mkfifo(tmp_path / "pipe.gel")  # reading it would block until a writer came
    path = spec(tmp_path, 'import "pipe.gel"\nmodel m() { return input(3) }\n')
    m, printed = located_error(path, capsys)
    assert "'pipe.gel'" in m["msg"] and "not a regular file" in m["msg"]


def test_diagnostics_do_not_quote_a_file_that_is_not_a_spec(secret):
    # a span naming a foreign file (from a checkpoint, say) must not make render() read it
    text = render(GelError("something", Span(str(secret), 1, 1)))
    assert SECRET not in text and text.startswith(f"{secret}:1:1: error: something")


# ---- every loader and lowerer error is located ---------------------------------------------


def test_a_spec_with_no_model_is_located(tmp_path, capsys):
    path = spec(tmp_path, 'import "zoo/blocks.gel"\nblock B(x: tensor) {\n    return x\n}\n')
    m, printed = located_error(path, capsys)
    assert same_file(m["file"], path) and (m["line"], m["col"]) == ("1", "1")
    assert "defines no model" in m["msg"]


def test_an_unknown_model_name_is_located(tmp_path):
    path = spec(tmp_path, _PARAM_SPEC)
    with pytest.raises(GelError) as e:
        lower(load(path), "n")
    assert e.value.span is not None and (e.value.span.line, e.value.span.column) == (1, 1)
    assert "no model 'n'" in e.value.message


# ---- a checkpoint's embedded sources are as hostile as files -------------------------------


def test_an_oversized_embedded_spec_is_refused_before_parsing(no_parsing):
    big = "model m() {\n" + _dense(MAX_SPEC_BYTES // 10) + "    return input(3)\n}\n"
    with pytest.raises(GelError) as e:
        load_embedded({"specs/m.gel": big}, {}, "specs/m.gel")
    assert e.value.span is not None and e.value.span.file == "specs/m.gel" and e.value.span.line > 1
    assert "MAX_SPEC_BYTES" in e.value.message


@pytest.mark.parametrize("size", [MAX_SPEC_BYTES + 1, 64 * MAX_PROGRAM_BYTES])
def test_an_oversized_embedded_import_is_refused(size):
    root = 'import "lib.gel"\nmodel m() { return input(3) }\n'
    with pytest.raises(GelError) as e:
        load_embedded({"m.gel": root, "lib.gel": "#" * size}, {"m.gel": {"lib.gel": "lib.gel"}}, "m.gel")
    assert e.value.span is not None and e.value.span.file == "m.gel" and e.value.span.line == 1
    assert "'lib.gel'" in e.value.message and "MAX_SPEC_BYTES" in e.value.message


def test_an_embedded_program_is_bounded_in_bytes_in_all():
    lib = "#" * (MAX_SPEC_BYTES - 100) + "\n"
    n = MAX_PROGRAM_BYTES // len(lib) + 1
    root = "".join(f'import "l{k}.gel"\n' for k in range(n)) + "model m() { return input(3) }\n"
    sources = {"m.gel": root, **{f"l{k}.gel": lib for k in range(n)}}
    links = {"m.gel": {f"l{k}.gel": f"l{k}.gel" for k in range(n)}}
    with pytest.raises(GelError) as e:
        load_embedded(sources, links, "m.gel")
    assert e.value.span is not None and e.value.span.file == "m.gel" and e.value.span.line == n
    assert "MAX_PROGRAM_BYTES" in e.value.message


def test_embedded_sources_are_bounded_in_imports():
    root = 'import "a.gel"\n' * (MAX_SPEC_FILES + 1) + "model m() { return input(3) }\n"
    sources = {"m.gel": root, "a.gel": "block B() {\n    return 1\n}\n"}
    with pytest.raises(GelError) as e:
        load_embedded(sources, {"m.gel": {"a.gel": "a.gel"}}, "m.gel")
    assert e.value.span is not None and e.value.span.line == MAX_SPEC_FILES + 1
    assert "MAX_SPEC_FILES" in e.value.message


# ---- the zoo stays far inside every bound ---------------------------------------------------


def test_the_zoo_is_far_inside_the_bounds(in_root):
    """A figure lowered below what the zoo needs would break real specs; one near it leaves
    them no room to grow. Every zoo program uses at most a third of each bound (the 200-block
    GELAN of specs/figures/ 36% of MAX_NODES: a bound far above it could not check in a second)."""
    from gelanc import limits
    from gelanc.dsl.loader import builtin_specs
    from gelanc.ir.lower import Lowerer

    specs = [*builtin_specs(), *sorted((ROOT / "specs" / "figures").glob("*.gel"))]
    assert len(specs) > 10
    for path in specs:
        prog = load(path)
        sizes = [len(t.encode()) for t in prog.sources.values()]
        assert max(sizes) * 3 <= limits.MAX_SPEC_BYTES and sum(sizes) * 3 <= limits.MAX_PROGRAM_BYTES, path
        assert len(prog.sources) * 3 <= limits.MAX_SPEC_FILES, path
        for model in prog.own_models:
            lw = Lowerer(prog)
            g = lw.lower_model(model, {})
            assert lw.steps * 3 <= limits.MAX_EVAL_STEPS, (path, model, lw.steps)
            assert g.number_of_nodes() * 2.5 <= limits.MAX_NODES, (path, model)
            assert lw.edges * 3 <= limits.MAX_EDGES, (path, model)
