"""Files → a :class:`Program`: a spec with its imports resolved.

``import "zoo/blocks.gel"`` is looked up next to the importing file first, then in
the standard library root (the folder holding ``zoo/``), so specs anywhere can
import the zoo. Each file is parsed once per process.

Every file is hostile (a spec from anywhere, or the sources a checkpoint embeds):
only files whose name ends in ``.gel`` once links are followed are read, and only
regular ones; a file is read up to MAX_SPEC_BYTES and refused past it before any
parsing; a program runs at most MAX_SPEC_FILES imports and MAX_PROGRAM_BYTES of
source in all. Errors name the file or the import, never a byte of a file that
could not be read as a spec.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gelanc.diagnostics import SOURCES, GelError, Span
from gelanc.dsl import ast
from gelanc.dsl.parser import parse
from gelanc.files import NotRegularFile, TooLarge, read_regular
from gelanc.limits import MAX_PROGRAM_BYTES, MAX_SPEC_BYTES, MAX_SPEC_FILES


def library_root() -> Path:
    """The folder that holds the standard library (``zoo/``) and the ``specs/``.

    In a source checkout (and an editable install) that is the repository root;
    a wheel installs both folders inside the package as ``gelanc/zoo``, ``gelanc/specs``.
    """
    package = Path(__file__).resolve().parents[1]
    for root in (package.parent, package):
        if (root / "zoo" / "blocks.gel").is_file():
            return root
    raise GelError(f"gelanc's standard library (zoo/blocks.gel) is missing from {package}")


def builtin_specs() -> list[Path]:
    """The model zoo's specs, in a stable order."""
    return sorted((library_root() / "specs").glob("*.gel"))


@dataclass
class Program:
    """A spec file and everything it imports."""

    file: str
    blocks: dict[str, ast.BlockDef] = field(default_factory=dict)
    models: dict[str, ast.BlockDef | ast.ModelAlias] = field(default_factory=dict)
    own_models: list[str] = field(default_factory=list)  # models defined in `file` itself
    sources: dict[str, str] = field(default_factory=dict)  # file name → text
    # importing file → {import path as written → file name}: with `sources`, enough to
    # rebuild the program without the files (a checkpoint embeds both)
    links: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def span(self) -> Span:
        """The start of the spec file: where errors about the program as a whole point."""
        return Span(self.file, 1, 1)


class _Unreadable(Exception):
    """Why a spec file cannot be read; the message names no byte of its content."""

    def __init__(self, reason: str, offset: int | None = None, data: bytes = b""):
        super().__init__(reason)
        self.reason, self.offset, self.data = reason, offset, data

    def span(self, name: str) -> Span | None:
        """Where in the file it went wrong (the line and column of byte ``offset``)."""
        if self.offset is None:
            return None
        before = self.data[: self.offset]
        line_start = before.rfind(b"\n") + 1
        column = len(before[line_start:].decode("utf-8", "replace")) + 1
        return Span(name, before.count(b"\n") + 1, column)


# Parsed files by (resolved path, mtime, size), with the bytes they were parsed from:
# each file is parsed once per process.
_CACHE: dict[tuple[str, int, int], tuple[bytes, ast.Module]] = {}


