"""Whole files or nothing: every file gelanc writes goes through here.

The content is written into a private temporary folder created in the target's folder
(``.NAME.XXXXXXXX.gelanc-tmp``), synced to disk, and the file is renamed over the
target (atomic on POSIX and Windows); the folder is then removed, with anything a
writer put beside its file (ONNX external data, say). An interrupted or failed write
therefore leaves the previous file, or no file, and never half of one.

What may be replaced is only a regular file or nothing: a symbolic link, FIFO, socket,
device node or folder at the target is refused (:class:`UnsafeTarget`) and left as it
is — checked with ``os.lstat`` before the work and again right before the rename. A
small race remains: something created at the target between that last check and the
rename is replaced by the rename (which never writes *through* a link or into a
device; it swaps a directory entry). Closing it would need ``renameat2`` flags that
Python does not expose, and it takes someone who can already write in that folder.

A write that fails (a full disk, no permission) raises :class:`WriteError`, an
``OSError`` whose message names the target and the reason, after removing everything
the attempt made. Writers stream through :func:`write_stream`, whose file never
accepts part of a buffer: torch's C++ zip writer turns a short write into an opaque
``RuntimeError`` (or, in ``torch.jit``/``torch.export``, an abort of the process), a
full disk must read as ``ENOSPC``.
"""

from __future__ import annotations

import errno
import io
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO, NoReturn

from gelanc.errors import UserError

TEMP_SUFFIX = ".gelanc-tmp"
_RANDOM = r"[a-z0-9_]{8}"  # what tempfile puts between prefix and suffix
_PREFIX_CHARS = 200  # of the target's name in a temporary name: 1 + 200 + 1 + 8 + 11 stays under NAME_MAX (255)


class UnsafeTarget(OSError, UserError):
    """A write refused: the target is not a regular file, or it is one of the command's
    inputs (a user error: exit 2). Nothing was written and the target is unchanged."""

    def __str__(self) -> str:
        return f"refusing to write {self.filename}: {self.strerror}"


class WriteError(OSError, UserError):
    """A write that failed (disk full, no permission, …); the target is as it was and
    nothing of the attempt is left."""

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror}"


def _kind(mode: int) -> str | None:
    """What is at a path, when it is not something gelanc may replace."""
    for test, name in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return None if stat.S_ISREG(mode) else "not a regular file"


def check_target(path: str | Path) -> None:
    """Nothing, or a regular file, at ``path``; otherwise :class:`UnsafeTarget`."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except NotADirectoryError:
        return  # a file where a parent folder should be: the write fails as a WriteError
    kind = _kind(mode)
    if kind:
        raise UnsafeTarget(errno.EEXIST, f"it is {kind} (gelanc replaces only regular files; left unchanged)",
                           str(path))


def input_ids(paths: Iterable[str | Path]) -> dict[tuple[int, int], str | Path]:
    """The files ``paths`` name, by identity (device, inode): how :func:`check_not_input`
    recognises one under any of its names (a link, ``./``, another spelling)."""
    ids: dict[tuple[int, int], str | Path] = {}
    for p in paths:
        try:
            s = os.stat(p)
        except OSError:
            continue  # not there: nothing to protect
        ids.setdefault((s.st_dev, s.st_ino), p)
    return ids


def check_not_input(target: str | Path, inputs: Iterable[str | Path] | dict[tuple[int, int], str | Path]) -> None:
    """Refuse a ``target`` that is one of the command's ``inputs`` (paths, or their
    :func:`input_ids`): the same file by any path."""
    try:
        t = os.stat(target)
    except OSError:
        return  # nothing there yet: it cannot be an input
    ids = inputs if isinstance(inputs, dict) else input_ids(inputs)
    p = ids.get((t.st_dev, t.st_ino))
    if p is not None:
        raise UnsafeTarget(errno.EEXIST, f"it is the input {p} (gelanc never writes over its inputs)", str(target))


def _reraise(path: Path, e: OSError) -> NoReturn:
    """Raise ``e`` as the error of writing ``path`` (one line naming it and the reason)."""
    if isinstance(e, (UnsafeTarget, WriteError)):
        raise e
    raise WriteError(e.errno or errno.EIO, e.strerror or str(e) or type(e).__name__, str(path)) from e


def _disk_full(folder: Path) -> bool:
    """Whether ``folder``'s filesystem has no space left for an unprivileged writer."""
    try:
        return os.statvfs(folder).f_bavail == 0
    except (OSError, AttributeError):  # no statvfs on Windows
        return False


