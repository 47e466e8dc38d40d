"""Element-wise activations: one input, its shape, no cost by thop's convention."""

from __future__ import annotations

from gelanc.ops.registry import NoAttrs, OpDef, register


def _silu(b, n, a, xs, shapes):
    import torch.nn.functional as F

    return b.call(n, F.silu, (xs[0],))


def _relu(b, n, a, xs, shapes):
    import torch.nn.functional as F

    return b.call(n, F.relu, (xs[0],))


def _sigmoid(b, n, a, xs, shapes):
    import torch

    return b.call(n, torch.sigmoid, (xs[0],))


for _name, _doc, _lower in [("silu", "SiLU activation.", _silu), ("relu", "ReLU activation.", _relu),
                            ("sigmoid", "Logistic sigmoid.", _sigmoid)]:
    register(OpDef(_name, NoAttrs, _doc, shape=lambda a, i: [i[0]], lower=_lower))

register(OpDef("identity", NoAttrs, "Passes its input through.", shape=lambda a, i: [i[0]],
               lower=lambda b, n, a, xs, shapes: xs[0]))
