"""Vectors: the fully connected layer and the softmax of a classification head."""

from __future__ import annotations

from pydantic import PositiveInt

from gelanc.ops.registry import Attrs, NoAttrs, OpDef, ShapeError, fmt, numel, register


class LinearAttrs(Attrs):
    c2: PositiveInt
    bias: bool = True


def _linear_shape(a: LinearAttrs, ins):
    if len(ins[0]) != 1:
        raise ShapeError(f"linear of {fmt(ins[0])}: it takes a vector (flatten the map first)", 0)
    return [(a.c2,)]


def _linear_lower(b, n, a: LinearAttrs, xs, shapes):
    from torch import nn

    # made without weights, as conv2d: the builder allocates and draws them
    m = nn.Linear(shapes[0][0], a.c2, a.bias, device="meta")
    b.new_weights(m)
    return b.module(n, m, xs)


register(OpDef(
    "linear", LinearAttrs, "Fully connected layer: a vector to c2 outputs.", shape=_linear_shape,
    lower=_linear_lower,
    params=lambda a, i: i[0][0] * a.c2 + (a.c2 if a.bias else 0),
    macs=lambda a, i, o: i[0][0] * numel(o[0]),  # thop: in_features per output element; bias not counted
    has_weights=True))


def _softmax_lower(b, n, a, xs, shapes):
    import torch

    return b.call(n, torch.softmax, (xs[0], 1))


register(OpDef(
    "softmax", NoAttrs, "Softmax over channels (a vector's entries, or each position's channels).",
    shape=lambda a, i: [i[0]], lower=_softmax_lower))  # a function, as heads call it: thop counts nothing
