"""Diagnostics: every file in tests/bad/ is a spec with one mistake.

Each file starts with comment lines that say what `gelanc check` must report:

    # expect: <a substring of the error message>
    # at: LINE:COL          (1-based, in the bad file itself)
    # at: zoo               (the error is inside zoo/blocks.gel; a note must point back here)
    # note: LINE:COL        (optional: the position that note must have)
    # cmd: stats            (optional: run `gelanc stats` instead of `gelanc check`)
    # xfail: <reason>       (optional: a known bug; the test is a strict xfail)

The test runs the CLI in-process and checks the exit status, the location line,
the message, the quoted source line and the caret under the reported column.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from gelanc.cli import main

ROOT = Path(__file__).resolve().parents[1]
BAD = ROOT / "tests" / "bad"
BAD_FILES = sorted(BAD.glob("*.gel"))

_HEADER = re.compile(r"^#\s*(expect|at|note|xfail|cmd):\s?(.*)$")
_LOC = re.compile(r"^(?P<file>[^\n]+?):(?P<line>\d+):(?P<col>\d+): (?P<kind>error|note): (?P<msg>.*)$")
_QUOTE = re.compile(r"^(?P<gutter> *(?P<line>\d+) \| )(?P<text>.*)$")
_CARET = re.compile(r"^(?P<pad> *\| )(?P<lead>[ \t]*)\^~*$")


@dataclass
class Case:
    path: Path
    expect: str
    at: tuple[int, int] | None  # None: inside zoo/blocks.gel
    note: tuple[int, int] | None
    xfail: str | None
    cmd: str

    @property
    def rel(self) -> str:
        return self.path.relative_to(ROOT).as_posix()


def _pos(text: str, path: Path) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+):(\d+)", text.strip())
    assert m, f"{path.name}: bad position {text!r} (want LINE:COL)"
    return int(m[1]), int(m[2])


def parse_case(path: Path) -> Case:
    fields: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").split("\n"):
        if not line.startswith("#"):
            break
        m = _HEADER.match(line)
        if m:
            fields.setdefault(m[1], m[2].strip())
    assert "expect" in fields and "at" in fields, f"{path.name}: needs '# expect:' and '# at:' lines"
    at = None if fields["at"] == "zoo" else _pos(fields["at"], path)
    note = _pos(fields["note"], path) if "note" in fields else None
    return Case(path, fields["expect"], at, note, fields.get("xfail"), fields.get("cmd", "check"))


def _params():
    out = []
    for p in BAD_FILES:
        case = parse_case(p)
        marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
        out.append(pytest.param(case, id=p.stem, marks=marks))
    return out


def source_line(file: str, line: int) -> str:
    """Line `line` of `file` as the parser counts lines (only \\n ends one)."""
    path = Path(file) if Path(file).is_absolute() else ROOT / file
    if not path.is_file() and file.endswith("zoo/blocks.gel"):
        path = ROOT / "zoo" / "blocks.gel"  # parsed (and named) first from another working folder
    lines = path.read_text(encoding="utf-8").split("\n")
    assert 1 <= line <= len(lines), f"{file} has no line {line}"
    return lines[line - 1].rstrip("\r")


def _width(s: str) -> int:
    return len(s.expandtabs(4))


def check_quote(lines: list[str], i: int, file: str, line: int, col: int) -> None:
    """lines[i] quotes `file`:`line` and lines[i + 1] puts a caret under column `col`."""
    assert i + 1 < len(lines), f"no quoted source line after {lines[i - 1]!r}"
    q, c = _QUOTE.match(lines[i]), _CARET.match(lines[i + 1])
    assert q, f"not a quoted source line: {lines[i]!r}"
    assert c, f"not a caret line: {lines[i + 1]!r}"
    assert int(q["line"]) == line, f"quote is of line {q['line']}, the error is on line {line}"
    src = source_line(file, line)
    assert q["text"].expandtabs(4) == src.expandtabs(4), (
        f"quoted text {q['text']!r} is not line {line} of {file}: {src!r}")
    assert len(c["pad"]) == len(q["gutter"]), "the caret line's gutter is not as wide as the quote's"
    assert col <= len(src) + 1, f"column {col} is past the end of {src!r}"
    # The caret must sit under the character at `col`, as displayed (tabs as 4 columns).
    want = _width(src[: col - 1])
    got = _width(c["lead"])
    assert got == want, (f"caret at display column {got + 1}, the character at column {col} "
                         f"({src[col - 1:col]!r}) is displayed at column {want + 1}\n"
                         f"{lines[i]}\n{lines[i + 1]}")


@pytest.fixture
def in_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # so diagnostics print paths relative to the repository


@pytest.mark.parametrize("case", _params())
def test_bad_spec(case: Case, in_root, capsys):
    code = main([case.cmd, case.rel])
    out, err = capsys.readouterr()
    assert "Traceback" not in err + out
    assert code == 2, f"exit status {code}, want 2\nstdout:\n{out}\nstderr:\n{err}"
    lines = err.rstrip("\n").split("\n")
    first = _LOC.match(lines[0])
    assert first and first["kind"] == "error", f"first line is not 'FILE:LINE:COL: error: ...': {lines[0]!r}"
    assert case.expect in first["msg"], f"{case.expect!r} not in the message {first['msg']!r}"
    file, line, col = first["file"], int(first["line"]), int(first["col"])
    if case.at is None:
        assert Path(file).as_posix().endswith("zoo/blocks.gel"), f"error is in {file}, not in zoo/blocks.gel"
        notes = [m for m in map(_LOC.match, lines) if m and m["kind"] == "note" and m["file"] == case.rel]
        assert notes, f"no note points back into {case.rel}:\n{err}"
        if case.note:
            assert (int(notes[0]["line"]), int(notes[0]["col"])) == case.note, (
                f"note at {notes[0]['line']}:{notes[0]['col']}, want {case.note[0]}:{case.note[1]}")
        for n in notes:
            i = lines.index(n.string)
            check_quote(lines, i + 1, case.rel, int(n["line"]), int(n["col"]))
    else:
        assert file == case.rel, f"error is in {file}, want {case.rel}"
        assert (line, col) == case.at, f"error at {line}:{col}, want {case.at[0]}:{case.at[1]}\n{err}"
    check_quote(lines, 1, file, line, col)


def test_there_are_enough_bad_specs():
    assert len(BAD_FILES) >= 30


def test_every_bad_spec_has_a_header():
    for p in BAD_FILES:
        parse_case(p)  # asserts on a missing or malformed header


def test_good_spec_checks(in_root, capsys):
    code = main(["check", "specs/gelan-c.gel"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "specs/gelan-c.gel: ok: model gelan_c" in out
    assert err == ""


def test_good_spec_with_aux_checks(in_root, capsys):
    code = main(["check", "specs/yolov9-c.gel", "specs/gelan-s-conv.gel"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "on the aux branch" in out and "gelan_s_conv" in out


def test_missing_file(in_root, capsys):
    code = main(["check", "specs/no-such-model.gel"])
    out, err = capsys.readouterr()
    assert code == 2
    assert "Traceback" not in err
    assert err.startswith("error: no such file: specs/no-such-model.gel")


def test_bad_file_does_not_stop_the_others(in_root, capsys):
    code = main(["check", "tests/bad/unknown_block.gel", "specs/gelan-t.gel"])
    out, err = capsys.readouterr()
    assert code == 2
    assert "unknown block or op 'RepNCSPELAN'" in err
    assert "specs/gelan-t.gel: ok" in out
