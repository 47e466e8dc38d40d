"""IR → ``torch.fx.GraphModule``: the torch stage of the pipeline.

The fx graph is written directly from the IR — one fx node per IR node, in the IR's
topological order; nothing is traced. Ops with weights (and nn.Upsample, so that
thop sees what the paper's counts count) become submodules whose qualified names
are the IR scopes, so ``state_dict()`` keys read like
``elan3.cv2.0.m.1.cv1.conv1.conv.weight``; the rest become calls of torch functions.

Each registry op has exactly one entry in :data:`LOWERINGS` here (the registry
itself stays torch-free); an import-time check keeps the two tables in step.

Behaviour follows the reference (WongKinYiu/yolov9): in train mode the module
returns each head's raw per-level maps; in eval mode the main head's decoded
predictions ``(B, 4 + nc, anchors)`` — xywh in input pixels and class
probabilities — beside those raw maps.
"""

from __future__ import annotations

import math
import operator
import queue
import threading
from collections.abc import Callable
from pathlib import Path

import networkx as nx
import torch
import torch.nn.functional as F
from torch import fx, nn

from gelanc.ir.graph import Ref, inputs, topo_order
from gelanc.limits import MAX_PARAMS
from gelanc.ops import REGISTRY
from gelanc.passes.shapes import strides

# ---- leaf modules ---------------------------------------------------------------


def make_anchors(maps: list[torch.Tensor], strides: list[float], offset: float = 0.5,
                 dtype: torch.dtype | None = None):
    """Anchor centres (A, 2) in grid units, and each anchor's stride (A, 1), in ``dtype``
    (default: the maps')."""
    points, strided = [], []
    for m, s in zip(maps, strides):
        h, w, dt = m.shape[2], m.shape[3], dtype or m.dtype
        sx = torch.arange(w, device=m.device, dtype=dt) + offset
        sy = torch.arange(h, device=m.device, dtype=dt) + offset
        yy, xx = torch.meshgrid(sy, sx, indexing="ij")
        points.append(torch.stack((xx, yy), -1).view(-1, 2))
        strided.append(torch.full((h * w, 1), s, dtype=dt, device=m.device))
    return torch.cat(points), torch.cat(strided)


class Detect(nn.Module):
    """The `detect` op: decodes a head's per-level maps.

    ``conv`` is the DFL projection — a fixed 1×1 conv whose weights are the bin
    indices 0 … reg_max−1, as in the reference (and counted as parameters, as thop
    counts them). Train mode: the maps as they are; eval mode: ``(y, maps)``.
    """

    def __init__(self, nc: int, reg_max: int, strides: list[float]):
        super().__init__()
        self.nc, self.reg_max, self.strides = nc, reg_max, list(strides)
        # made on "meta" and given its fixed weights: no draw from the random generator,
        # which the weight-drawing thread is using at the same time (see _Builder.build)
        self.conv = nn.Conv2d(reg_max, 1, 1, bias=False, device="meta")
        self.conv.weight = nn.Parameter(torch.arange(reg_max, dtype=torch.float).view(1, reg_max, 1, 1),
                                        requires_grad=False)

    def forward(self, *maps: torch.Tensor):
        maps = list(maps)
        if self.training:
            return maps
        b = maps[0].shape[0]
        # decoded in float32 whatever the maps' precision: in bf16, pixel coordinates above
        # 512 would be rounded to 4 px, which costs mAP@0.5:0.95 for nothing
        x = torch.cat([m.view(b, 4 * self.reg_max + self.nc, -1) for m in maps], 2).float()
        box, cls = x.split((4 * self.reg_max, self.nc), 1)
        a = box.shape[-1]
        probs = box.view(b, 4, self.reg_max, a).transpose(2, 1).softmax(1)
        dist = self.conv(probs.to(self.conv.weight.dtype)).float().view(b, 4, a)
        anchors, stride = make_anchors(maps, self.strides, dtype=torch.float32)
        lt, rb = dist.chunk(2, 1)
        anchors = anchors.transpose(0, 1).unsqueeze(0)
        x1y1, x2y2 = anchors - lt, anchors + rb
        xywh = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1) * stride.transpose(0, 1)
        return torch.cat((xywh, cls.sigmoid()), 1), maps

    def extra_repr(self) -> str:
        return f"nc={self.nc}, reg_max={self.reg_max}, strides={self.strides}"


