"""Changing spatial size: upsampling, pooling (by a window, or to a fixed size), resizing
to another map (CBFuse)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt

from gelanc.ops.registry import Attrs, NoAttrs, OpDef, ShapeError, fmt, numel, register, window


class UpsampleAttrs(Attrs):
    scale: PositiveInt = 2
    mode: Literal["nearest", "bilinear"] = "nearest"


def _upsample_lower(b, n, a: UpsampleAttrs, xs, shapes):
    from torch import nn

    # a module, not a call: thop counts nn.Upsample, as the paper's figures do
    corners = {"align_corners": False} if a.mode == "bilinear" else {}
    return b.module(n, nn.Upsample(scale_factor=a.scale, mode=a.mode, **corners), xs)


# thop's ops per output element of each mode
_UPSAMPLE_OPS = {"nearest": 1, "bilinear": 11}

register(OpDef(
    "upsample", UpsampleAttrs, "Upsampling by an integer factor, nearest-neighbour or bilinear.",
    shape=lambda a, i: [(i[0][0], *(None if d is None else d * a.scale for d in i[0][1:]))],
    lower=_upsample_lower,
    macs=lambda a, i, o: _UPSAMPLE_OPS[a.mode] * numel(o[0])))


class SpaceToDepthAttrs(Attrs):
    block: PositiveInt = 2


def _space_to_depth_shape(a: SpaceToDepthAttrs, ins):
    c, h, w = ins[0]
    for d in (h, w):
        if d is not None and d % a.block:
            raise ShapeError(f"space_to_depth by {a.block} of {fmt(ins[0])}: {d} is not a multiple of {a.block}", 0)
    return [(c * a.block * a.block, *(None if d is None else d // a.block for d in (h, w)))]


def _space_to_depth_lower(b, n, a: SpaceToDepthAttrs, xs, shapes):
    from torch import nn

    return b.module(n, nn.PixelUnshuffle(a.block), xs)


register(OpDef(
    "space_to_depth", SpaceToDepthAttrs,
    "Each block×block patch's pixels as channels (PyTorch's PixelUnshuffle; thop: zero cost).",
    shape=_space_to_depth_shape, lower=_space_to_depth_lower))


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
    return [(c, window(h, a.k, a.s, p, ceil=a.ceil_mode), window(w, a.k, a.s, p, ceil=a.ceil_mode))]


def _maxpool_lower(b, n, a: PoolAttrs, xs, shapes):
    import torch.nn.functional as F

    return b.call(n, F.max_pool2d, (xs[0], a.k, a.s, a.padding), {"ceil_mode": a.ceil_mode})


def _avgpool_lower(b, n, a: PoolAttrs, xs, shapes):
    import torch.nn.functional as F

    # as the reference's avg_pool2d(x, 2, 1, 0, False, True)
    return b.call(n, F.avg_pool2d, (xs[0], a.k, a.s, a.padding), {"ceil_mode": a.ceil_mode,
                                                                   "count_include_pad": True})


register(OpDef(
    "maxpool", PoolAttrs, "Max pooling (thop: zero cost).", shape=_pool_shape, lower=_maxpool_lower))
register(OpDef(
    "avgpool", PoolAttrs,
    "Average pooling, padding counted in the mean (the reference's functional "
    "avg_pool2d: zero cost by thop's convention).", shape=_pool_shape, lower=_avgpool_lower))


def _resize_lower(b, n, a, xs, shapes):
    from gelanc.backend.fx import resize_to

    return b.call(n, resize_to, (xs[0], xs[1]))


register(OpDef(
    "resize_to", NoAttrs,
    "Nearest resize of the first input to the spatial size of the second (CBFuse).",
    shape=lambda a, ins: [(ins[0][0], *ins[1][1:])], arity=(2, 2),
    lower=_resize_lower))


class AdaptivePoolAttrs(Attrs):
    size: PositiveInt = 1  # the output's height and width: 1 pools globally


def _adaptive_shape(a: AdaptivePoolAttrs, ins):
    if len(ins[0]) != 3:
        raise ShapeError(f"adaptive pooling of {fmt(ins[0])}: it takes a map", 0)
    return [(ins[0][0], a.size, a.size)]


def _adaptive_avg_macs(shape, size: int, outputs: int) -> int:
    """thop 0.1.1's rule: per output element, (H/size)·(W/size) adds and one division, in
    floating point and truncated at the end — the window when size divides H and W, an
    average window otherwise (PyTorch's windows then differ in size)."""
    _, h, w = shape
    if h is None or w is None:
        return 0
    return int(((h / size) * (w / size) + 1) * outputs)


def _adaptive_lower(kind: str):
    def lower(b, n, a: AdaptivePoolAttrs, xs, shapes):
        from torch import nn

        # a module, not a call: thop counts nn.AdaptiveAvgPool2d, as classification heads have it
        return b.module(n, getattr(nn, kind)(a.size), xs)

    return lower


register(OpDef(
    "adaptive_avgpool", AdaptivePoolAttrs, "Average pooling to a size×size map (1: global pooling).",
    shape=_adaptive_shape, lower=_adaptive_lower("AdaptiveAvgPool2d"), fixed_size=True,
    macs=lambda a, i, o: _adaptive_avg_macs(i[0], a.size, numel(o[0]))))
register(OpDef(
    "adaptive_maxpool", AdaptivePoolAttrs, "Max pooling to a size×size map (thop: zero cost).",
    shape=_adaptive_shape, lower=_adaptive_lower("AdaptiveMaxPool2d"), fixed_size=True))
