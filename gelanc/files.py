"""Opening a file a user handed us: a regular file, without blocking, read up to a bound.

Every file gelanc reads from a user — images, label files, image lists, COCO JSON,
data.yaml and --hyp files, model YAMLs, .gel specs — comes through here. A path may
name a FIFO, a device or a folder instead of a file: a plain ``open()`` of a FIFO
blocks until a writer comes (forever), and a read of ``/dev/zero`` never ends. So the
file is opened with ``O_NONBLOCK`` (opening a FIFO returns at once), its kind is
checked on the open descriptor (``fstat``: what was opened, not what the name pointed
to a moment before), anything but a regular file is refused, and at most ``limit + 1``
bytes are read, so a file over its bound is refused without being read whole.

No torch here: the .gel loader and the data stage both import this module.
"""

from __future__ import annotations

import errno
import io
import os
import stat

# open flags: no blocking on a FIFO, no descriptor left to a child process
FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


class NotRegularFile(OSError):
    """The path names a FIFO, a device, a socket or a folder: nothing gelanc reads as a file."""

    def __init__(self, path) -> None:
        super().__init__(errno.EINVAL, "not a regular file", str(path))

    def __str__(self) -> str:
        return "not a regular file"


class TooLarge(ValueError):
    """The file holds more than its bound; ``data`` is the ``limit + 1`` bytes that were read."""

    def __init__(self, limit: int, name: str, data: bytes = b"") -> None:
        super().__init__(f"over {limit:,} bytes ({name})" if name else f"over {limit:,} bytes")
        self.limit, self.data = limit, data


def open_regular(path, *, follow: bool = True) -> tuple[io.BufferedReader, os.stat_result]:
    """The regular file at ``path``, opened for reading without blocking, and its stat.

    ``follow=False`` refuses a symbolic link in the last part of the path (``O_NOFOLLOW``).
    Raises :class:`NotRegularFile` for a FIFO, device, socket or folder, and the
    ``OSError`` of ``os.open`` otherwise (an impossible path — a NUL byte — is one too)."""
    flags = FLAGS | (0 if follow else getattr(os, "O_NOFOLLOW", 0))
    try:
        # The file object owns the descriptor from the start: ``open`` closes it itself if it
        # fails (a Ctrl-C can land inside it), and an object dropped by an interrupt closes it
        # when freed. Closing the number here as well would close it twice — the second time
        # someone else's file, opened since under the same number.
        f = open(path, "rb", opener=lambda name, _: os.open(name, flags))  # noqa: SIM115 - returned
    except IsADirectoryError:
        raise NotRegularFile(path) from None
    except ValueError:  # a NUL byte in the path
        raise OSError(errno.EINVAL, "bad path", str(path)) from None
    try:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(path)
    except BaseException:
        f.close()
        raise
    return f, st


def read_regular(path, limit: int, name: str = "", *, follow: bool = True) -> tuple[bytes, os.stat_result]:
    """All the bytes of the regular file at ``path``, and its stat, if it holds at most
    ``limit``; :class:`TooLarge` (naming the bound ``name``) when it holds more — at most
    ``limit + 1`` bytes are ever read. The errors of :func:`open_regular` otherwise."""
    f, st = open_regular(path, follow=follow)
    with f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(limit, name, data)
    return data, st


def read_bounded(path, limit: int, name: str = "") -> bytes:
    """:func:`read_regular`'s bytes alone."""
    return read_regular(path, limit, name)[0]
