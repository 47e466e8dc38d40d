"""The op registry: every primitive op of the IR, declared exactly once.

An :class:`OpDef` holds everything the rest of gelanc knows about an op:

* ``attrs`` — a pydantic model of its attributes (validated, with defaults; the
  order of its fields is the order of positional arguments in `.gel` after the
  tensor inputs);
* ``arity`` — how many tensor inputs it takes (``max`` None: variadic);
* ``shape`` — input shapes + attributes → output shapes, or :class:`ShapeError`;
* ``params`` and ``macs`` — its cost, by the thop 0.1.1 convention that the
  YOLOv9 paper's tables use (see docs/architecture.md, "Counting").

Passes, the viz, the stats and the compiler read this table; none of them
special-cases an op's name. Adding an op is one :func:`register` call here.

A *shape* is a tuple of ints: ``(C, H, W)`` for a feature map, ``(C, A)`` for a
head's decoded output. While a spec is lowered only channels are known, and the
spatial entries are ``None``; :mod:`gelanc.passes.shapes` fills them for an image size.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt

Shape = tuple  # (C, H, W) with H, W int or None; (C, A) for decoded detections


class ShapeError(Exception):
    """A shape rule's complaint; ``arg`` is the index of the offending input, if one is."""

    def __init__(self, message: str, arg: int | None = None):
        super().__init__(message)
        self.arg = arg


