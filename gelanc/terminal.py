"""What gelanc prints is text, never a control sequence that a file smuggled in.

Names and messages that come from files — a dataset's file names, a checkpoint's stored
paths and class names, a spec's comments quoted in a diagnostic — can hold escape
sequences that retitle the terminal, clear it, rewrite earlier lines or plant a link.
Rather than sanitise every place that prints, the command line writes through
:class:`CleanStream`, which replaces every control character but tab, newline and
carriage return (the C0 and C1 controls, DEL, and Unicode's invisible bidirectional and
format controls) with ``?`` — except the two cursor sequences tqdm's progress bars use,
moving up a line and erasing it, which do nothing worse than a carriage return.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
from collections.abc import Iterator

# tqdm's two sequences (up one line; erase the line), else one unsafe character
_UNSAFE = re.compile("\x1b\\[[AK]|([\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069])")


def clean(text: str) -> str:
    """``text`` with every unsafe control character made ``?``."""
    return _UNSAFE.sub(lambda m: "?" if m.group(1) else m.group(0), text)


class CleanStream(io.TextIOBase):
    """A text stream that writes :func:`clean` text to another."""

    def __init__(self, stream):
        super().__init__()
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(clean(text))
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self) -> str:
        return getattr(self._stream, "encoding", "utf-8")

    @property
    def errors(self) -> str | None:
        return getattr(self._stream, "errors", None)


@contextlib.contextmanager
def clean_output() -> Iterator[None]:
    """stdout and stderr written through :class:`CleanStream` within the block."""
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = CleanStream(out), CleanStream(err)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = out, err