class DualOutput(nn.Module):
    """A model with PGI's auxiliary head: train mode returns (main maps, aux maps);
    eval mode the main head's predictions and both heads' maps."""

    def forward(self, main, aux):
        if self.training:
            return main, aux
        return main[0], (main[1], aux[1])


# ---- op lowerings ---------------------------------------------------------------

# A lowering gets (builder, IR node id, its attrs, its input fx nodes, their shapes) and
# returns the fx node of its output (a tuple-valued one for multi-output ops).
Lowering = Callable[["_Builder", str, object, list, list], fx.Node]


def resize_to(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Nearest resize of ``x`` to ``ref``'s spatial size (CBFuse)."""
    return F.interpolate(x, size=ref.shape[2:], mode="nearest")


def _conv(b, n, a, xs, shapes):
    c1 = shapes[0][0]
    # created uninitialised: to_fx draws the initial weights in a background thread
    m = nn.Conv2d(c1, a.c2, a.k, a.s, a.padding, a.dilation, a.groups, a.bias, device="meta")
    m.weight = nn.Parameter(torch.empty(m.weight.shape))
    if a.bias:
        m.bias = nn.Parameter(torch.empty(a.c2))
    b.to_draw.put(m)
    return b.module(n, m, xs)


def _add(b, n, a, xs, shapes):
    out = xs[0]
    for x in xs[1:]:
        out = b.call(n, operator.add, (out, x))
    return out


def _pool(fn):
    def lower(b, n, a, xs, shapes):
        kw = {"ceil_mode": a.ceil_mode}
        if fn is F.avg_pool2d:
            kw["count_include_pad"] = True  # as the reference's avg_pool2d(x, 2, 1, 0, False, True)
        return b.call(n, fn, (xs[0], a.k, a.s, a.padding), kw)
    return lower


def _detect(b, n, a, xs, shapes):
    return b.module(n, Detect(a.nc, a.reg_max, b.level_strides(n)), xs)


LOWERINGS: dict[str, Lowering] = {
    "input": lambda b, n, a, xs, shapes: b.graph.placeholder("x"),
    "conv2d": _conv,
    "batchnorm": lambda b, n, a, xs, s: b.module(n, nn.BatchNorm2d(s[0][0], eps=a.eps, momentum=a.momentum), xs),
    "silu": lambda b, n, a, xs, s: b.call(n, F.silu, (xs[0],)),
    "relu": lambda b, n, a, xs, s: b.call(n, F.relu, (xs[0],)),
    "sigmoid": lambda b, n, a, xs, s: b.call(n, torch.sigmoid, (xs[0],)),
    "identity": lambda b, n, a, xs, s: xs[0],
    "add": _add,
    "concat": lambda b, n, a, xs, s: b.call(n, torch.cat, (list(xs), 1)),
    "chunk": lambda b, n, a, xs, s: b.call(n, torch.chunk, (xs[0], a.n, 1)),
    "split": lambda b, n, a, xs, s: b.call(n, torch.split, (xs[0], list(a.sizes), 1)),
    "upsample": lambda b, n, a, xs, s: b.module(n, nn.Upsample(scale_factor=a.scale, mode=a.mode), xs),
    "maxpool": _pool(F.max_pool2d),
    "avgpool": _pool(F.avg_pool2d),
    "resize_to": lambda b, n, a, xs, s: b.call(n, resize_to, (xs[0], xs[1])),
    "detect": _detect,
}
assert set(LOWERINGS) == set(REGISTRY), f"ops without a torch lowering: {set(REGISTRY) ^ set(LOWERINGS)}"


class _Builder:
    def __init__(self, g: nx.DiGraph):
        self.g = g
        self.graph = fx.Graph()
        self.modules: dict[str, nn.Module] = {}
        self.values: dict[Ref, fx.Node] = {}
        self._strides: dict[str, int] | None = None
        self.to_draw: queue.Queue = queue.Queue()  # convolutions waiting for initial weights

    def call(self, name: str, fn, args, kwargs=None) -> fx.Node:
        """A function call named after its IR node, so the generated code reads like the spec."""
        return self.graph.create_node("call_function", fn, tuple(args), kwargs or {}, name=name.replace(".", "_"))

    def module(self, name: str, m: nn.Module, args) -> fx.Node:
        self.modules[name] = m
        return self.graph.call_module(name, tuple(args))

    def level_strides(self, node: str) -> list[float]:
        if self._strides is None:
            self._strides = strides(self.g)
        return [float(self._strides[r.node]) for r in inputs(self.g, node)]

    def value(self, ref: Ref) -> fx.Node:
        if ref not in self.values:  # one output of a multi-output op
            whole = self.values[Ref(ref.node, -1)]
            self.values[ref] = self.call(f"{ref.node}_{ref.out}", operator.getitem, (whole, ref.out))
        return self.values[ref]

    def build(self, init: bool = True) -> fx.GraphModule:
        # Drawing the initial weights (PyTorch's default, as the reference) is most of the
        # cost of compiling a large model. torch releases the GIL while it draws, so one
        # thread draws each convolution's weights as soon as it is created, beside the
        # graph building and code generation — in creation order: the same weights for a seed.
        drawer = threading.Thread(target=_draw, args=(self.to_draw, init))
        drawer.start()
        try:
            return self._build()
        finally:
            self.to_draw.put(None)
            drawer.join()

    def _build(self) -> fx.GraphModule:
        g = self.g
        for n in topo_order(g):
            d = g.nodes[n]
            refs = inputs(g, n)
            shapes = [g.nodes[r.node]["channels"][r.out] for r in refs]
            out = LOWERINGS[d["op"]](self, n, d["attrs"], [self.value(r) for r in refs], shapes)
            if REGISTRY[d["op"]].multi_output:
                self.values[Ref(n, -1)] = out
            else:
                self.values[Ref(n, 0)] = out
        refs = g.graph["outputs"]
        outs = [self.value(r) for r in refs]
        dual = [(g.nodes[r.node]["op"], g.nodes[r.node]["branch"]) for r in refs] == [
            ("detect", "main"), ("detect", "aux")]
        if dual:  # PGI's dual head
            self.modules["dual_output"] = DualOutput()
            self.graph.output(self.graph.call_module("dual_output", tuple(outs)))
        else:
            self.graph.output(outs[0] if len(outs) == 1 else tuple(outs))
        return fx.GraphModule(self.modules, self.graph, class_name=_class_name(g.graph["model"]))


@torch.no_grad()
def _draw(pending: queue.Queue, init: bool) -> None:
    while (m := pending.get()) is not None:
        if init:
            m.reset_parameters()


def _class_name(model: str) -> str:
    return "".join(p.capitalize() for p in model.split("_")) or "Model"


# ---- initialisation -------------------------------------------------------------


def initialise(gm: fx.GraphModule, g: nx.DiGraph) -> None:
    """The reference's initialisation: PyTorch's defaults for convolutions and
    BatchNorm (eps 1e-3, momentum 0.03 come from the attributes), and each detection
    head's bias prior — box logits 1.0, class logits log(5 / nc / (640 / stride)²),
    i.e. about five objects of nc classes in a 640 image."""
    mods = dict(gm.named_modules())
    for n, d in g.nodes(data=True):
        if d["op"] != "detect":
            continue
        a, det = d["attrs"], mods[n]
        for level, stride in zip(inputs(g, n), det.strides):
            box, cls = _branch_convs(g, level.node, a)
            if box:
                nn.init.constant_(mods[box].bias, 1.0)
            if cls:
                nn.init.constant_(mods[cls].bias[: a.nc], math.log(5 / a.nc / (640 / stride) ** 2))


def _branch_convs(g: nx.DiGraph, node: str, a) -> tuple[str | None, str | None]:
    """The last conv of a level's box branch (4·reg_max wide) and class branch (nc wide):
    the inputs of the concat that feeds the head, found by width, not by name."""
    if g.nodes[node]["op"] != "concat":
        return None, None
    box = cls = None
    for r in inputs(g, node):
        src = g.nodes[r.node]
        if src["op"] == "conv2d" and src["attrs"].bias:
            if src["attrs"].c2 == 4 * a.reg_max and box is None:
                box = r.node
            elif src["attrs"].c2 == a.nc:
                cls = r.node
    return box, cls


def to_fx(g: nx.DiGraph, init: bool = True, max_params: int = MAX_PARAMS) -> fx.GraphModule:
    """The IR as a GraphModule (weights initialised as the reference initialises them).

    The one place a network's weights are allocated: a graph of more than ``max_params``
    parameters is a located GelError first."""
    from gelanc.passes.budget import check_params

    check_params(g, max_params)
    gm = _Builder(g).build(init)
    if init:
        initialise(gm, g)
    gm.meta["gelanc"] = {"ir": g, "deployed": False}
    return gm


def source_of(path_or_text: str | Path):
    """A spec given as a path or as `.gel` text → its Program."""
    from gelanc.dsl.loader import load, load_text

    text = str(path_or_text)
    if "\n" in text or "{" in text:
        return load_text(text, "<string>")
    return load(path_or_text)


# ---- deploy, carrying the weights ----------------------------------------------------


@torch.no_grad()
def deploy_module(gm: fx.GraphModule) -> fx.GraphModule:
    """The inference module: the IR's deploy passes, with the weights folded the same way.

    Each conv of the deploy graph lists in ``origin`` the train-graph nodes it
    absorbed: its own conv and BatchNorm, and for a merged RepConvN the parallel 1×1
    conv and its BatchNorm. The folded kernel is the sum over those branches of
    ``W·γ/σ`` (1×1 kernels zero-padded to 3×3), the bias ``(b − μ)·γ/σ + β``.
    """
    from gelanc.passes.deploy import deploy

    g = ir_of(gm)
    d = deploy(g)
    out = to_fx(d, init=False)
    old = dict(gm.named_modules())
    new = dict(out.named_modules())
    for n, data in d.nodes(data=True):
        if data["op"] == "conv2d":
            w, b = _folded_conv(g, data.get("origin", (n,)), old, data["attrs"].k)
            new[n].weight.copy_(w)
            if new[n].bias is not None:
                new[n].bias.copy_(b)
        elif REGISTRY[data["op"]].has_weights:  # unfolded BatchNorm, detect: as they are
            source = old[n].state_dict()
            new[n].load_state_dict({k: source[k] for k in new[n].state_dict()})
    out.meta["gelanc"].update({k: v for k, v in gm.meta["gelanc"].items() if k != "ir"}, deployed=True)
    return out.train(gm.training)


def _folded_conv(g: nx.DiGraph, origin, old: dict[str, nn.Module], k: int):
    convs = [o for o in origin if g.nodes[o]["op"] == "conv2d"]
    bn_of = {inputs(g, o)[0].node: o for o in origin if g.nodes[o]["op"] == "batchnorm"}
    weight = bias = 0
    for c in convs:
        conv = old[c]
        w = conv.weight
        b = conv.bias if conv.bias is not None else torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
        if c in bn_of:
            bn = old[bn_of[c]]
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            w = w * scale.view(-1, 1, 1, 1)
            b = (b - bn.running_mean) * scale + bn.bias
        pad = (k - w.shape[-1]) // 2
        weight = weight + F.pad(w, [pad] * 4)
        bias = bias + b
    return weight, bias


def heads(gm: fx.GraphModule) -> list[Detect]:
    """The module's detection heads in output order: the main head, then PGI's aux head."""
    g = ir_of(gm)
    mods = dict(gm.named_modules())
    return [mods[r.node] for r in g.graph["outputs"] if g.nodes[r.node]["op"] == "detect"]


def ir_of(gm: fx.GraphModule) -> nx.DiGraph:
    meta = getattr(gm, "meta", {}).get("gelanc")
    if not meta or "ir" not in meta:
        raise ValueError("this module was not compiled by gelanc (it carries no IR)")
    return meta["ir"]
