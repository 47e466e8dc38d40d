"""Files → a :class:`Program`: a spec with its imports resolved.

``import "zoo/blocks.gel"`` is looked up next to the importing file first, then in
the standard library root (the folder holding ``zoo/``), so specs anywhere can
import the zoo. Each file is parsed once per process.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path

from gelanc.diagnostics import GelError, Span
from gelanc.dsl import ast
from gelanc.dsl.parser import parse


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


_CACHE: dict[tuple[str, float], tuple[str, ast.Module]] = {}


def _display(path: Path) -> str:
    """Paths in diagnostics: relative to the working folder where that is shorter."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _read(path: Path) -> tuple[str, ast.Module]:
    key = (str(path.resolve()), path.stat().st_mtime)
    if key not in _CACHE:
        text = path.read_text(encoding="utf-8")
        _CACHE[key] = (text, parse(text, _display(path)))
    return _CACHE[key]


def _resolve(imp: ast.Import, importer: Path | None) -> Path:
    candidates = ([importer.parent / imp.path] if importer else []) + [library_root() / imp.path]
    for c in candidates:
        try:
            if c.is_file():
                return c
        except OSError:  # a name too long for the file system, say
            continue
    raise GelError(f"cannot find imported file '{imp.path}' (looked in "
                   f"{', '.join(str(c.parent) for c in candidates)})", imp.span)


def load(path: str | Path) -> Program:
    path = Path(path)
    if not path.is_file():
        raise GelError(f"no such file: {path}")
    try:
        text, mod = _read(path)
    except UnicodeDecodeError as e:
        raise GelError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    return _link(mod, text, path, _from_disk)


def load_text(text: str, name: str = "<string>") -> Program:
    return _link(parse(text, name), text, None, _from_disk)


def load_embedded(sources: dict[str, str], links: dict[str, dict[str, str]], root: str) -> Program:
    """Rebuild a program from the texts a checkpoint embeds, touching no file."""
    def resolve(imp: ast.Import, where: str):
        name = links.get(where, {}).get(imp.path)
        if name not in sources:
            raise GelError(f"the embedded sources lack the file imported as '{imp.path}'", imp.span)
        return name, sources[name], parse(sources[name], name)

    if root not in sources:
        raise GelError(f"the embedded sources lack the spec '{root}'")
    return _link(parse(sources[root], root), sources[root], root, resolve)


def _from_disk(imp: ast.Import, where: Path | None):
    target = _resolve(imp, where)
    try:
        text, mod = _read(target)
    except UnicodeDecodeError:
        raise GelError(f"imported file '{imp.path}' is not UTF-8 text", imp.span) from None
    return target, text, mod


def _link(root: ast.Module, text: str, where, resolve) -> Program:
    """Resolve ``root``'s imports (depth first, each file once) into one namespace."""
    prog = Program(root.file, sources={root.file: text})
    seen: set[str] = {root.file}
    origin: dict[str, Span] = {}

    def visit(mod: ast.Module, where) -> None:
        for imp in mod.imports:
            sub_where, sub_text, sub = resolve(imp, where)
            prog.links.setdefault(mod.file, {})[imp.path] = sub.file
            if sub.file in seen:
                continue  # imported twice, or an import cycle: each file counts once
            seen.add(sub.file)
            prog.sources[sub.file] = sub_text
            visit(sub, sub_where)
        for d in [*mod.blocks, *mod.models]:
            table = prog.blocks if isinstance(d, ast.BlockDef) and not d.is_model else prog.models
            if d.name in prog.blocks or d.name in prog.models:
                raise GelError(f"'{d.name}' is defined twice", d.span).with_note(
                    origin[d.name], "first defined here")
            table[d.name] = d
            origin[d.name] = d.span

    visit(root, where)
    prog.own_models = [m.name for m in root.models]
    return prog


def suggest(name: str, options) -> str:
    close = difflib.get_close_matches(name, list(options), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""