class Attrs(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")


@dataclass(frozen=True)
class OpDef:
    name: str
    attrs: type[Attrs]
    doc: str
    shape: Callable[[Attrs, list[Shape]], list[Shape]]
    arity: tuple[int, int | None] = (1, 1)
    params: Callable[[Attrs, list[Shape]], int] = lambda a, i: 0
    macs: Callable[[Attrs, list[Shape], list[Shape]], int] = lambda a, i, o: 0
    # Ops with parameters need a stable name in the state dict; their nodes are the
    # ones that a deploy pass may fold into another.
    has_weights: bool = False
    num_outputs: Callable[[Attrs], int] = lambda a: 1
    # True when the op always yields a tuple in `.gel`, even of one tensor (split, chunk)
    multi_output: bool = False


REGISTRY: dict[str, OpDef] = {}


def register(op: OpDef) -> OpDef:
    assert op.name not in REGISTRY, f"op {op.name} declared twice"
    REGISTRY[op.name] = op
    return op


# ---- helpers ------------------------------------------------------------------


def _numel(shape: Shape) -> int:
    return math.prod(d for d in shape if d is not None) if all(d is not None for d in shape) else 0


def _fmt(shape: Shape) -> str:
    return "×".join("?" if d is None else str(d) for d in shape)


def _window(size: int | None, k: int, s: int, p: int, d: int = 1, ceil: bool = False) -> int | None:
    """Output length of a conv/pool window along one axis (PyTorch's formula)."""
    if size is None:
        return None
    span = size + 2 * p - d * (k - 1) - 1
    out = (-(-span // s) if ceil else span // s) + 1
    if out <= 0:
        raise ShapeError(f"a {k}×{k} window with stride {s} and padding {p} does not fit in size {size}")
    return out


def _same_spatial(shapes: list[Shape], what: str) -> None:
    ref = shapes[0]
    for i, s in enumerate(shapes[1:], 1):
        if None in ref[1:] or None in s[1:]:
            continue
        if s[1:] != ref[1:]:
            raise ShapeError(f"{what} of {_fmt(ref)} and {_fmt(s)}: spatial sizes differ", i)


# ---- sources ------------------------------------------------------------------


class InputAttrs(Attrs):
    channels: PositiveInt = 3


register(OpDef(
    "input", InputAttrs, "The image batch; its spatial size is set by the shape pass.",
    shape=lambda a, i: [(a.channels, None, None)], arity=(0, 0)))


# ---- convolution and normalisation ----------------------------------------------


class Conv2dAttrs(Attrs):
    c2: PositiveInt
    k: PositiveInt = 1
    s: PositiveInt = 1
    p: int | None = Field(None, ge=0)  # None: "same" padding, k // 2 (times dilation)
    groups: PositiveInt = 1
    dilation: PositiveInt = 1
    bias: bool = True

    @property
    def padding(self) -> int:
        return self.dilation * (self.k - 1) // 2 if self.p is None else self.p


def _conv_shape(a: Conv2dAttrs, ins: list[Shape]) -> list[Shape]:
    c1, h, w = ins[0]
    if c1 % a.groups:
        raise ShapeError(f"groups={a.groups} does not divide the {c1} input channels", 0)
    if a.c2 % a.groups:
        raise ShapeError(f"groups={a.groups} does not divide the {a.c2} output channels")
    p = a.padding
    return [(a.c2, _window(h, a.k, a.s, p, a.dilation), _window(w, a.k, a.s, p, a.dilation))]


register(OpDef(
    "conv2d", Conv2dAttrs, "2-D convolution: c2 output channels, k×k kernel, stride s.",
    shape=_conv_shape,
    params=lambda a, i: a.c2 * (i[0][0] // a.groups) * a.k * a.k + (a.c2 if a.bias else 0),
    # thop: output elements × (input channels / groups) × kernel area; bias not counted
    macs=lambda a, i, o: _numel(o[0]) * (i[0][0] // a.groups) * a.k * a.k,
    has_weights=True))


class BatchNormAttrs(Attrs):
    # The reference's defaults (YOLOv5 lineage), not PyTorch's 1e-5 / 0.1.
    eps: float = 1e-3
    momentum: float = 0.03


register(OpDef(
    "batchnorm", BatchNormAttrs, "Batch normalisation over channels (affine).",
    shape=lambda a, i: [i[0]],
    params=lambda a, i: 2 * i[0][0],  # weight and bias; running stats are buffers
    macs=lambda a, i, o: 4 * _numel(i[0]),  # thop: 2 × elements, doubled when affine
    has_weights=True))


class NoAttrs(Attrs):
    pass


for _act, _doc in [("silu", "SiLU activation."), ("relu", "ReLU activation."),
                   ("sigmoid", "Logistic sigmoid."), ("identity", "Passes its input through.")]:
    register(OpDef(_act, NoAttrs, _doc, shape=lambda a, i: [i[0]]))


# ---- joining and splitting ------------------------------------------------------


def _add_shape(a, ins):
    ref = ins[0]
    for i, s in enumerate(ins[1:], 1):
        if s[0] != ref[0]:
            raise ShapeError(f"add of {_fmt(ref)} and {_fmt(s)}: channel counts differ ({ref[0]} vs {s[0]})", i)
    _same_spatial(ins, "add")
    return [ref]


register(OpDef(
    "add", NoAttrs, "Element-wise sum of two or more tensors of one shape.",
    shape=_add_shape, arity=(2, None)))


def _concat_shape(a, ins):
    _same_spatial(ins, "concat")
    return [(sum(s[0] for s in ins), *ins[0][1:])]


register(OpDef(
    "concat", NoAttrs, "Concatenation along channels.", shape=_concat_shape, arity=(1, None)))


class ChunkAttrs(Attrs):
    n: PositiveInt


def _chunk_shape(a: ChunkAttrs, ins):
    c = ins[0][0]
    if c and c % a.n:
        raise ShapeError(f"chunk of {c} channels into {a.n} equal parts: {c} is not divisible by {a.n}", 0)
    return [(c // a.n, *ins[0][1:])] * a.n


register(OpDef(
    "chunk", ChunkAttrs, "Splits channels into n equal parts (n outputs).", shape=_chunk_shape,
    num_outputs=lambda a: a.n, multi_output=True))


class SplitAttrs(Attrs):
    sizes: tuple[PositiveInt, ...] = Field(min_length=1)


def _split_shape(a: SplitAttrs, ins):
    c = ins[0][0]
    if c and sum(a.sizes) != c:
        raise ShapeError(f"split of {c} channels into {list(a.sizes)}: the sizes add up to {sum(a.sizes)}", 0)
    return [(s, *ins[0][1:]) for s in a.sizes]


register(OpDef(
    "split", SplitAttrs, "Splits channels into parts of the given sizes (one output each).",
    shape=_split_shape, num_outputs=lambda a: len(a.sizes), multi_output=True))


# ---- resampling -----------------------------------------------------------------


class UpsampleAttrs(Attrs):
    scale: PositiveInt = 2
    mode: Literal["nearest"] = "nearest"


register(OpDef(
    "upsample", UpsampleAttrs, "Nearest-neighbour upsampling by an integer factor.",
    shape=lambda a, i: [(i[0][0], *(None if d is None else d * a.scale for d in i[0][1:]))],
    macs=lambda a, i, o: _numel(o[0])))  # thop counts nearest upsampling as one op per output


class PoolAttrs(Attrs):
    k: PositiveInt
    s: PositiveInt = 1
    p: int | None = Field(None, ge=0)  # None: k // 2
    ceil_mode: bool = False

    @property
    def padding(self) -> int:
        return self.k // 2 if self.p is None else self.p


def _pool_shape(a: PoolAttrs, ins):
    if 2 * a.padding > a.k:
        raise ShapeError(f"padding {a.padding} is more than half the {a.k}×{a.k} window")
    c, h, w = ins[0]
    p = a.padding
    return [(c, _window(h, a.k, a.s, p, ceil=a.ceil_mode), _window(w, a.k, a.s, p, ceil=a.ceil_mode))]


register(OpDef(
    "maxpool", PoolAttrs, "Max pooling (thop: zero cost).", shape=_pool_shape))
register(OpDef(
    "avgpool", PoolAttrs,
    "Average pooling, padding counted in the mean (the reference's functional "
    "avg_pool2d: zero cost by thop's convention).", shape=_pool_shape))


def _resize_shape(a, ins):
    return [(ins[0][0], *ins[1][1:])]


register(OpDef(
    "resize_to", NoAttrs,
    "Nearest resize of the first input to the spatial size of the second (CBFuse).",
    shape=_resize_shape, arity=(2, 2)))


# ---- detection ------------------------------------------------------------------


class DetectAttrs(Attrs):
    nc: PositiveInt
    reg_max: PositiveInt = 16


def _detect_shape(a: DetectAttrs, ins):
    want = 4 * a.reg_max + a.nc
    for i, s in enumerate(ins):
        if s[0] != want:
            raise ShapeError(
                f"detect level {i} has {s[0]} channels; a head for nc={a.nc} with reg_max={a.reg_max} "
                f"needs 4×{a.reg_max} + {a.nc} = {want}", i)
    if any(d is None for s in ins for d in s[1:]):
        return [(4 + a.nc, None)]
    return [(4 + a.nc, sum(s[1] * s[2] for s in ins))]


register(OpDef(
    "detect", DetectAttrs,
    "Decodes per-level head maps into (4 + nc, anchors): DFL box distances → xywh "
    "in pixels, class probabilities. Holds the DFL's fixed projection (reg_max weights).",
    shape=_detect_shape, arity=(1, None),
    params=lambda a, i: a.reg_max,
    macs=lambda a, i, o: 4 * a.reg_max * o[0][1] if o[0][1] else 0,  # the DFL's 1×1 conv
    has_weights=True))
