"""Reading torch checkpoint files that may be hostile: nothing in them runs, nothing
they declare is allocated before it is checked.

Every checkpoint gelanc reads — its own, the reference's, ultralytics', a label
cache — comes through :func:`read`, in three steps:

1. **Container.** The file is at most ``MAX_CHECKPOINT_BYTES``. It is a torch zip
   archive (``torch.save``'s format since torch 1.6, read with torch's own archive
   reader, so what is checked is what torch will load) or the legacy stream (three
   small records — magic number, protocol, system info — then the pickle, the
   storage keys and the raw storages). Anything else, the tar format of torch < 0.4
   included, is refused.
2. **Survey.** Every pickle in the file — the legacy records too — is walked by a
   dry-run unpickler that builds nothing: each global the pickle names must be on
   the allowlist below (torch's tensor rebuilders, containers, storage types, and,
   where the caller asks for ``record`` prefixes, the classes of foreign code, which
   become inert :class:`Record` s); each storage it declares must match the bytes the
   file holds for it (the archive member's size, or the legacy size header and what
   is left of the file); each tensor must fit its storage. A refusal names what was
   refused and runs nothing.
3. **Load.** ``torch.load(weights_only=True)`` — torch's own restricted unpickler,
   with the records registered as safe globals under the names the file uses — on
   the same open file.

So two allowlists, ours and torch's, stand between a file and any callable, and the
only memory a file gets is what its own bytes justify.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
import struct
import warnings
from pathlib import Path
from typing import IO, Any

import torch

from gelanc.errors import UserError
from gelanc.limits import MAX_CHECKPOINT_BYTES, MAX_PICKLE_BYTES

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
LEGACY_PROTOCOL = 1001
MAX_DIMS = 64  # torch's own limit on a tensor's dimensions


class CheckpointError(UserError):
    """A file that is not a readable checkpoint (a user error: exit 2)."""


class UnsafePickle(CheckpointError, pickle.UnpicklingError):
    """The file names a callable that loading a checkpoint has no business calling."""


def printable(text: Any, limit: int = 80) -> str:
    """Foreign text fit to print: printable characters only (any script; no control or
    format character, no line break), bounded in length.

    Names found in a hostile file could carry terminal escapes or pages of text."""
    s = "".join(c if c.isprintable() else "?" for c in str(text))
    return s if len(s) <= limit else s[: limit - 1] + "…"


# ---- records: objects of classes we do not import ------------------------------------


class Record:
    """Stands in for an object of a class we do not import: its class path and state."""

    cls_path = "?"
    args: tuple = ()
    kwargs: dict = {}
    state: dict = {}

    def __init__(self, *args, **kwargs):  # a REDUCE of the class: remember the arguments, run nothing
        self.args, self.kwargs, self.state = args, kwargs, {}

    def __setstate__(self, state):
        self.state = state if isinstance(state, dict) else {"__state__": state}

    def __repr__(self) -> str:
        return f"<record of {self.cls_path}>"


_records: dict[str, type[Record]] = {}


def record_class(path: str) -> type[Record]:
    """One Record subclass per class path, so records of the same class share a type."""
    if path not in _records:
        name = path.rsplit(".", 1)[-1]
        _records[path] = type(name if name.isidentifier() else "Record", (Record,),
                              {"cls_path": path, "__module__": __name__})
    return _records[path]


def _reconstructor(cls, base, state):
    """copyreg._reconstructor, for records only (it would call ``base.__new__(cls)``)."""
    if not (isinstance(cls, type) and issubclass(cls, Record)) or base is not object:
        raise UnsafePickle("copyreg._reconstructor of something other than a recorded class")
    obj = cls()
    if state is not None:
        obj.__setstate__(state)
    return obj


class NumpyDType:
    """A numpy dtype named in a pickle (numpy is not imported to read one)."""

    def __init__(self, name="", *args):
        self.name = name if isinstance(name, str) else "?"

    def __setstate__(self, state):
        pass


def _numpy_scalar(dtype, data: bytes | None = None):
    """numpy's scalar reconstruction, as a Python number."""
    import numpy as np

    if not isinstance(data, bytes) or not isinstance(dtype, NumpyDType):
        raise UnsafePickle("a numpy scalar without its dtype and bytes")
    try:
        dt = np.dtype(dtype.name)
        if dt.kind not in "biuf" or dt.itemsize != len(data):
            raise TypeError(dt)
        return np.frombuffer(data, dtype=dt)[0].item()
    except TypeError:
        raise UnsafePickle("a numpy scalar of a type a checkpoint does not need") from None


