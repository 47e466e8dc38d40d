"""Fuzzing the checker: mutated zoo specs must give a diagnostic, never a traceback.

Each example takes the text of a spec (specs/*.gel) or of the standard library
(zoo/blocks.gel), applies a few random edits (drop a token or a span, swap or
duplicate lines, insert garbage including non-ASCII, truncate, change a number or a
name), writes it to a temporary folder and runs `gelanc check` in-process. The
checker must answer 0 (the mutant still happens to be a valid spec) or 2 (a user
error, reported as a diagnostic); any exception other than SystemExit fails the
test, and so does an example that runs for longer than TIME_LIMIT seconds.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import shutil
import signal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gelanc.cli import main

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "specs").glob("*.gel"))
BLOCKS = ROOT / "zoo" / "blocks.gel"
SPEC_TEXTS = {p.name: p.read_text(encoding="utf-8") for p in SPECS}
BLOCKS_TEXT = BLOCKS.read_text(encoding="utf-8")
# Specs whose only import is the standard library: they can sit next to a mutated zoo.
ZOO_ONLY = sorted(n for n, t in SPEC_TEXTS.items()
                  if re.findall(r'import\s+"([^"]*)"', t) == ["zoo/blocks.gel"])

TIME_LIMIT = 20  # seconds: a hang guard, far above any real check (speed is benchmarks/ work, not a test)

_SETTINGS = dict(deadline=None, derandomize=False,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                        HealthCheck.filter_too_much,
                                        HealthCheck.function_scoped_fixture])

# ---- mutations ----------------------------------------------------------------------

_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+(?:\.\d*)?|\*\*|//|==|!=|<=|>=|\S")
_NUMBER = re.compile(r"(?<![A-Za-z0-9_.])\d+(?:\.\d+)?(?![A-Za-z0-9_.])")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# Pieces of the language and plain garbage, including non-ASCII and control characters.
_SNIPPETS = [
    "{", "}", "(", ")", "[", "]", ",", "=", ";", ":", ".", "+", "-", "*", "/", "//", "%", "**",
    "==", "<", '"', "'", "#", "\\", "$", "@", "`", "\t", "\n", "\r", "\x00", "\x0c", "\u2028",
    "é", "λ", "中文", "😀", "\ufeff", "\u200b", "×",
    "block", "model", "import", "aux", "for", "in", "return", "paper", "as", "if", "else",
    "and", "or", "not", "true", "false", "none", "tensor", "int", "list",
    "x", "c2", "m[i]", "Conv", "RepNCSP", "chunk", "concat", "detect", "input(3)", "range(3)",
    "0", "-1", "1.5", "1e999", "25.3M", "99999999999999999999", '"zoo/blocks.gel"',
    "aux { }", "return x", "y = x + x", "for i in range(2) { }", "x = input(3)",
]

# Numbers a mutation may put in place of another: small ones mostly, and some that
# make a depth, a loop or a number run into gelanc/limits.py (a bounded error, not a hang).
_NUMBERS = ["0", "1", "2", "3", "5", "7", "16", "33", "63", "64", "0.5", "1.0", "-1", "none", "x",
            "10000", "99999", "9007199254740993", "1e300"]

# A file no spec may read, and the ways a mutant may try to: its marker must never be printed.
SECRET = "SECRET-MARKER-5d1e"
_HOSTILE_IMPORTS = ['import "secret.txt"', 'import "link.gel"', 'import "../secret.txt"',
                    'import "/proc/self/environ"', 'import "/etc/passwd"']


@st.composite
def mutated(draw, text: str) -> str:
    """`text` with one to three random edits."""
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["drop_token", "drop_span", "swap_lines", "insert", "truncate",
                                     "dup_line", "number", "name", "drop_line", "hostile_import"]))
        text = _mutate(draw, kind, text)
    return text


def _mutate(draw, kind: str, text: str) -> str:
    n = len(text)
    if kind == "drop_token":
        toks = list(_TOKEN.finditer(text))
        if toks:
            t = draw(st.sampled_from(toks))
            return text[: t.start()] + text[t.end():]
    elif kind == "drop_span" and n:
        i = draw(st.integers(0, n - 1))
        j = draw(st.integers(i, min(n, i + 40)))
        return text[:i] + text[j:]
    elif kind in ("swap_lines", "dup_line", "drop_line"):
        lines = text.split("\n")
        i = draw(st.integers(0, len(lines) - 1))
        if kind == "swap_lines":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif kind == "dup_line":
            lines.insert(i, lines[i])
        else:
            del lines[i]
        return "\n".join(lines)
    elif kind == "insert":
        i = draw(st.integers(0, n))
        piece = draw(st.one_of(st.sampled_from(_SNIPPETS),
                               st.text(min_size=1, max_size=8),
                               st.binary(min_size=1, max_size=6).map(lambda b: b.decode("latin-1"))))
        return text[:i] + piece + text[i:]
    elif kind == "hostile_import":  # at the top, where an import is valid
        return draw(st.sampled_from(_HOSTILE_IMPORTS)) + "\n" + text
    elif kind == "truncate":
        return text[: draw(st.integers(0, n))]
    elif kind == "number":
        nums = list(_NUMBER.finditer(text))
        if nums:
            m = draw(st.sampled_from(nums))
            return text[: m.start()] + draw(st.sampled_from(_NUMBERS)) + text[m.end():]
    elif kind == "name":
        names = list(_NAME.finditer(text))
        if names:
            m = draw(st.sampled_from(names))
            other = draw(st.sampled_from(sorted({x.group() for x in names})))
            return text[: m.start()] + other + text[m.end():]
    return text


# ---- running the checker ----------------------------------------------------------------


class _Timeout(Exception):
    pass


@contextlib.contextmanager
def _time_limit(seconds: int):
    """Turn a hang into a failure (SIGALRM: the main thread on Unix; elsewhere, no limit)."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def on_alarm(signum, frame):
        raise _Timeout(f"gelanc check ran for more than {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def run_check(path: Path, capsys) -> None:
    capsys.readouterr()
    with _time_limit(TIME_LIMIT):
        try:
            code = main(["check", str(path)])
        except SystemExit as e:  # argparse and friends: allowed
            code = e.code
    out, err = capsys.readouterr()
    assert code in (0, 2), f"exit status {code}\n{err}"
    assert "Traceback" not in err
    assert SECRET not in out + err, "the content of a file that is not a spec was printed"
    if code == 2:
        assert "error: " in err, f"exit status 2 without a diagnostic:\n{err}"


_counter = itertools.count()


@pytest.fixture(scope="module")
def spec_dir(tmp_path_factory) -> Path:
    """A folder with every zoo spec, so a mutant's `import "gelan-s.gel"` still resolves
    (and `import "zoo/blocks.gel"` falls back to the repository's library root)."""
    d = tmp_path_factory.mktemp("fuzz_specs")
    for p in SPECS:
        shutil.copy(p, d / p.name)
    _plant_secret(d)
    return d


def _plant_secret(d: Path) -> None:
    """A secret beside the specs and one folder up, and a link named like a spec to it."""
    for where in (d, d.parent):
        (where / "secret.txt").write_text(f"{SECRET}\nmodel m() {{ return input(3) }}\n", encoding="utf-8")
    with contextlib.suppress(OSError):
        (d / "link.gel").symlink_to(d / "secret.txt")


# ---- the properties -------------------------------------------------------------------


@settings(max_examples=90, **_SETTINGS)
@given(data=st.data(), name=st.sampled_from(sorted(SPEC_TEXTS)))
def test_mutated_spec_gives_a_diagnostic(spec_dir, capsys, data, name):
    text = data.draw(mutated(SPEC_TEXTS[name]), label="mutant")
    path = spec_dir / f"mutant_{next(_counter)}_{name}"  # a fresh name: no stale parse cache
    path.write_bytes(text.encode("utf-8", errors="surrogateescape"))
    try:
        run_check(path, capsys)
    finally:
        path.unlink()


@settings(max_examples=45, **_SETTINGS)
@given(data=st.data(), name=st.sampled_from(ZOO_ONLY))
def test_mutated_zoo_gives_a_diagnostic(tmp_path_factory, capsys, data, name):
    blocks = data.draw(mutated(BLOCKS_TEXT), label="mutated zoo/blocks.gel")
    d = tmp_path_factory.mktemp("fuzz_zoo")
    _plant_secret(d)
    (d / "zoo").mkdir()
    (d / "zoo" / "blocks.gel").write_bytes(blocks.encode("utf-8", errors="surrogateescape"))
    spec = d / name
    spec.write_text(SPEC_TEXTS[name], encoding="utf-8")  # its import finds d/zoo/blocks.gel first
    try:
        run_check(spec, capsys)
    finally:
        shutil.rmtree(d, ignore_errors=True)


@settings(max_examples=15, **_SETTINGS)
@given(data=st.binary(max_size=200))
def test_random_bytes_give_a_diagnostic(spec_dir, capsys, data):
    path = spec_dir / f"bytes_{next(_counter)}.gel"
    path.write_bytes(data)
    try:
        run_check(path, capsys)
    finally:
        path.unlink()


def test_zoo_only_specs_exist():
    assert len(ZOO_ONLY) >= 5
    assert all(SPEC_TEXTS[n].count('import "zoo/blocks.gel"') == 1 for n in ZOO_ONLY)
