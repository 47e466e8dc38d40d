"""Ctrl-C that never leaves a library half-imported.

Python turns SIGINT into a KeyboardInterrupt at whatever line runs next. Inside an
import, that leaves the module half-initialised, and the library then fails later
with an unrelated error (seen here: numpy's ``AttributeError``, a recursion inside
numpy's lazy imports, a C++ abort in torch). gelanc imports torch, torchvision and
their dependencies lazily, inside its commands, so a Ctrl-C in the first seconds of
a command very likely lands in an import. While one runs, the interrupt is held back
and delivered again a moment later, once the import is over.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType

RETRY_S = 0.05


def _importing(frame: FrameType | None) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    if _importing(frame):
        retry = threading.Timer(RETRY_S, os.kill, (os.getpid(), signal.SIGINT))
        retry.daemon = True
        retry.start()
        return
    raise KeyboardInterrupt


@contextlib.contextmanager
def held_during_imports() -> Iterator[None]:
    """Within this block, a Ctrl-C that arrives during an import waits for its end."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set a signal handler (and only it receives signals)
        return
    previous = signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
