"""Source locations and compiler diagnostics.

Every user mistake in a `.gel` file surfaces as a :class:`GelError` carrying a
:class:`Span`. The CLI renders it the way a C compiler would::

    specs/x.gel:12:9: error: concat of 512×40×40 and 256×20×20: spatial sizes differ
       12 |     y = concat(a, b)
          |         ^~~~~~~~~~~~
    zoo/blocks.gel:40:5: note: in block GELAN called from here

and exits with status 2. Nothing here imports torch or networkx.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from gelanc.errors import UserError
from gelanc.limits import MAX_SPEC_BYTES


@dataclass(frozen=True, slots=True)
class Span:
    """A region of source text: 1-based line and column, end exclusive."""

    file: str
    line: int
    column: int
    end_line: int | None = None
    end_column: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"

    def to_json(self) -> dict:
        return {"file": self.file, "line": self.line, "column": self.column}


@dataclass
class Note:
    span: Span | None
    message: str


@dataclass
class GelError(UserError):
    """A located error in a user's spec (or in a value it passed down)."""

    message: str
    span: Span | None = None
    notes: list[Note] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"{self.span}: error: {self.message}" if self.span else f"error: {self.message}"

    def with_note(self, span: Span | None, message: str) -> GelError:
        self.notes.append(Note(span, message))
        return self

    def located(self, span: Span | None) -> GelError:
        """Give the error a location if it has none yet (inner spans win)."""
        if self.span is None:
            self.span = span
        return self


class SourceCache:
    """Source texts by file name, so diagnostics can quote the offending line."""

    def __init__(self) -> None:
        self._texts: dict[str, str] = {}

    def add(self, name: str, text: str) -> None:
        self._texts[name] = text

    def line(self, name: str, lineno: int) -> str | None:
        text = self._texts.get(name)
        if text is None:
            text = _read_spec(name)
            if text is None:
                return None
            self._texts[name] = text
        lines = text.split("\n")  # lark counts lines by \n alone
        return lines[lineno - 1] if 1 <= lineno <= len(lines) else None


def _read_spec(name: str) -> str | None:
    """A file's text for quoting, read only where it is a .gel spec that the loader would read.

    Diagnostics never quote another kind of file (a span naming /etc/shadow quotes
    nothing), one larger than a spec may be, or one that is not UTF-8 text."""
    try:
        path = Path(name).resolve(strict=True)
        if not path.name.endswith(".gel") or not path.is_file():
            return None
        with path.open("rb") as f:
            data = f.read(MAX_SPEC_BYTES + 1)
        return data.decode("utf-8") if len(data) <= MAX_SPEC_BYTES else None
    except (OSError, ValueError, RuntimeError):  # UnicodeDecodeError is a ValueError
        return None


SOURCES = SourceCache()


def _quote(span: Span, sources: SourceCache) -> list[str]:
    text = sources.line(span.file, span.line)
    if text is None:
        return []
    raw = text.rstrip("\r\n")
    start = len(raw[: span.column - 1].expandtabs(4))  # the caret's column once tabs are expanded
    text = raw.expandtabs(4)
    width = 1
    if span.end_line == span.line and span.end_column and span.end_column > span.column:
        width = len(raw[: span.end_column - 1].expandtabs(4)) - start
    width = max(1, min(width, len(text) - start))
    gutter = f"{span.line:>5} | "
    pad = " " * (len(gutter) - 2) + "| "
    return [gutter + text, pad + " " * start + "^" + "~" * (width - 1)]


def render(err: GelError, sources: SourceCache = SOURCES) -> str:
    """The error as a compiler prints it: location, message, quoted line, caret, notes."""
    out = [str(err)]
    if err.span:
        out += _quote(err.span, sources)
    for note in err.notes:
        where = f"{note.span}: " if note.span else ""
        out.append(f"{where}note: {note.message}")
        if note.span:
            out += _quote(note.span, sources)
    return "\n".join(out)