def _path(*parts):
    if not all(isinstance(p, str) for p in parts):
        raise UnsafePickle("a path made of something other than text")
    return "/".join(parts)


# What a checkpoint's pickle may name besides torch's own tensor rebuilders and storage
# types: values and containers, and the few foreign functions above, which return data.
EXTRA_GLOBALS: dict[str, Any] = {
    "copyreg._reconstructor": _reconstructor,
    "numpy.core.multiarray.scalar": _numpy_scalar,
    "numpy._core.multiarray.scalar": _numpy_scalar,
    "numpy.dtype": NumpyDType,
    "pathlib.PosixPath": _path,
    "pathlib.WindowsPath": _path,
}
CONTAINERS: dict[str, Any] = {
    "collections.OrderedDict": collections.OrderedDict,
    "builtins.set": set,
    "builtins.frozenset": frozenset,
    "builtins.slice": slice,
    "torch.Size": torch.Size,
    "torch.device": torch.device,
}
REBUILDERS = ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_parameter", "_rebuild_parameter_with_state")


def _canonical(module: str, name: str) -> tuple[str, str]:
    """Protocol 2 writes Python 2's names (__builtin__, copy_reg): read them as Python 3's."""
    import _compat_pickle

    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def _storage_dtype(name: str) -> torch.dtype | None:
    from torch.serialization import StorageType

    try:
        return StorageType(name).dtype if name.endswith("Storage") else None
    except (KeyError, AttributeError):
        return None


# ---- the survey: a dry run that builds nothing ------------------------------------------


class _Stub:
    """Whatever the dry run builds in place of an object."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


class _StorageType(_Stub):
    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype


class _Storage(_Stub):
    def __init__(self, key: str, numel: int):
        self.key, self.numel = key, numel


class Survey:
    """What a file's pickles ask for, checked as they are walked."""

    def __init__(self, records: tuple[str, ...]):
        self.records = records
        self.recorded: set[str] = set()  # class paths that become records
        self.storages: dict[str, tuple[torch.dtype, int]] = {}  # key → (dtype, elements)

    def unpickler(self, f: IO[bytes]) -> pickle.Unpickler:
        survey = self

        # Python's own unpickler, not the C one: the C one keeps its memo in an array that a
        # single LONG_BINPUT of index 2^28 grows (and zero-fills) to gigabytes; this one's
        # memo is a dict, so a memo entry costs what one entry costs
        class DryRun(pickle._Unpickler):  # noqa: SLF001 - the pure-Python implementation, on purpose
            def find_class(self, module, name):
                return survey.find_class(module, name)

            def persistent_load(self, pid):
                return survey.storage(pid)

        return DryRun(f)

    def find_class(self, module: str, name: str):
        module, name = _canonical(module, name)
        path = f"{module}.{name}"
        if module == "torch._utils" and name in REBUILDERS:
            return self.rebuild_parameter if "parameter" in name else self.rebuild_tensor
        if module == "torch":
            dtype = _storage_dtype(name)
            if dtype is not None:
                return _StorageType(dtype)
            if isinstance(getattr(torch, name, None), torch.dtype):
                return getattr(torch, name)  # a dtype is a value, not a callable
        if path in CONTAINERS:
            return CONTAINERS[path]
        if path in EXTRA_GLOBALS:
            return _Stub
        if self.records and (module.startswith(self.records) or f"{module}." in self.records):
            self.recorded.add(path)
            return _Stub
        raise UnsafePickle(f"the file asks to call {printable(path)}; a checkpoint never needs it, "
                           f"so nothing was loaded (is this file what it claims to be?)")

    def storage(self, pid) -> _Storage:
        """A declared storage: ('storage', type, key, location, elements[, view])."""
        if isinstance(pid, tuple) and pid[:1] in (("module",), (b"module",)):
            # ('module', class, file, source): torch's safe loader refuses these, and so do we
            raise CheckpointError("a legacy-format file that pickles whole modules with their source code; "
                                  "re-save it with torch.save in the zip format (torch >= 1.6)")
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] in ("storage", b"storage")):
            raise CheckpointError("a storage reference of an unknown form")
        kind, key, numel = pid[1], pid[2], pid[4]
        if not isinstance(kind, _StorageType) or not isinstance(key, (str, int)) or type(numel) is not int:
            raise CheckpointError("a storage reference of an unknown form")
        if numel < 0:
            raise CheckpointError("a storage of negative size")
        key = str(key)
        known = self.storages.setdefault(key, (kind.dtype, numel))
        if known[0].itemsize * known[1] != kind.dtype.itemsize * numel and len(pid) < 6:
            raise CheckpointError(f"storage {printable(key)} is declared with two sizes")
        view = pid[5] if len(pid) > 5 else None
        if view is not None:  # (view key, offset, elements) inside the root storage (legacy files)
            if not (isinstance(view, tuple) and len(view) == 3 and all(type(v) is int for v in view[1:])):
                raise CheckpointError("a storage view of an unknown form")
            if view[1] < 0 or view[2] < 0 or view[1] + view[2] > numel:
                raise CheckpointError("a storage view outside its storage")
            return _Storage(key, view[2])
        return _Storage(key, numel)

    def rebuild_tensor(self, storage, offset, size, stride, *rest):
        if not isinstance(storage, _Storage):
            raise CheckpointError("a tensor without a storage")
        if not (_ints(size) and _ints(stride) and len(size) == len(stride) <= MAX_DIMS and type(offset) is int):
            raise CheckpointError("a tensor of an unknown form")
        if offset < 0 or any(v < 0 for v in (*size, *stride)):
            raise CheckpointError("a tensor with a negative size, stride or offset")
        if 0 not in size and offset + sum((n - 1) * s for n, s in zip(size, stride)) >= storage.numel:
            raise CheckpointError("a tensor that reaches past the end of its storage")
        if math.prod(size) > storage.numel:
            # only a zero or overlapping stride makes more values than are stored: one stored
            # value "expanded" to a billion, which any copy (.float(), a load) then allocates
            raise CheckpointError("a tensor of more values than its storage holds (a zero or overlapping stride)")
        return _Stub()

    def rebuild_parameter(self, data, *rest):
        return _Stub()


