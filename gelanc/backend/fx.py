"""IR → ``torch.fx.GraphModule``: the torch stage of the pipeline.

The fx graph is written directly from the IR — one fx node per IR node, in the IR's
topological order; nothing is traced. Ops with weights (and nn.Upsample, so that
thop sees what the paper's counts count) become submodules whose qualified names
are the IR scopes, so ``state_dict()`` keys read like
``elan3.cv2.0.m.1.cv1.conv1.conv.weight``; the rest become calls of torch functions.

Each op's lowering lives with the op, in the registry (:mod:`gelanc.ops`); this
module is what they build with — the builder, the leaf modules (:class:`Detect`) and
the functions the generated code calls.

Behaviour follows the reference (WongKinYiu/yolov9): in train mode the module
returns each head's raw per-level maps; in eval mode the main head's decoded
predictions ``(B, 4 + nc, anchors)`` — xywh in input pixels and class
probabilities — beside those raw maps.
"""

from __future__ import annotations

import operator
import queue
import threading

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


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of each position of a map (ConvNeXt's channels-first
    LayerNorm): PyTorch's ``nn.LayerNorm`` on the channels-last view, so that thop counts
    it by its LayerNorm rule."""

    def __init__(self, channels: int, eps: float):
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2) if x.dim() == 4 else self.norm(x)


class DropPath(nn.Module):
    """Stochastic depth: in training, each sample's tensor zeroed with probability ``p``
    (the others scaled by 1 / (1 − p)); the identity otherwise."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


# ---- functions the generated code calls -------------------------------------------


def resize_to(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Nearest resize of ``x`` to ``ref``'s spatial size (CBFuse)."""
    return F.interpolate(x, size=ref.shape[2:], mode="nearest")


# ---- building the graph ----------------------------------------------------------------


class _Builder:
    def __init__(self, g: nx.DiGraph):
        self.g = g
        self.graph = fx.Graph()
        self.modules: dict[str, nn.Module] = {}
        self.values: dict[Ref, fx.Node] = {}
        self._strides: dict[str, int] | None = None
        self.to_draw: queue.Queue = queue.Queue()  # convolutions waiting for initial weights

    def placeholder(self, name: str) -> fx.Node:
        return self.graph.placeholder(name)

    def new_weights(self, m: nn.Module) -> None:
        """``m``, made on the "meta" device, gets its own parameters allocated here; their
        values are drawn (PyTorch's default initialisation) off the main thread."""
        for name, p in list(m.named_parameters(recurse=False)):
            setattr(m, name, nn.Parameter(torch.empty(p.shape)))
        self.to_draw.put(m)

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
            out = REGISTRY[d["op"]].lower(self, n, d["attrs"], [self.value(r) for r in refs], shapes)
            if REGISTRY[d["op"]].multi_output:
                self.values[Ref(n, -1)] = out
            else:
                self.values[Ref(n, 0)] = out
        refs = g.graph["outputs"]
        outs = [self.value(r) for r in refs]
        dual = [(REGISTRY[g.nodes[r.node]["op"]].head, g.nodes[r.node]["branch"]) for r in refs] == [
            (True, "main"), (True, "aux")]
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
    """The reference's initialisation: PyTorch's defaults (drawn while building), then
    each op's own ``init`` where the registry gives one (the detection head's bias
    prior). BatchNorm's eps 1e-3 and momentum 0.03 come from its attributes."""
    mods = dict(gm.named_modules())
    for n, op in g.nodes(data="op"):
        if (init := REGISTRY[op].init) is not None:
            init(g, n, mods)


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


# ---- deploy, carrying the weights ----------------------------------------------------


@torch.no_grad()
def deploy_module(gm: fx.GraphModule) -> fx.GraphModule:
    """The inference module: the IR's deploy passes, with the weights folded the same way.

    A conv the deploy passes folded lists in ``folds`` the train graph's (conv,
    BatchNorm or None) branches it sums (see :func:`gelanc.passes.deploy.folds`): its
    kernel is the sum over them of ``W·γ/σ`` (smaller kernels zero-padded to its size at
    the centre), its bias of ``(b − μ)·γ/σ + β``. Every other op with weights keeps its own.
    """
    from gelanc.passes.deploy import deploy

    g = ir_of(gm)
    d = deploy(g)
    out = to_fx(d, init=False)
    old = dict(gm.named_modules())
    new = dict(out.named_modules())
    for n, data in d.nodes(data=True):
        if "folds" in data:
            w, b = _folded_conv(data["folds"], old, data["attrs"].k)
            new[n].weight.copy_(w)
            if new[n].bias is not None:  # none when no branch had a bias or a BatchNorm
                new[n].bias.copy_(b)
        elif REGISTRY[data["op"]].has_weights:
            source = old[n].state_dict()
            new[n].load_state_dict({k: source[k] for k in new[n].state_dict()})
    out.meta["gelanc"].update({k: v for k, v in gm.meta["gelanc"].items() if k != "ir"}, deployed=True)
    return out.train(gm.training)


def _folded_conv(folds, old: dict[str, nn.Module], k: int):
    weight = bias = 0
    for c, bn in folds:
        w = old[c].weight
        b = old[c].bias if old[c].bias is not None else torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
        if bn is not None:
            bn = old[bn]
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
    return [mods[r.node] for r in g.graph["outputs"] if REGISTRY[g.nodes[r.node]["op"]].head]


def ir_of(gm: fx.GraphModule) -> nx.DiGraph:
    meta = getattr(gm, "meta", {}).get("gelanc")
    if not meta or "ir" not in meta:
        raise ValueError("this module was not compiled by gelanc (it carries no IR)")
    return meta["ir"]
