"""Fixtures shared by the test files."""

import errno
import os

import pytest


@pytest.fixture
def disk_fills_after(monkeypatch):
    """``disk_fills_after(after)``: from now on every streamed write (gelanc.atomic's file) fails
    with ENOSPC once ``after`` bytes are written — the last system call writes what still
    fits (a short write), the next one raises, as on a real full disk."""
    from gelanc import atomic

    def fill(after: int = 0) -> None:
        written = [0]

        def write_some(self, view):
            room = after - written[0]
            if room <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            n = os.write(self._fd, view[:room])
            written[0] += n
            return n

        monkeypatch.setattr(atomic._Sink, "_write_some", write_some)

    return fill
