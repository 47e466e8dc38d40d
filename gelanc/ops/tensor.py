"""The image source; joining and splitting tensors along channels; the element-wise
product (gates); flattening; dropout."""

from __future__ import annotations

import math

from pydantic import Field, PositiveInt

from gelanc.ops.registry import Attrs, NoAttrs, OpDef, ShapeError, fmt, register, same_spatial


class InputAttrs(Attrs):
    channels: PositiveInt = 3


register(OpDef(
    "input", InputAttrs, "The image batch; its spatial size is set by the shape pass.",
    shape=lambda a, i: [(a.channels, None, None)], arity=(0, 0), source=True,
    lower=lambda b, n, a, xs, shapes: b.placeholder("x")))


def _add_shape(a, ins):
    ref = ins[0]
    for i, s in enumerate(ins[1:], 1):
        if s[0] != ref[0]:
            raise ShapeError(f"add of {fmt(ref)} and {fmt(s)}: channel counts differ ({ref[0]} vs {s[0]})", i)
    same_spatial(ins, "add")
    return [ref]


def _add_lower(b, n, a, xs, shapes):
    import operator

    out = xs[0]
    for x in xs[1:]:
        out = b.call(n, operator.add, (out, x))
    return out


register(OpDef(
    "add", NoAttrs, "Element-wise sum of two or more tensors of one shape.",
    shape=_add_shape, lower=_add_lower, arity=(2, None)))


def _concat_shape(a, ins):
    same_spatial(ins, "concat")
    return [(sum(s[0] for s in ins), *ins[0][1:])]


def _concat_lower(b, n, a, xs, shapes):
    import torch

    return b.call(n, torch.cat, (list(xs), 1))


register(OpDef(
    "concat", NoAttrs, "Concatenation along channels.", shape=_concat_shape, lower=_concat_lower,
    arity=(1, None)))


class ChunkAttrs(Attrs):
    n: PositiveInt


def _chunk_shape(a: ChunkAttrs, ins):
    c = ins[0][0]
    if c and c % a.n:
        raise ShapeError(f"chunk of {c} channels into {a.n} equal parts: {c} is not divisible by {a.n}", 0)
    return [(c // a.n, *ins[0][1:])] * a.n


def _chunk_lower(b, n, a: ChunkAttrs, xs, shapes):
    import torch

    return b.call(n, torch.chunk, (xs[0], a.n, 1))


register(OpDef(
    "chunk", ChunkAttrs, "Splits channels into n equal parts (n outputs).", shape=_chunk_shape,
    lower=_chunk_lower, num_outputs=lambda a: a.n, multi_output=True))


class SplitAttrs(Attrs):
    sizes: tuple[PositiveInt, ...] = Field(min_length=1)


def _split_shape(a: SplitAttrs, ins):
    c = ins[0][0]
    if c and sum(a.sizes) != c:
        raise ShapeError(f"split of {c} channels into {list(a.sizes)}: the sizes add up to {sum(a.sizes)}", 0)
    return [(s, *ins[0][1:]) for s in a.sizes]


def _split_lower(b, n, a: SplitAttrs, xs, shapes):
    import torch

    return b.call(n, torch.split, (xs[0], list(a.sizes), 1))


register(OpDef(
    "split", SplitAttrs, "Splits channels into parts of the given sizes (one output each).",
    shape=_split_shape, lower=_split_lower, num_outputs=lambda a: len(a.sizes), multi_output=True))


def _broadcast(a, ins):
    """NumPy's broadcasting over (C, H, W), entry by entry: equal, or one of them 1
    (an SE gate's C×1×1 scales each channel of a map)."""
    x, y = ins
    if len(x) != len(y):
        raise ShapeError(f"mul of {fmt(x)} and {fmt(y)}: a map and a vector do not broadcast", 1)
    out = []
    for dx, dy in zip(x, y):
        if dx is None or dy is None:
            out.append(dy if dx == 1 else dx if dy == 1 else dx if dy is None else dy)
        elif dx == dy or dy == 1:
            out.append(dx)
        elif dx == 1:
            out.append(dy)
        else:
            raise ShapeError(f"mul of {fmt(x)} and {fmt(y)}: sizes {dx} and {dy} neither agree nor are 1", 1)
    return [tuple(out)]


def _mul_lower(b, n, a, xs, shapes):
    import operator

    return b.call(n, operator.mul, (xs[0], xs[1]))


register(OpDef(
    "mul", NoAttrs, "Element-wise product of two tensors, broadcasting entries of size 1 (gates).",
    shape=_broadcast, lower=_mul_lower, arity=(2, 2)))


def _flatten_shape(a, ins):
    s = ins[0]
    if None in s:
        raise ShapeError(f"flatten of {fmt(s)}: its spatial size is not fixed; pool it to a fixed size first "
                         "(adaptive_avgpool(x, 1))", 0)
    return [(math.prod(s),)]


def _flatten_lower(b, n, a, xs, shapes):
    import torch

    return b.call(n, torch.flatten, (xs[0], 1))


register(OpDef(
    "flatten", NoAttrs, "A map of fixed size as one vector (C·H·W).", shape=_flatten_shape,
    lower=_flatten_lower))


class DropoutAttrs(Attrs):
    p: float = Field(0.5, ge=0, lt=1)


def _dropout_lower(b, n, a: DropoutAttrs, xs, shapes):
    from torch import nn

    return b.module(n, nn.Dropout(a.p), xs)


register(OpDef(
    "dropout", DropoutAttrs, "Zeroes each element with probability p while training; removed for deploy.",
    shape=lambda a, i: [i[0]], lower=_dropout_lower, train_only=True))


def _drop_path_lower(b, n, a: DropoutAttrs, xs, shapes):
    from gelanc.backend.fx import DropPath

    return b.module(n, DropPath(a.p), xs)


register(OpDef(
    "drop_path", DropoutAttrs,
    "Stochastic depth: zeroes a whole sample's tensor with probability p while training; removed for deploy.",
    shape=lambda a, i: [i[0]], lower=_drop_path_lower, train_only=True))