def _display(path: Path) -> str:
    """Paths in diagnostics: relative to the working folder where that is shorter."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _read_bytes(path: Path) -> tuple[bytes, os.stat_result]:
    """At most MAX_SPEC_BYTES + 1 bytes of ``path``, a regular file whose links are resolved.

    Opened without blocking, without following a link (one swapped in since ``path``
    was resolved is refused) and checked on the open descriptor, so a FIFO or a device
    put in its place is refused instead of read forever."""
    try:
        return read_regular(path, MAX_SPEC_BYTES, follow=False)
    except NotRegularFile:
        raise _Unreadable("is not a regular file") from None
    except TooLarge as e:
        raise _Unreadable(f"is larger than {MAX_SPEC_BYTES} bytes (MAX_SPEC_BYTES)", MAX_SPEC_BYTES, e.data) from None
    except OSError as e:
        raise _Unreadable(f"cannot be read ({e.strerror or 'bad path'})") from None


def _read(path: Path, name: str) -> tuple[str, Callable[[], ast.Module]]:
    """A spec file's text, and how to parse it (once per process for an unchanged file).

    ``path`` is resolved already: its name, not a link's, ends in ``.gel``."""
    data, st = _read_bytes(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _Unreadable(f"is not UTF-8 text ({e.reason} at byte {e.start})", e.start, data) from None
    key = (str(path), st.st_mtime_ns, st.st_size)
    cached = _CACHE.get(key)
    if cached and cached[0] == data and cached[1].file == name:
        SOURCES.add(name, text)  # as parse() does: diagnostics quote this text
        return text, lambda: cached[1]

    def parsed() -> ast.Module:
        mod = parse(text, name)
        _CACHE[key] = (data, mod)
        return mod

    return text, parsed


def _is_spec_name(path: str | Path) -> bool:
    return str(path).endswith(".gel")


def _target(path: Path) -> Path | None:
    """``path`` with every link followed, or None where there is no such file (or folder)."""
    try:
        return path.resolve(strict=True)
    except (OSError, ValueError, RuntimeError):  # missing, a name too long, a NUL byte, a link loop
        return None


def _resolve(imp: ast.Import, importer: Path | None) -> tuple[Path, Path]:
    """The file an import names, as found and with links followed; the second is only
    ever a file whose name ends in ``.gel``.

    The name is checked as written before any file is looked at, and again once links
    are followed, so no import reads /etc/shadow or /proc/self/environ, even through
    a link named ``x.gel``."""
    if not _is_spec_name(imp.path):
        raise GelError(f"cannot import '{imp.path}': only .gel files can be imported", imp.span)
    candidates = ([importer.parent / imp.path] if importer else []) + [library_root() / imp.path]
    for c in candidates:
        target = _target(c)
        if target is None or target.is_dir():
            continue
        if not _is_spec_name(target.name):
            raise GelError(f"cannot import '{imp.path}': it links to a file that is not a .gel file", imp.span)
        return c, target
    raise GelError(f"cannot find imported file '{imp.path}' (looked in "
                   f"{', '.join(str(c.parent) for c in candidates)})", imp.span)


@dataclass
class _Source:
    """One file of a program, read but not yet parsed."""

    name: str  # its name in diagnostics and in Program.sources
    text: str
    parse: Callable[[], ast.Module]
    where: Any = None  # what its own imports are resolved against


def load(path: str | Path) -> Program:
    """The program of a spec file: ``path``, with links followed, must be a ``.gel`` file."""
    path = Path(path)
    target = _target(path)
    if target is None:
        raise GelError(f"no such file: {path}")
    if not target.is_file():
        raise GelError(f"{path} is not a regular file")
    if not _is_spec_name(target.name):
        raise GelError(f"{path} is not a .gel file" + (" (it is a link to another kind of file)"
                                                        if _is_spec_name(path.name) else ""))
    name = _display(path)
    try:
        text, parsed = _read(target, name)
    except _Unreadable as e:
        raise GelError(f"{path} {e.reason}", e.span(name)) from None
    return _link(_Source(name, text, parsed, path), _from_disk)


def load_text(text: str, name: str = "<string>") -> Program:
    return _link(_Source(name, text, lambda: parse(text, name)), _from_disk)


def load_embedded(sources: dict[str, str], links: dict[str, dict[str, str]], root: str) -> Program:
    """Rebuild a program from the texts a checkpoint embeds, touching no file.

    The texts are as hostile as any file: the same bounds apply (each text at most
    MAX_SPEC_BYTES, checked before parsing; MAX_SPEC_FILES imports; MAX_PROGRAM_BYTES
    in all), and an import resolves only to another embedded text."""
    def resolve(imp: ast.Import, where: str) -> _Source:
        name = links.get(where, {}).get(imp.path) if isinstance(links.get(where), dict) else None
        if not isinstance(name, str) or not isinstance(sources.get(name), str):
            raise GelError(f"the embedded sources lack the file imported as '{imp.path}'", imp.span)
        return _embedded(name, sources[name])

    if not isinstance(sources.get(root), str):
        raise GelError(f"the embedded sources lack the spec '{root}'")
    return _link(_embedded(root, sources[root]), resolve)


def _embedded(name: str, text: str) -> _Source:
    return _Source(name, text, lambda: parse(text, name), name)


def _from_disk(imp: ast.Import, where: Path | None) -> _Source:
    found, target = _resolve(imp, where)
    name = _display(target)
    try:
        text, parsed = _read(target, name)
    except _Unreadable as e:  # located at the import: the file's own bytes are never quoted
        raise GelError(f"imported file '{imp.path}' {e.reason}", imp.span) from None
    return _Source(name, text, parsed, found)  # its imports are looked up beside it, as found


def _utf8_size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _link(root: _Source, resolve: Callable[[ast.Import, Any], _Source]) -> Program:
    """Resolve ``root``'s imports (depth first, each file once) into one namespace.

    Every import statement run counts against MAX_SPEC_FILES and every new file's
    bytes against MAX_PROGRAM_BYTES, both checked before the file is parsed."""
    top = root.parse()  # refuses a text of more than MAX_SPEC_BYTES before parsing it
    total = _utf8_size(root.text)
    prog = Program(top.file, sources={top.file: root.text})
    seen: set[str] = {top.file}
    origin: dict[str, Span] = {}
    imports = 0

    def visit(mod: ast.Module, where) -> None:
        nonlocal imports, total
        for imp in mod.imports:
            imports += 1
            if imports > MAX_SPEC_FILES:
                raise GelError(f"too many imports: a program may run at most {MAX_SPEC_FILES} import "
                               "statements, counting those of imported files (MAX_SPEC_FILES)", imp.span)
            src = resolve(imp, where)
            prog.links.setdefault(mod.file, {})[imp.path] = src.name
            if src.name in seen:
                continue  # imported twice, or an import cycle: each file counts once
            # a text of more characters than the limit has more bytes too: no need to encode it
            size = len(src.text) if len(src.text) > MAX_SPEC_BYTES else _utf8_size(src.text)
            if size > MAX_SPEC_BYTES:  # an embedded text (a file on disk was refused as it was read)
                raise GelError(f"imported file '{imp.path}' is larger than {MAX_SPEC_BYTES} bytes (MAX_SPEC_BYTES)",
                               imp.span)
            total += size
            if total > MAX_PROGRAM_BYTES:
                raise GelError(f"imported file '{imp.path}' brings the program past {MAX_PROGRAM_BYTES} bytes "
                               "of source in all (MAX_PROGRAM_BYTES)", imp.span)
            seen.add(src.name)
            sub = src.parse()
            prog.sources[sub.file] = src.text
            visit(sub, src.where)
        for d in [*mod.blocks, *mod.models]:
            table: dict[str, Any] = prog.blocks if isinstance(d, ast.BlockDef) and not d.is_model else prog.models
            if d.name in prog.blocks or d.name in prog.models:
                raise GelError(f"'{d.name}' is defined twice", d.span).with_note(
                    origin[d.name], "first defined here")
            table[d.name] = d
            origin[d.name] = d.span

    visit(top, root.where)
    prog.own_models = [m.name for m in top.models]
    if not prog.own_models:
        raise GelError(f"{prog.file} defines no model (a spec needs `model name(...) {{ ... }}`)", prog.span)
    return prog


def suggest(name: str, options) -> str:
    close = difflib.get_close_matches(name, list(options), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""
