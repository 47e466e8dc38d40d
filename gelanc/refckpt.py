"""Reading checkpoints of the reference YOLOv9 code without its code, and without
running anything from the file.

A reference checkpoint (``yolov9-c.pt``, ``gelan-c.pt``, ``*-converted.pt``) is a torch
pickle of ``{"model": <models.yolo.DetectionModel>, "ema": …, "epoch": …, "opt": …}``:
the modules are the reference's own Python classes. Unpickling it the ordinary way
imports those classes — and a pickle may name any callable, ``os.system`` included.

:func:`read` unpickles with a restricted ``find_class``:

* the few callables a torch checkpoint needs to rebuild tensors and containers
  (``torch._utils._rebuild_tensor_v2``, ``collections.OrderedDict``, …) are allowed;
* every class of the reference's packages (``models.*``, ``utils.*``), of
  ultralytics, or of ``torch.nn`` becomes a :class:`Record` — an inert object that
  only remembers its class's path and the state the pickle gives it — so no class of
  the file is imported or constructed;
* anything else is refused with :class:`UnsafePickle`, before it is called.

:func:`tensors` then flattens a record tree into ``{"model.0.conv.weight": tensor}``,
the module's parameters and buffers, as ``state_dict()`` would name them.
"""

from __future__ import annotations

import collections
import pickle
from pathlib import Path
from typing import Any

import torch

# Modules whose classes become records: the reference's packages, ultralytics', torch.nn's.
RECORDED = ("models.", "utils.", "ultralytics.", "torch.nn.modules.", "torch.nn.parameter", "__main__")


class UnsafePickle(pickle.UnpicklingError):
    """The file names a callable that loading a checkpoint has no business calling."""


class Record:
    """Stands in for an object of a class we do not import: its class path and state."""

    cls_path = "?"

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
        _records[path] = type(path.rsplit(".", 1)[-1], (Record,), {"cls_path": path, "__module__": __name__})
    return _records[path]


def _reconstructor(cls, base, state):
    """copyreg._reconstructor, for records only (it would call ``base.__new__(cls)``)."""
    if not (isinstance(cls, type) and issubclass(cls, Record)) or base is not object:
        raise UnsafePickle(f"copyreg._reconstructor of {cls!r} from {base!r}")
    obj = cls()
    if state is not None:
        obj.__setstate__(state)
    return obj


def _numpy_scalar(dtype, data: bytes | None = None):
    """numpy's scalar reconstruction, as a Python number (numpy is not imported for it)."""
    import numpy as np

    if data is None:
        raise UnsafePickle("numpy scalar without data")
    return np.frombuffer(data, dtype=np.dtype(dtype) if not isinstance(dtype, np.dtype) else dtype)[0].item()


def _numpy_dtype(name, *args):
    import numpy as np

    return np.dtype(name)


ALLOWED: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "object"): object,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "dtype"): _numpy_dtype,
    ("pathlib", "PosixPath"): lambda *parts: str(Path(*parts)),
    ("pathlib", "WindowsPath"): lambda *parts: "\\".join(parts),
}


class Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        import _compat_pickle

        # protocol 2 writes Python 2's names (__builtin__, copy_reg): read them as Python 3's
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in ALLOWED:
            return ALLOWED[(module, name)]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)  # a dtype is a value, not a callable
        if module.startswith(RECORDED) or module in ("models", "utils", "ultralytics"):
            return record_class(f"{module}.{name}")
        raise UnsafePickle(f"the file asks to call {module}.{name}; a checkpoint never needs it, so nothing "
                           f"was loaded (is this file what it claims to be?)")


class _PickleModule:
    """What ``torch.load(pickle_module=…)`` expects: pickle with our Unpickler."""

    Unpickler = Unpickler
    load = staticmethod(pickle.load)
    __name__ = "gelanc.refckpt"


class ReferenceCheckpointError(Exception):
    """Not a readable reference checkpoint (a user error: exit 2)."""


def read(path: str | Path) -> dict:
    """The checkpoint's top-level dict, every reference object in it a :class:`Record`."""
    path = Path(path)
    if not path.is_file():
        raise ReferenceCheckpointError(f"no such checkpoint: {path}")
    try:
        # weights_only=False is what lets the custom pickle module decide; it allows only the
        # tensor-rebuilding callables above, and turns every class into an inert record
        obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_PickleModule)
    except UnsafePickle:
        raise
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's problem
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ReferenceCheckpointError(f"{path} is not a readable checkpoint: {first}") from None
    if isinstance(obj, Record):
        obj = {"model": obj}
    if not isinstance(obj, dict):
        raise ReferenceCheckpointError(f"{path}: expected a dict with a 'model', found {type(obj).__name__}")
    return obj


def tensors(module: Record, prefix: str = "") -> dict[str, torch.Tensor]:
    """A recorded module's parameters and buffers by ``state_dict`` name (float32)."""
    out: dict[str, torch.Tensor] = {}
    state = module.state
    for group in ("_parameters", "_buffers"):
        for name, t in (state.get(group) or {}).items():
            if isinstance(t, torch.Tensor):
                out[prefix + name] = t.detach().float() if t.is_floating_point() else t.detach()
    for name, child in (state.get("_modules") or {}).items():
        if isinstance(child, Record):
            out.update(tensors(child, f"{prefix}{name}."))
    return out


def model_of(ckpt: dict, prefer_ema: bool = True) -> Record:
    """The checkpoint's network: its EMA where it has one (the weights the reference evaluates)."""
    for key in (("ema", "model") if prefer_ema else ("model", "ema")):
        if isinstance(ckpt.get(key), Record):
            return ckpt[key]
    raise ReferenceCheckpointError("the checkpoint holds no model ('model' and 'ema' are both empty)")
