"""Convolution and normalisation: the ops with weights that deploy folds together."""

from __future__ import annotations

from pydantic import Field, PositiveInt

from gelanc.ops.registry import Attrs, OpDef, Shape, ShapeError, fmt, numel, register, window


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
    return [(a.c2, window(h, a.k, a.s, p, a.dilation), window(w, a.k, a.s, p, a.dilation))]


def _conv_lower(b, n, a: Conv2dAttrs, xs, shapes):
    from torch import nn

    # made without weights: the builder allocates them and draws them in a background thread
    m = nn.Conv2d(shapes[0][0], a.c2, a.k, a.s, a.padding, a.dilation, a.groups, a.bias, device="meta")
    b.new_weights(m)
    return b.module(n, m, xs)


register(OpDef(
    "conv2d", Conv2dAttrs, "2-D convolution: c2 output channels, k×k kernel, stride s.",
    shape=_conv_shape, lower=_conv_lower,
    params=lambda a, i: a.c2 * (i[0][0] // a.groups) * a.k * a.k + (a.c2 if a.bias else 0),
    # thop: output elements × (input channels / groups) × kernel area; bias not counted
    macs=lambda a, i, o: numel(o[0]) * (i[0][0] // a.groups) * a.k * a.k,
    has_weights=True))


class ConvTransposeAttrs(Attrs):
    c2: PositiveInt
    k: PositiveInt = 2
    s: PositiveInt = 2
    p: int = Field(0, ge=0)
    groups: PositiveInt = 1
    bias: bool = True


def _deconv_shape(a: ConvTransposeAttrs, ins: list[Shape]) -> list[Shape]:
    c1, h, w = ins[0]
    if c1 % a.groups or a.c2 % a.groups:
        raise ShapeError(f"groups={a.groups} does not divide the {c1} input and {a.c2} output channels", 0)
    out = [None if d is None else (d - 1) * a.s - 2 * a.p + a.k for d in (h, w)]
    if any(d is not None and d <= 0 for d in out):
        raise ShapeError(f"a transposed {a.k}×{a.k} window with padding {a.p} leaves no output of {fmt(ins[0])}", 0)
    return [(a.c2, *out)]


def _deconv_lower(b, n, a: ConvTransposeAttrs, xs, shapes):
    from torch import nn

    m = nn.ConvTranspose2d(shapes[0][0], a.c2, a.k, a.s, a.p, groups=a.groups, bias=a.bias, device="meta")
    b.new_weights(m)
    return b.module(n, m, xs)


register(OpDef(
    "conv_transpose2d", ConvTransposeAttrs, "Transposed 2-D convolution (learned upsampling by s).",
    shape=_deconv_shape, lower=_deconv_lower,
    params=lambda a, i: (a.c2 // a.groups) * i[0][0] * a.k * a.k + (a.c2 if a.bias else 0),
    # thop counts it as a convolution: output elements × (input channels / groups) × kernel area
    macs=lambda a, i, o: numel(o[0]) * (i[0][0] // a.groups) * a.k * a.k,
    has_weights=True))


class BatchNormAttrs(Attrs):
    # The reference's defaults (YOLOv5 lineage), not PyTorch's 1e-5 / 0.1.
    eps: float = 1e-3
    momentum: float = 0.03


def _bn_lower(b, n, a: BatchNormAttrs, xs, shapes):
    from torch import nn

    return b.module(n, nn.BatchNorm2d(shapes[0][0], eps=a.eps, momentum=a.momentum), xs)


register(OpDef(
    "batchnorm", BatchNormAttrs, "Batch normalisation over channels (affine).",
    shape=lambda a, i: [i[0]], lower=_bn_lower,
    params=lambda a, i: 2 * i[0][0],  # weight and bias; running stats are buffers
    macs=lambda a, i, o: 4 * numel(i[0]),  # thop: 2 × elements, doubled when affine
    has_weights=True))
