"""Shape inference: every node's output shapes, for one input size or for none.

With ``size=None`` only channels are inferred (H and W stay ``None``): this is the
check that lowering already made, re-run on an IR that may have been edited or
loaded. With ``size=(H, W)`` every spatial size is computed, after checking that
the size is a multiple of the network's largest stride.
"""

from __future__ import annotations

import networkx as nx

from gelanc.diagnostics import GelError
from gelanc.ir.graph import inputs, topo_order
from gelanc.ir.located import fail
from gelanc.ops import REGISTRY, Shape, ShapeError

Shapes = dict[str, list[Shape]]

# A probe size divisible by every stride a real network has (2^12 · 3 · 5).
_PROBE = 61440


def infer(g: nx.DiGraph, size: tuple[int, int] | None = None, check_stride: bool = True) -> Shapes:
    """Output shapes of every node; raises a located :class:`GelError` on a mismatch.

    ``check_stride=False`` skips the check that ``size`` is a multiple of the largest
    stride, for a graph derived from one already checked (deploy transforms never
    add a stride)."""
    if size is not None and check_stride:
        check_size(g, size)
    shapes: Shapes = {}
    for n in topo_order(g):
        d = g.nodes[n]
        op = REGISTRY[d["op"]]
        if op.source:
            shapes[n] = _source_shapes(op, d["attrs"], size)
            continue
        ins = [shapes[r.node][r.out] for r in inputs(g, n)]
        try:
            shapes[n] = op.shape(d["attrs"], ins)
        except ShapeError as e:
            raise fail(g, n, f"{d['op']}: {e}") from None
    return shapes


def _source_shapes(op, attrs, size: tuple[int, int] | None) -> list:
    """A source's outputs: the channels its shape rule gives, at the image's size (unknown
    spatial entries while only channels are inferred)."""
    return [(s[0], *size) if size else s for s in op.shape(attrs, [])]


def strides(g: nx.DiGraph) -> dict[str, int]:
    """Each feature map's stride relative to the input (largest over its outputs).

    A map whose size does not follow the input's — one pooled to a fixed size, and what
    is computed from it — has none: with an op of ``fixed_size`` in the graph, a second
    probe of twice the size tells those maps (they keep their size) from the strided ones."""
    probe = _infer_unchecked(g, (_PROBE, _PROBE))
    twice = None
    if any(REGISTRY[op].fixed_size for _, op in g.nodes(data="op")):
        twice = _infer_unchecked(g, (2 * _PROBE, 2 * _PROBE))
    out = {}
    for n, outs in probe.items():
        maps = [s for i, s in enumerate(outs) if len(s) == 3 and (twice is None or twice[n][i] != s)]
        if maps:
            out[n] = max(_PROBE // min(s[1], s[2]) for s in maps)
    return out


def _infer_unchecked(g: nx.DiGraph, size: tuple[int, int]) -> Shapes:
    shapes: Shapes = {}
    for n in topo_order(g):
        d = g.nodes[n]
        op = REGISTRY[d["op"]]
        if op.source:
            shapes[n] = _source_shapes(op, d["attrs"], size)
            continue
        try:
            shapes[n] = op.shape(d["attrs"], [shapes[r.node][r.out] for r in inputs(g, n)])
        except ShapeError as e:
            raise fail(g, n, f"{d['op']}: {e}") from None
    return shapes


def check_spatial(g: nx.DiGraph, size: tuple[int, int] = (640, 640)) -> None:
    """Spatial agreement for every input size at once (add, concat, … of maps of
    different strides); a failure is reported as it happens at ``size``."""
    try:
        record_max_stride(g)
    except GelError:
        try:
            _infer_unchecked(g, size)
        except GelError as e:
            e.message += f" (at input size {size[0]}×{size[1]})"
            raise
        raise


def record_max_stride(g: nx.DiGraph) -> tuple[int, str]:
    """Compute the largest stride and keep it as ``g.graph["max_stride"]``: validation
    does this, so the size check of every later shape inference is free (the deploy
    passes never change a stride, and their copies keep the record)."""
    g.graph["max_stride"] = max_stride(g)
    return g.graph["max_stride"]


def max_stride(g: nx.DiGraph) -> tuple[int, str]:
    st = strides(g)
    best = max(st.values())
    return best, next(n for n, v in st.items() if v == best)  # the first node to reach it


def check_size(g: nx.DiGraph, size: tuple[int, int]) -> None:
    h, w = size
    src = next((n for n, op in g.nodes(data="op") if REGISTRY[op].source), None)
    if h <= 0 or w <= 0:
        raise fail(g, src, f"input size {h}×{w} must be positive") if src else GelError("bad input size")
    try:
        s, node = g.graph.get("max_stride") or max_stride(g)
    except GelError:
        _infer_unchecked(g, size)  # a mismatch that does not depend on the size: say it at this size
        raise
    if h % s or w % s:
        near = f"{max(s, round(h / s) * s)}×{max(s, round(w / s) * s)}"
        raise fail(g, src, f"input size {h}×{w} is not a multiple of the network's largest stride, {s} "
                           f"(reached at '{node}'); try {near}")