def _temp_folder(folder: Path, name: str) -> Path:
    """A new private folder in ``folder`` (made if need be) for writing ``name``."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{name[:_PREFIX_CHARS]}.", suffix=TEMP_SUFFIX, dir=folder))
    except OSError as e:
        _reraise(folder / name, e)


def _sync(path: Path) -> None:
    """The file's bytes on disk before the rename makes them the target's: after a power
    loss the target is the old file or the new one, not an empty one."""
    try:
        fd = os.open(path, os.O_RDWR)  # Windows syncs only a file open for writing
    except PermissionError:  # a writer that made its file read-only
        fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fill(path: Path, tmp: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)``, with the failures of writers that do not raise OSError made into one."""
    try:
        write(tmp)
    except OSError:
        raise
    except Exception:
        # a C++ writer (torch.save to a path) reports a full disk as a RuntimeError
        if not _disk_full(tmp.parent):
            raise
    else:
        _sync(tmp)
        return
    # raised out here, without the C++ error: its traceback holds the writer, which holds
    # the file open (and its space taken) for as long as the error lives
    raise WriteError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` to fill a temporary file, then move it to ``path``."""
    path = Path(path)
    check_target(path)  # before the work, which may be long (an export)
    folder = _temp_folder(path.parent, path.name)
    tmp = folder / path.name
    try:
        _fill(path, tmp, write)
        check_target(path)  # again right before the rename (see the module's note on the race)
        os.replace(tmp, path)
    except OSError as e:
        _reraise(path, e)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return path


class _Sink(io.RawIOBase):
    """A file descriptor that takes every byte it is given, or raises the OSError — and
    keeps raising it: once a write has failed, the file is lost. A Ctrl-C that lands in
    a write is kept the same way, so that it is not lost inside a C++ writer either."""

    def __init__(self, fd: int):
        super().__init__()
        self._fd = fd
        self.error: OSError | KeyboardInterrupt | None = None

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if self.error is not None:
            raise self.error
        view = memoryview(data).cast("B")
        total = len(view)
        try:
            while view:
                view = view[self._write_some(view):]
        except (OSError, KeyboardInterrupt) as e:
            self.error = e
            raise
        return total

    def _write_some(self, view: memoryview) -> int:
        return os.write(self._fd, view)  # may write less than asked (a short write), never silently fail


def write_stream(tmp: str | Path, dump: Callable[[BinaryIO], None]) -> None:
    """Create the file ``tmp`` and fill it through ``dump(f)`` — every byte, or an OSError."""
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    sink = _Sink(fd)
    try:
        dump(sink)  # type: ignore[arg-type]
    except Exception as e:
        # torch.save's C++ writer turns what its Python file raised into a RuntimeError of
        # its own ("unexpected pos …"), and closing its archive fails again: the failed
        # write (or the Ctrl-C that landed in it) is the cause
        if sink.error is not None and e is not sink.error:
            raise sink.error from None
        raise
    finally:
        os.close(fd)


def atomic_dump(path: str | Path, dump: Callable[[BinaryIO], None]) -> Path:
    """``dump(f)`` into a binary file, whole or not at all (torch.save, torch.jit.save …)."""
    return atomic_write(path, lambda tmp: write_stream(tmp, dump))


def write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_dump(path, lambda f: f.write(data))


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def atomic_copy(src: str | Path, dst: str | Path) -> Path:
    """``dst`` becomes a copy of ``src``, whole or not at all: a hard link where the
    filesystem has them (no second copy of the bytes, so no space to run out of),
    else a copy. Safe because gelanc replaces files and never rewrites one in place."""

    def link_or_copy(tmp: Path) -> None:
        try:
            os.link(src, tmp)
        except OSError:
            with open(src, "rb") as f:
                write_stream(tmp, lambda out: shutil.copyfileobj(f, out, 1 << 20))

    return atomic_write(dst, link_or_copy)


def write_all(folder: str | Path, writers: dict[str, Callable[[Path], None]]) -> dict[str, Path]:
    """Write several files into ``folder``, all of them or none.

    Every file is first written whole into one temporary folder; only then are they
    renamed into place. If a rename fails, those already renamed are put back as they
    were: a file that was there before is restored from a hard link taken before it was
    replaced (where the filesystem cannot link, it is kept as written), a new one is
    removed. Files of ``folder`` that this call does not name are never touched."""
    folder = Path(folder)
    targets = {name: folder / name for name in writers}
    for t in targets.values():
        check_target(t)
    created = not folder.exists()
    stage: Path | None = None
    done: list[tuple[Path, Path | None]] = []  # (target, the old file's hard link, or None if there was none)
    try:
        try:
            stage = _temp_folder(folder, "batch")
        except WriteError as e:  # the folder's fault: name it, not the staging folder's name
            raise WriteError(e.errno, e.strerror, str(folder)) from None
        new, old = stage / "new", stage / "old"
        new.mkdir()
        old.mkdir()
        for name, write in writers.items():
            try:
                _fill(targets[name], new / name, write)
            except WriteError as e:  # a writer that writes atomically itself names the staged file
                raise WriteError(e.errno, e.strerror, str(targets[name])) from e
            except OSError as e:
                _reraise(targets[name], e)
        for name, target in targets.items():
            try:
                check_target(target)
                kept = _keep(target, old / name)
                os.replace(new / name, target)
            except OSError as e:
                _reraise(target, e)
            done.append((target, kept))
    except BaseException:
        _put_back(done)
        _remove(stage)
        if created:
            with _quiet():
                folder.rmdir()  # only if empty: the folder this call made, and nothing else in it
        raise
    _remove(stage)
    return targets


def _remove(stage: Path | None) -> None:
    if stage is not None:
        shutil.rmtree(stage, ignore_errors=True)


def _keep(target: Path, backup: Path) -> Path | None:
    """A hard link to the file at ``target`` (to restore it), or None if there is none."""
    if not target.exists():
        return None
    try:
        os.link(target, backup)
    except OSError:
        return target  # no hard links here: what is written stays (see write_all)
    return backup


def _put_back(done: list[tuple[Path, Path | None]]) -> None:
    for target, old in reversed(done):
        with _quiet():
            if old is None:
                target.unlink()
            elif old != target:
                os.replace(old, target)


class _quiet:
    """Ignore an OSError while undoing: the error being raised is the one to report."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, value, tb) -> bool:
        return kind is not None and issubclass(kind, OSError)


def stale_temps(folder: str | Path, names: Iterable[str]) -> list[Path]:
    """gelanc's own leftovers in ``folder`` from writes of ``names`` that were killed: the
    temporary folders this module makes, and the files of its earlier versions
    (``.last.pt.XXXXXXXX.pt``). Nothing else matches: a name, 8 random characters, the
    suffix, and of the right kind (a real folder, or a regular file)."""
    folder = Path(folder)
    patterns = []
    for name in names:
        stem = re.escape(name[:_PREFIX_CHARS])
        patterns.append((re.compile(rf"\.{stem}\.{_RANDOM}{re.escape(TEMP_SUFFIX)}"), stat.S_ISDIR))
        patterns.append((re.compile(rf"\.{re.escape(name)}\.{_RANDOM}{re.escape(Path(name).suffix)}"), stat.S_ISREG))
    found = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    for entry in entries:
        for pattern, kind in patterns:
            if pattern.fullmatch(entry.name) and kind(entry.stat(follow_symlinks=False).st_mode):
                found.append(Path(entry.path))
                break
    return sorted(found)


def remove_stale_temps(folder: str | Path, names: Iterable[str]) -> list[Path]:
    """Remove :func:`stale_temps`; returns what was removed. Only for a folder no other
    process is writing ``names`` into (a run's own folder, as it starts)."""
    removed = []
    for p in stale_temps(folder, names):
        with _quiet():
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
    return removed


def check_folder(path: str | Path) -> None:
    """``path`` is a folder gelanc can write in, or can create: else a :class:`WriteError`
    saying why.

    Checked by trying (a nameless temporary file in the folder, or in its nearest
    existing parent), not by permission bits, which say nothing of read-only mounts,
    ACLs or root."""
    path = Path(path)
    probe = path
    while not probe.exists() and probe.parent != probe:
        if probe.is_symlink():
            raise WriteError(errno.ENOENT, f"{probe} is a symbolic link to nothing", str(path))
        probe = probe.parent
    if not probe.is_dir():
        where = "it is a file" if probe == path else f"{probe} is a file"
        raise WriteError(errno.ENOTDIR, f"{where}, not a folder", str(path))
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        raise WriteError(e.errno or errno.EACCES, e.strerror or str(e), str(path)) from None


def check_parent(path: str | Path) -> None:
    """The folder ``path`` goes in is one gelanc can write in, or create
    (:func:`check_folder`); else a :class:`WriteError` naming ``path``."""
    path = Path(path)
    try:
        check_folder(path.parent)
    except WriteError as e:
        reason = e.strerror or ""
        if reason.startswith("it is a file"):  # check_folder's "it" is the folder
            reason = f"{path.parent} is a file, not a folder"
        raise WriteError(e.errno, reason, str(path)) from None


def check_output(path: str | Path, inputs: Iterable[str | Path] = ()) -> None:
    """Before a command's work, what its write of the file ``path`` would refuse or fail
    on: a folder that is a file, or that gelanc cannot write in or create
    (:func:`check_parent`); something other than a regular file at ``path``
    (:func:`check_target`); one of the command's ``inputs`` (:func:`check_not_input`).
    Raises :class:`WriteError` or :class:`UnsafeTarget` naming ``path``, as the write would."""
    check_parent(path)
    check_target(path)
    check_not_input(path, inputs)


def atomic_save(obj, path: str | Path) -> Path:
    """torch.save, whole or not at all: a full disk or a refused target is a
    :class:`gelanc.atomic.WriteError` / :class:`~gelanc.atomic.UnsafeTarget` (OSErrors)
    and leaves the previous file. torch writes through a Python file (not a path): its
    C++ writer reports a failed write of a path as an opaque RuntimeError."""
    import torch

    return atomic_dump(path, lambda f: torch.save(obj, f))
