"""The registry's core types: what an op is, and the table of them.

An :class:`OpDef` holds everything gelanc knows about one op; :data:`REGISTRY` maps
its name to it. The op modules beside this one (``conv``, ``activation``, ``tensor``,
``resample``, ``detect``) each declare their ops with :func:`register`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

Shape = tuple  # (C, H, W) with H, W int or None; (C, A) for decoded detections

# A torch lowering gets (builder, IR node id, its attrs, its inputs' fx nodes, their
# shapes) and returns the fx node of its output (a tuple-valued one for multi-output
# ops). The builder is gelanc.backend.fx's: ``call``, ``module``, ``placeholder``,
# ``new_weights``, ``level_strides``. Lowerings import torch inside their bodies, so
# that the registry, and everything that counts and checks, runs without it.
Lowering = Callable[[Any, str, Any, list, list], Any]
# An initialiser gets (the IR, the node id, the module's submodules by name) after
# PyTorch's default initialisation, and sets what the reference sets differently.
Initialiser = Callable[[Any, str, dict], None]


class ShapeError(Exception):
    """A shape rule's complaint; ``arg`` is the index of the offending input, if one is."""

    def __init__(self, message: str, arg: int | None = None):
        super().__init__(message)
        self.arg = arg


class Attrs(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")


class NoAttrs(Attrs):
    pass


@dataclass(frozen=True)
class OpDef:
    """One op. ``shape`` maps the attributes and input shapes to output shapes (or
    raises :class:`ShapeError`); ``params`` and ``macs`` count by thop 0.1.1's
    convention; ``lower`` builds it in a torch.fx graph; ``init`` (optional) sets the
    reference's initial weights where they are not PyTorch's defaults."""

    name: str
    attrs: type[Attrs]
    doc: str
    shape: Callable[[Any, list[Shape]], list[Shape]]
    lower: Lowering
    arity: tuple[int, int | None] = (1, 1)
    params: Callable[[Any, list[Shape]], int] = lambda a, i: 0
    macs: Callable[[Any, list[Shape], list[Shape]], int] = lambda a, i, o: 0
    # Ops with parameters need a stable name in the state dict; their nodes are the
    # ones that a deploy pass may fold into another.
    has_weights: bool = False
    num_outputs: Callable[[Any], int] = lambda a: 1
    # True when the op always yields a tuple in `.gel`, even of one tensor (split, chunk)
    multi_output: bool = False
    # A source takes no tensor input: its shape rule gives the channels, and the shape
    # pass gives it the image's spatial size (the `input` op)
    source: bool = False
    # A detection head: a model's outputs that are heads, main then aux, form PGI's dual output
    head: bool = False
    # Active in training only (dropout): the deploy passes remove it, its readers read its input
    train_only: bool = False
    # Its output's spatial size is its own, not the input's scaled (adaptive pooling): the
    # maps from it on have no stride, and the largest-stride check leaves them out
    fixed_size: bool = False
    init: Initialiser | None = None


REGISTRY: dict[str, OpDef] = {}


def register(op: OpDef) -> OpDef:
    assert op.name not in REGISTRY, f"op {op.name} declared twice"
    REGISTRY[op.name] = op
    return op


# ---- helpers of the shape and cost rules ---------------------------------------------


def numel(shape: Shape) -> int:
    return math.prod(d for d in shape if d is not None) if all(d is not None for d in shape) else 0


def fmt(shape: Shape) -> str:
    return "×".join("?" if d is None else str(d) for d in shape)


def window(size: int | None, k: int, s: int, p: int, d: int = 1, ceil: bool = False) -> int | None:
    """Output length of a conv/pool window along one axis (PyTorch's formula)."""
    if size is None:
        return None
    span = size + 2 * p - d * (k - 1) - 1
    out = (-(-span // s) if ceil else span // s) + 1
    if out <= 0:
        raise ShapeError(f"a {k}×{k} window with stride {s} and padding {p} does not fit in size {size}")
    return out


def same_spatial(shapes: list[Shape], what: str) -> None:
    ref = shapes[0]
    for i, s in enumerate(shapes[1:], 1):
        if None in ref[1:] or None in s[1:]:
            continue
        if s[1:] != ref[1:]:
            raise ShapeError(f"{what} of {fmt(ref)} and {fmt(s)}: spatial sizes differ", i)
