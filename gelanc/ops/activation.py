"""Element-wise activations: one input, its shape, no cost by thop's convention (it has
no rule for the functions, and a zero-cost one for ReLU and LeakyReLU)."""

from __future__ import annotations

from pydantic import Field

from gelanc.ops.registry import Attrs, NoAttrs, OpDef, register


def _sigmoid(b, n, a, xs, shapes):
    import torch

    return b.call(n, torch.sigmoid, (xs[0],))


def _functional(name: str):
    """The lowering of an activation that is ``torch.nn.functional.<name>`` of its input."""

    def lower(b, n, a, xs, shapes):
        import torch.nn.functional as F

        return b.call(n, getattr(F, name), (xs[0],))

    return lower


for _name, _doc, _lower in [("silu", "SiLU activation.", _functional("silu")),
                            ("relu", "ReLU activation.", _functional("relu")),
                            ("sigmoid", "Logistic sigmoid.", _sigmoid),
                            ("hardswish", "Hard swish (MobileNetV3's).", _functional("hardswish")),
                            ("gelu", "GELU, exact (erf) form.", _functional("gelu")),
                            ("mish", "Mish: x · tanh(softplus(x)).", _functional("mish"))]:
    register(OpDef(_name, NoAttrs, _doc, shape=lambda a, i: [i[0]], lower=_lower))


class LeakyReluAttrs(Attrs):
    slope: float = Field(0.1, ge=0)  # YOLOv7's; PyTorch's default is 0.01


def _leaky_relu(b, n, a: LeakyReluAttrs, xs, shapes):
    import torch.nn.functional as F

    return b.call(n, F.leaky_relu, (xs[0], a.slope))


register(OpDef("leaky_relu", LeakyReluAttrs, "Leaky ReLU: x, or slope · x below zero.",
               shape=lambda a, i: [i[0]], lower=_leaky_relu))

register(OpDef("identity", NoAttrs, "Passes its input through.", shape=lambda a, i: [i[0]],
               lower=lambda b, n, a, xs, shapes: xs[0]))
