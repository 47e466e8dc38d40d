"""Reading checkpoints of the reference YOLOv9 code (and ultralytics') without their
code, and without running anything from the file.

A reference checkpoint (``yolov9-c.pt``, ``gelan-c.pt``, ``*-converted.pt``) is a torch
pickle of ``{"model": <models.yolo.DetectionModel>, "ema": …, "epoch": …, "opt": …}``:
the modules are the reference's own Python classes. Unpickling it the ordinary way
imports those classes — and a pickle may name any callable, ``os.system`` included.

:func:`read` reads it with :func:`gelanc.safeload.read`, asking that every class of
the reference's packages (``models.*``, ``utils.*``), of ultralytics, or of
``torch.nn`` become a :class:`~gelanc.safeload.Record` — an inert object that only
remembers its class's path and the state the pickle gives it — so no class of the
file is imported or constructed, and anything else is refused before it is called.

:func:`tensors` then flattens a record tree into ``{"model.0.conv.weight": tensor}``,
the module's parameters and buffers, as ``state_dict()`` would name them.
"""

from __future__ import annotations

from pathlib import Path

import torch

from gelanc.safeload import CheckpointError, Record, UnsafePickle
from gelanc.safeload import read as safe_read

__all__ = ["RECORDED", "CheckpointError", "Record", "UnsafePickle", "model_of", "read", "tensors"]

# Modules whose classes become records: the reference's packages, ultralytics', torch.nn's.
RECORDED = ("models.", "utils.", "ultralytics.", "torch.nn.modules.", "torch.nn.parameter", "__main__.")


def read(path: str | Path) -> dict:
    """The checkpoint's top-level dict, every reference object in it a :class:`Record`."""
    obj = safe_read(path, record=RECORDED)
    if isinstance(obj, Record):
        obj = {"model": obj}
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict with a 'model', found {type(obj).__name__}")
    return obj


def tensors(module: Record, prefix: str = "") -> dict[str, torch.Tensor]:
    """A recorded module's parameters and buffers by ``state_dict`` name (float32).

    Walked with a stack, not recursion: a hostile file may nest modules without end."""
    out: dict[str, torch.Tensor] = {}
    todo, seen = [(module, prefix)], set()
    while todo:
        m, pre = todo.pop()
        if id(m) in seen:  # a pickle can make a module its own child
            continue
        seen.add(id(m))
        for group in ("_parameters", "_buffers"):
            for name, t in _items(m.state.get(group)):
                if isinstance(t, torch.Tensor):
                    out[pre + name] = t.detach().float() if t.is_floating_point() else t.detach()
        children = [(c, f"{pre}{name}.") for name, c in _items(m.state.get("_modules")) if isinstance(c, Record)]
        todo += reversed(children)  # popped in the module's own order
    return out


def _items(d) -> list[tuple[str, object]]:
    return [(str(k), v) for k, v in d.items()] if isinstance(d, dict) else []


def model_of(ckpt: dict, prefer_ema: bool = True) -> Record:
    """The checkpoint's network: its EMA where it has one (the weights the reference evaluates)."""
    for key in (("ema", "model") if prefer_ema else ("model", "ema")):
        if isinstance(ckpt.get(key), Record):
            return ckpt[key]
    raise CheckpointError("the checkpoint holds no model ('model' and 'ema' are both empty)")