def _ints(v) -> bool:
    return isinstance(v, (tuple, list)) and all(type(i) is int for i in v)


def _dry_run(survey: Survey, f: IO[bytes]) -> Any:
    try:
        return survey.unpickler(f).load()
    except CheckpointError:
        raise
    except RecursionError:
        raise CheckpointError("a pickle nested too deeply") from None
    except (Exception, MemoryError) as e:  # noqa: BLE001 - a broken pickle, whatever broke
        raise CheckpointError(f"a damaged pickle ({type(e).__name__})") from None


def _survey_zip(survey: Survey, f: IO[bytes], size: int) -> None:
    try:
        reader = torch._C.PyTorchFileReader(f)
        names = reader.get_all_records()
        sizes = {n: reader.get_record_size(n) for n in names}
    except Exception:  # noqa: BLE001 - torch's archive reader rejects it
        raise CheckpointError("a damaged zip archive") from None
    if sum(sizes.values()) > size:  # stored members only: compressed ones could expand past any bound
        raise CheckpointError("its archive declares more data than the file holds")
    if "data.pkl" not in sizes:
        raise CheckpointError("a zip archive without a torch pickle (data.pkl)")
    if sizes["data.pkl"] > MAX_PICKLE_BYTES:
        raise CheckpointError(f"its pickle is larger than {MAX_PICKLE_BYTES >> 20} MiB")
    try:
        pkl = reader.get_record("data.pkl")
    except Exception:  # noqa: BLE001
        raise CheckpointError("a damaged zip archive") from None
    _dry_run(survey, io.BytesIO(pkl))
    for key, (dtype, numel) in survey.storages.items():
        have = sizes.get(f"data/{key}")
        if have is None:
            raise CheckpointError(f"storage {printable(key)} is missing from the archive")
        if have != numel * dtype.itemsize:
            raise CheckpointError(f"storage {printable(key)} declares {numel * dtype.itemsize} bytes "
                                  f"but the archive holds {have}")


