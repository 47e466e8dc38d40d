"""Normalisations other than BatchNorm (which deploy folds, beside conv2d): over each
position's channels (ConvNeXt's LayerNorm) and over groups of channels."""

from __future__ import annotations

from pydantic import Field, PositiveInt

from gelanc.ops.registry import Attrs, OpDef, ShapeError, numel, register


class LayerNormAttrs(Attrs):
    eps: float = Field(1e-6, gt=0)  # ConvNeXt's


def _layernorm_lower(b, n, a: LayerNormAttrs, xs, shapes):
    from gelanc.backend.fx import ChannelLayerNorm

    return b.module(n, ChannelLayerNorm(shapes[0][0], a.eps), xs)


register(OpDef(
    "layernorm", LayerNormAttrs, "LayerNorm over each position's channels (affine), of a map or a vector.",
    shape=lambda a, i: [i[0]], lower=_layernorm_lower,
    params=lambda a, i: 2 * i[0][0],
    macs=lambda a, i, o: 4 * numel(i[0]),  # thop's LayerNorm rule: 2 × elements, doubled when affine
    has_weights=True))


class GroupNormAttrs(Attrs):
    groups: PositiveInt
    eps: float = Field(1e-5, gt=0)


def _groupnorm_shape(a: GroupNormAttrs, ins):
    if ins[0][0] % a.groups:
        raise ShapeError(f"groupnorm: {a.groups} groups do not divide {ins[0][0]} channels", 0)
    return [ins[0]]


def _groupnorm_lower(b, n, a: GroupNormAttrs, xs, shapes):
    from torch import nn

    return b.module(n, nn.GroupNorm(a.groups, shapes[0][0], eps=a.eps), xs)


register(OpDef(
    "groupnorm", GroupNormAttrs, "GroupNorm: channels in groups, each normalised over its channels and "
    "positions (affine; thop 0.1.1 has no rule for it: zero cost).",
    shape=_groupnorm_shape, lower=_groupnorm_lower, params=lambda a, i: 2 * i[0][0], has_weights=True))
