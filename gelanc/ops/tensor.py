"""The image source, and joining and splitting tensors along channels."""

from __future__ import annotations

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