def _survey_legacy(survey: Survey, f: IO[bytes], size: int) -> None:
    header = [_dry_run(survey, f) for _ in range(3)]
    if header[0] != LEGACY_MAGIC or header[1] != LEGACY_PROTOCOL or not isinstance(header[2], dict):
        raise CheckpointError("neither a torch zip archive nor a torch legacy file")
    if header[2].get("little_endian") is not True:
        raise CheckpointError("a big-endian legacy file (not supported)")
    start = f.tell()
    _dry_run(survey, f)
    if f.tell() - start > MAX_PICKLE_BYTES:
        raise CheckpointError(f"its pickle is larger than {MAX_PICKLE_BYTES >> 20} MiB")
    keys = _dry_run(survey, f)
    if not (isinstance(keys, list) and all(isinstance(k, (str, int)) for k in keys)):
        raise CheckpointError("a legacy file whose storage list is damaged")
    keys = [str(k) for k in keys]
    if sorted(set(keys)) != sorted(survey.storages):
        raise CheckpointError("a legacy file whose storages do not match its pickle")
    for key in keys:  # each storage: its element count, then its bytes
        dtype, numel = survey.storages[key]
        raw = f.read(8)
        if len(raw) < 8 or struct.unpack("<q", raw)[0] != numel:
            raise CheckpointError(f"storage {printable(key)} does not hold the size its pickle declares")
        nbytes = numel * dtype.itemsize
        if f.tell() + nbytes > size:
            raise CheckpointError("the file ends before its last storage (truncated?)")
        f.seek(nbytes, io.SEEK_CUR)


def _container(f: IO[bytes]) -> str:
    head = f.read(512)
    f.seek(0)
    if head[:4] == b"PK\x03\x04":
        return "zip"
    if len(head) >= 262 and head[257:262] == b"ustar":
        raise CheckpointError("a torch file of the tar format (torch < 0.4), which gelanc does not read")
    if head[:1] == b"\x80":
        return "legacy"
    raise CheckpointError("neither a torch zip archive nor a torch legacy file")


# ---- reading ------------------------------------------------------------------------


def read(path: str | Path, record: tuple[str, ...] = ()) -> Any:
    """The object a torch checkpoint file holds, read as the module docstring says.

    ``record``: module prefixes (``"models."``) whose classes become :class:`Record` s;
    with none, only tensors, numbers, strings and containers may appear. Raises
    :class:`CheckpointError` (or its :class:`UnsafePickle`) naming the problem."""
    from gelanc.files import NotRegularFile, open_regular

    path = Path(path)
    try:
        f, _ = open_regular(path)  # a FIFO named x.pt must not block the open forever
    except FileNotFoundError:
        raise CheckpointError(f"no such checkpoint: {path}") from None
    except NotRegularFile:
        if path.is_dir():
            raise CheckpointError(f"{path} is a folder, not a checkpoint") from None
        raise CheckpointError(f"{path} is not a regular file (a FIFO, a device or a socket)") from None
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from None
    with f:
        try:
            return _read(f, record)
        except UnsafePickle as e:
            raise UnsafePickle(f"{path}: {e}") from None
        except CheckpointError as e:
            raise CheckpointError(f"{path} is not a readable checkpoint: {e}") from None
        except OSError as e:
            raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from None


def _read(f: IO[bytes], record: tuple[str, ...]) -> Any:
    import os
    import stat

    st = os.fstat(f.fileno())
    if not stat.S_ISREG(st.st_mode):
        raise CheckpointError("not a regular file")
    if st.st_size > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"{st.st_size >> 20} MiB, over the {MAX_CHECKPOINT_BYTES >> 30} GiB limit")
    survey = Survey(record)
    kind = _container(f)
    (_survey_zip if kind == "zip" else _survey_legacy)(survey, f, st.st_size)
    f.seek(0)
    allowed = [(fn, name) for name, fn in EXTRA_GLOBALS.items()]
    allowed += [(fn, name) for name, fn in CONTAINERS.items()]
    allowed += [(record_class(p), p) for p in sorted(survey.recorded)]
    try:
        with torch.serialization.safe_globals(allowed), warnings.catch_warnings():
            # a legacy file's module sources never match a record's: torch's warning says nothing
            warnings.simplefilter("ignore")
            return torch.load(f, map_location="cpu", weights_only=True)
    except UnsafePickle:
        raise
    except pickle.UnpicklingError:  # torch's allowlist refused what ours let through
        raise UnsafePickle("the file asks for something torch's safe loader refuses; nothing was loaded") from None
    except (Exception, MemoryError) as e:  # noqa: BLE001 - torch's message may quote the file, and advise unsafe loading
        raise CheckpointError(f"torch could not load it ({type(e).__name__})") from None
