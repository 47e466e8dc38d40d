"""The detection head: per-level maps decoded into boxes and class probabilities."""

from __future__ import annotations

import math

from pydantic import PositiveInt

from gelanc.ops.registry import Attrs, OpDef, ShapeError, register


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


def _detect_lower(b, n, a: DetectAttrs, xs, shapes):
    from gelanc.backend.fx import Detect

    return b.module(n, Detect(a.nc, a.reg_max, b.level_strides(n)), xs)


def _bias_prior(g, n: str, modules: dict) -> None:
    """The reference's head initialisation: box logits 1.0, class logits
    log(5 / nc / (640 / stride)²) — about five objects of nc classes in a 640 image."""
    import torch

    from gelanc.ir.graph import inputs

    a, det = g.nodes[n]["attrs"], modules[n]
    with torch.no_grad():
        for level, stride in zip(inputs(g, n), det.strides):
            box, cls = _branch_convs(g, level.node, a, modules)
            if box:
                modules[box].bias.fill_(1.0)
            if cls:
                modules[cls].bias[: a.nc] = math.log(5 / a.nc / (640 / stride) ** 2)


def _branch_convs(g, node: str, a: DetectAttrs, modules: dict) -> tuple[str | None, str | None]:
    """The last conv of a level's box branch (4·reg_max wide) and class branch (nc wide):
    the biased convolutions among the inputs of the join that feeds the head, found by
    their modules and widths, not by op names."""
    from torch import nn

    from gelanc.ir.graph import inputs  # not at the top: the IR's module imports the registry

    srcs = inputs(g, node)
    if len(srcs) < 2:  # a level that is not a join of branches: nothing to find
        return None, None
    box = cls = None
    for r in srcs:
        m = modules.get(r.node)
        if isinstance(m, nn.Conv2d) and m.bias is not None:
            if m.out_channels == 4 * a.reg_max and box is None:
                box = r.node
            elif m.out_channels == a.nc:
                cls = r.node
    return box, cls


register(OpDef(
    "detect", DetectAttrs,
    "Decodes per-level head maps into (4 + nc, anchors): DFL box distances → xywh "
    "in pixels, class probabilities. Holds the DFL's fixed projection (reg_max weights).",
    shape=_detect_shape, lower=_detect_lower, init=_bias_prior, arity=(1, None), head=True,
    params=lambda a, i: a.reg_max,
    macs=lambda a, i, o: 4 * a.reg_max * o[0][1] if o[0][1] else 0,  # the DFL's 1×1 conv
    has_weights=True))
