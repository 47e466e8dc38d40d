"""The checkpoint format every command uses: weights beside the `.gel` source.

A checkpoint is a plain dict — strings, numbers, lists and tensors only — so that
``torch.load(path, weights_only=True)`` reads it: loading a file never runs code
from it. It embeds the spec's source and every file it imports, so the model can
be rebuilt without the original files::

    {"format": "gelanc-checkpoint", "version": 1,
     "meta": {"model", "root", "sources", "links", "params", "deployed"},
     "state_dict": {...}}

Writes go to a temporary file in the target folder, then rename over the target:
a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import fx

from gelanc.atomic import atomic_write

FORMAT, VERSION = "gelanc-checkpoint", 1


class CheckpointError(Exception):
    """A file that is not a readable gelanc checkpoint (a user error: exit 2)."""


class SpecMeta(BaseModel):
    """What rebuilds the network: the spec, its imports, and the model's parameters."""

    model_config = ConfigDict(extra="forbid")
    model: str
    root: str
    sources: dict[str, str]
    links: dict[str, dict[str, str]]
    params: dict[str, Any]
    deployed: bool = False


def meta_of(gm: fx.GraphModule) -> SpecMeta:
    from gelanc.torch_fx import ir_of

    g = ir_of(gm)
    info = gm.meta["gelanc"]
    return SpecMeta(model=g.graph["model"], root=g.graph["file"], sources=g.graph["source"],
                    links=g.graph.get("links", {}), params=g.graph["params"],
                    deployed=bool(info.get("deployed")))


def atomic_save(obj: Any, path: str | Path) -> Path:
    """torch.save, whole or not at all."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def save(gm: fx.GraphModule, path: str | Path, **extra: Any) -> Path:
    """Write ``gm`` (train or deploy graph) as a checkpoint; ``extra`` keys are kept beside."""
    ckpt = {"format": FORMAT, "version": VERSION, "meta": meta_of(gm).model_dump(),
            "state_dict": {k: v.detach().cpu() for k, v in gm.state_dict().items()}, **extra}
    return atomic_save(ckpt, path)


def read(path: str | Path) -> dict:
    """The checkpoint's dict, read without executing anything from the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no such checkpoint: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's problem
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path} is not a readable checkpoint: {first}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a gelanc checkpoint (no '{FORMAT}' marker)")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {ckpt.get('version')}; this gelanc reads {VERSION}")
    return ckpt


def load(path: str | Path) -> fx.GraphModule:
    """Rebuild the module from the embedded source and load its weights."""
    from gelanc.dsl.loader import load_embedded
    from gelanc.ir.lower import lower
    from gelanc.passes.validate import validate
    from gelanc.torch_fx import deploy_module, to_fx

    ckpt = read(path)
    try:
        meta = SpecMeta.model_validate(ckpt.get("meta"))
    except ValidationError as e:
        raise CheckpointError(f"{path}: bad metadata: {e.errors()[0]['msg']}") from None
    prog = load_embedded(meta.sources, meta.links, meta.root)
    g = lower(prog, meta.model, **meta.params)
    validate(g)
    gm = to_fx(g, init=False)
    if meta.deployed:
        gm = deploy_module(gm)
    missing, unexpected = gm.load_state_dict(ckpt["state_dict"], strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not fit the embedded spec "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return gm
