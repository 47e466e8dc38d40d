"""The checkpoint format every command uses: weights beside the `.gel` source.

A checkpoint is a plain dict — strings, numbers, lists and tensors only — so that
``torch.load(path, weights_only=True)`` reads it (through :mod:`gelanc.safeload`,
which checks the file first): loading a file never runs code from it. It embeds
the spec's source and every file it imports, so the model can be rebuilt without
the original files::

    {"format": "gelanc-checkpoint", "version": 1,
     "meta": {"model", "root", "sources", "links", "params", "deployed"},
     "state_dict": {...}}

Writes go to a temporary file in the target folder, then rename over the target:
a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator
from torch import fx

from gelanc.atomic import atomic_save
from gelanc.diagnostics import GelError
from gelanc.limits import MAX_PARAMS
from gelanc.safeload import CheckpointError, printable

__all__ = ["CheckpointError", "FORMAT", "VERSION", "SpecMeta", "atomic_save", "build", "load", "read", "run_settings",
           "save"]

FORMAT, VERSION = "gelanc-checkpoint", 1


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
    from gelanc.backend.fx import ir_of

    g = ir_of(gm)
    info = gm.meta["gelanc"]
    return SpecMeta(model=g.graph["model"], root=g.graph["file"], sources=g.graph["source"],
                    links=g.graph.get("links", {}), params=g.graph["params"],
                    deployed=bool(info.get("deployed")))


def save(gm: fx.GraphModule, path: str | Path, **extra: Any) -> Path:
    """Write ``gm`` (train or deploy graph) as a checkpoint; ``extra`` keys are kept beside."""
    ckpt = {"format": FORMAT, "version": VERSION, "meta": meta_of(gm).model_dump(),
            "state_dict": {k: v.detach().cpu() for k, v in gm.state_dict().items()}, **extra}
    return atomic_save(ckpt, path)


def read(path: str | Path) -> dict:
    """The checkpoint's dict, read by :func:`gelanc.safeload.read` (nothing in the file
    runs; nothing it declares is allocated unchecked), its structure validated."""
    from gelanc import safeload

    ckpt = safeload.read(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a gelanc checkpoint (no '{FORMAT}' marker)")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {printable(ckpt.get('version'))}; "
                              f"this gelanc reads {VERSION}")
    try:
        Layout.model_validate(ckpt)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(printable(x, 40) for x in err["loc"])
        raise CheckpointError(f"{path}: {where}: {err['msg'].removeprefix('Value error, ')}") from None
    return ckpt


def load(path: str | Path) -> fx.GraphModule:
    """Rebuild the module from the embedded source and load its weights."""
    return build(read(path), str(path))


def build(ckpt: dict, path: str) -> fx.GraphModule:
    """The module of a checkpoint :func:`read` returned (``path`` names it in errors).

    The embedded spec is evaluated within gelanc's limits, and the network it describes
    is allocated only if the file holds at least as many values as it has parameters:
    a few kilobytes of spec cannot ask for gigabytes of weights."""
    from gelanc import pipeline
    from gelanc.dsl.loader import load_embedded

    meta = SpecMeta.model_validate(ckpt["meta"])
    prog = load_embedded(meta.sources, meta.links, meta.root)
    # built straight as the deploy graph when deployed: the train graph's weights are not in the file
    g = pipeline.graph(prog, meta.model, deployed=meta.deployed, **meta.params)
    state = ckpt["state_dict"]
    held = values_held(state)
    try:
        gm = pipeline.module(g, init=False, max_params=min(held, MAX_PARAMS))
    except GelError:
        raise CheckpointError(f"{path}: its spec asks for more parameters than the {held:,} values it "
                              f"holds") from None
    gm.meta["gelanc"]["deployed"] = meta.deployed
    fit_weights(gm, state, path)
    return gm


def values_held(state: dict[str, torch.Tensor]) -> int:
    """How many values the tensors' storages hold — each storage counted once, however
    many tensors view it: what the file's bytes really give, which a view repeated a
    thousand times must not multiply."""
    storages: dict[int, int] = {}
    for t in state.values():
        s = t.untyped_storage()
        storages[s.data_ptr()] = max(storages.get(s.data_ptr(), 0), s.nbytes() // max(t.element_size(), 1))
    return sum(storages.values())


def fit_weights(gm: fx.GraphModule, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``gm`` exactly: every tensor present, of its shape; else a
    CheckpointError naming the first that is not."""
    own = gm.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise CheckpointError(f"{source}: weights do not fit the embedded spec (missing "
                              f"{[printable(k, 60) for k in missing[:3]]}, unexpected "
                              f"{[printable(k, 60) for k in unexpected[:3]]})")
    for k, t in own.items():
        v = state[k]
        if v.shape != t.shape or not (v.is_floating_point() or v.dtype == t.dtype):
            raise CheckpointError(f"{source}: weight '{printable(k, 60)}' is {_describe(v)} in the file; "
                                  f"the embedded spec needs {_describe(t)}")
    gm.load_state_dict(state, strict=True)


def _describe(t: torch.Tensor) -> str:
    return f"{'×'.join(map(str, t.shape)) or 'a scalar'} {str(t.dtype).removeprefix('torch.')}"


def _clean_name(v: str) -> str:
    if not 0 < len(v) <= 200 or printable(v, 200) != v:
        raise ValueError("a class name must be 1 to 200 printable characters")
    return v


class Layout(BaseModel):
    """The top level of a checkpoint, as far as gelanc's commands read it; other keys
    (the training state under ``train``, checked where a run resumes) are kept."""

    model_config = ConfigDict(extra="allow", arbitrary_types_allowed=True)
    meta: SpecMeta
    state_dict: dict[str, torch.Tensor]
    names: list[Annotated[str, AfterValidator(_clean_name)]] | None = Field(None, max_length=100_000)
    metrics: dict[str, Any] | None = None
    train: dict[str, Any] | None = None

    @field_validator("train")
    @classmethod
    def _run_args(cls, v):
        if v is not None and not isinstance(v.get("args", {}), dict):
            raise ValueError("the run's settings must be a mapping")
        if v is not None and not isinstance(v.get("args", {}).get("data"), (str, type(None))):
            raise ValueError("the run's data path must be text")
        return v


def run_settings(ckpt: dict) -> dict:
    """The settings of the run that saved ``ckpt`` (a checkpoint :func:`read` returned), or {}
    for a checkpoint of no run (gelanc build, import-weights)."""
    t = ckpt.get("train")
    return t.get("args", {}) if isinstance(t, dict) else {}
