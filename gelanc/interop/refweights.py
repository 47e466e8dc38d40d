"""Weights between gelanc modules and the reference's layout (``model.N.<submodule>``).

The mapping is derived from structure, not written per model. A spec's *units* are
its top-level statements in evaluation order — each block instance, and each
primitive the model calls itself (``concat``, ``upsample``) — exactly the layers the
reference's YAML lists, because the zoo's specs are written layer for layer and its
blocks name their submodules as the reference's classes do. So unit ``elan3`` holding
``cv1.conv.weight`` is some ``model.N.cv1.conv.weight``; which N is found by aligning the
two sequences of layers by their *signatures* (the relative names and shapes of their
tensors) with an edit-distance alignment that may skip parameter-free layers on either
side (the reference's ``Silence``).

Exporting needs the indices without a checkpoint to align with: they are the units'
positions, shifted by one where the reference's YAML starts with a ``Silence`` layer —
in the models where more than one layer reads the image, which then names it layer 0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from torch import fx

from gelanc.errors import UserError
from gelanc.ir.graph import topo_order
from gelanc.ops import REGISTRY


class WeightsError(UserError):
    """Weights that do not fit the spec (a user error: exit 2)."""


@dataclass
class Layer:
    """A unit of a gelanc module or a layer of a reference model, and its tensors by relative name."""

    name: str
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    def signature(self) -> tuple:
        return tuple(sorted((k, tuple(v.shape)) for k, v in self.tensors.items()))


def units(gm: fx.GraphModule) -> list[Layer]:
    """The module's top-level units in evaluation order, with their tensors."""
    from gelanc.backend.fx import ir_of

    g = ir_of(gm)
    order: list[str] = []
    for n in topo_order(g):
        d = g.nodes[n]
        if REGISTRY[d["op"]].source:
            continue
        unit = d["blocks"][0][0] if d["blocks"] else n
        if unit not in order:
            order.append(unit)
    layers = {u: Layer(u) for u in order}
    for key, t in gm.state_dict().items():
        for u in (key[: i] for i in range(len(key)) if key[i] == "."):
            if u in layers:
                layers[u].tensors[key[len(u) + 1:]] = t
                break
    return [layers[u] for u in order]


def silence_first(gm: fx.GraphModule) -> bool:
    """Whether the reference's YAML of this model starts with a ``Silence`` layer: it does
    when more than one layer reads the image (PGI's auxiliary branch, gelan-e's second
    backbone), so that they can name it as layer 0."""
    from gelanc.backend.fx import ir_of

    g = ir_of(gm)
    image = next(n for n, op in g.nodes(data="op") if REGISTRY[op].source)
    return g.out_degree(image) > 1


def reference_layers(state: dict[str, torch.Tensor]) -> list[Layer]:
    """A reference state_dict (``model.N.…``) as its layers, in index order; indices
    with no tensors (Concat, Upsample, Silence) are empty layers."""
    by_index: dict[int, Layer] = {}
    for key, t in state.items():
        m = re.match(r"(?:model\.)?(\d+)\.(.+)$", key)
        if not m:
            raise WeightsError(f"'{key}' is not a layer's tensor in the reference's layout (model.N.…)")
        i = int(m.group(1))
        by_index.setdefault(i, Layer(str(i))).tensors[m.group(2)] = t
    top = max(by_index, default=-1)
    return [by_index.get(i, Layer(str(i))) for i in range(top + 1)]


def _children(layer: Layer) -> dict[str, tuple]:
    """A layer's tensors grouped by their first name part (its submodules), as signatures."""
    groups: dict[str, dict[str, tuple]] = {}
    for k, v in layer.tensors.items():
        head, _, rest = k.partition(".")
        groups.setdefault(head, {})[rest] = tuple(v.shape)
    return {h: tuple(sorted(g.items())) for h, g in groups.items()}


def embed(ours: Layer, theirs: Layer) -> dict[str, str] | None:
    """Our tensor names → theirs, where our layer is theirs or a part of it with its
    submodules renamed; None where it is not.

    The part case is PGI's dual head: a gelan model's ``DDetect`` (cv2, cv3, dfl) is the
    main half of the yolov9 checkpoint's ``DualDDetect`` (cv4, cv5, dfl2 — the reference
    puts the main half second), found as the submodules of equal signature, the later
    ones preferred."""
    if ours.signature() == theirs.signature():
        return {k: k for k in ours.tensors}
    mine, other = _children(ours), _children(theirs)
    if len(mine) >= len(other):
        return None
    taken: set[str] = set()
    rename: dict[str, str] = {}
    for head, sig in mine.items():
        match = next((h for h in reversed(list(other)) if other[h] == sig and h not in taken), None)
        if match is None:
            return None
        taken.add(match)
        rename[head] = match
    return {k: f"{rename[k.partition('.')[0]]}.{k.partition('.')[2]}" for k in ours.tensors}


def align(ours: list[Layer], theirs: list[Layer]) -> dict[str, tuple[str, dict[str, str]]]:
    """Our unit name → (their layer name, our tensor names → theirs), in order.

    An edit-distance alignment: matching a layer to its equal costs nothing, to a layer
    it is a renamed part of a little; leaving out a layer costs 1 — a layer with tensors,
    far more, so that every weight finds its place or the alignment says which could not."""
    n, m = len(ours), len(theirs)
    inf = float("inf")
    cost = [[0.0] * (m + 1) for _ in range(n + 1)]

    def skip(layer: Layer) -> float:
        return 1000.0 if layer.tensors else 1.0

    fits: dict[tuple[int, int], dict[str, str] | None] = {}

    def fit(i: int, j: int) -> dict[str, str] | None:
        if (i, j) not in fits:
            fits[(i, j)] = embed(ours[i], theirs[j]) if bool(ours[i].tensors) == bool(theirs[j].tensors) else None
        return fits[(i, j)]

    def match_cost(i: int, j: int) -> float:
        f = fit(i, j)
        if f is None:
            return inf
        return 0.0 if ours[i].signature() == theirs[j].signature() else 0.5

    for i in range(1, n + 1):
        cost[i][0] = cost[i - 1][0] + skip(ours[i - 1])
    for j in range(1, m + 1):
        cost[0][j] = cost[0][j - 1] + skip(theirs[j - 1])
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost[i][j] = min(cost[i - 1][j] + skip(ours[i - 1]), cost[i][j - 1] + skip(theirs[j - 1]),
                             cost[i - 1][j - 1] + match_cost(i - 1, j - 1))
    pairs: dict[str, tuple[str, dict[str, str]]] = {}
    i, j = n, m
    while i > 0 and j > 0:
        if cost[i][j] == cost[i - 1][j - 1] + match_cost(i - 1, j - 1):
            pairs[ours[i - 1].name] = (theirs[j - 1].name, fit(i - 1, j - 1))
            i, j = i - 1, j - 1
        elif cost[i][j] == cost[i - 1][j] + skip(ours[i - 1]):
            i -= 1
        else:
            j -= 1
    return pairs


def load_reference(gm: fx.GraphModule, state: dict[str, torch.Tensor], source: str = "the checkpoint") -> None:
    """Copy a reference-layout state_dict into ``gm`` (every tensor of ``gm`` must be found)."""
    ours, theirs = units(gm), reference_layers(state)
    pairs = align(ours, theirs)
    missing = [u for u in ours if u.tensors and u.name not in pairs]
    if missing:
        u = missing[0]
        near = [t.name for t in theirs if t.tensors and set(t.tensors) == set(u.tensors)]
        hint = (f"; layer {near[0]} has its tensors with other shapes (a different width or nc?)" if near
                else "; no layer of the checkpoint has its tensors (a different block?)")
        raise WeightsError(f"{source} has no layer for {u.name} ({len(u.tensors)} tensors, e.g. "
                           f"{next(iter(u.tensors))}){hint}")
    used = {name for name, _ in pairs.values()}
    extra = [t.name for t in theirs if t.tensors and t.name not in used]
    by_name = {t.name: t for t in theirs}
    new = {}
    for u in ours:
        if u.name in pairs:
            layer, names = by_name[pairs[u.name][0]], pairs[u.name][1]
            new.update({f"{u.name}.{k}": layer.tensors[names[k]] for k in u.tensors})
    with torch.no_grad():
        for k, v in gm.state_dict().items():
            if k in new:
                v.copy_(new[k].to(v.dtype))
    gm.meta["gelanc"]["imported"] = {"source": source, "layers": {u: name for u, (name, _) in pairs.items()},
                                     "dropped": extra}


def export_reference(gm: fx.GraphModule) -> dict[str, torch.Tensor]:
    """``gm``'s tensors in the reference's layout: ``model.N.<relative name>``."""
    shift = 1 if silence_first(gm) else 0
    out = {}
    for i, u in enumerate(units(gm)):
        for k, t in u.tensors.items():
            out[f"model.{i + shift}.{k}"] = t.detach().cpu().clone()
    return out


def reference_state(ckpt) -> tuple[dict[str, torch.Tensor], dict]:
    """The reference-layout tensors of what :func:`gelanc.interop.refckpt.read` returned, and what
    the file says of the model (``nc``, ``names``) where it says it.

    Takes a reference checkpoint (``{"model": <record>, "ema": …}``, the EMA preferred),
    or a plain state_dict in the reference's layout (what ``gelanc export-weights`` writes)."""
    from gelanc.interop.refckpt import model_of, tensors
    from gelanc.safeload import printable

    for _ in range(8):  # {"model": {"model": state_dict}}: a few levels, not a hostile file's thousands
        if isinstance(ckpt, dict) and ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
            return dict(ckpt), {}
        if not (isinstance(ckpt, dict) and isinstance(ckpt.get("model"), dict)):
            break
        ckpt = ckpt["model"]
    model = model_of(ckpt)
    info: dict = {}
    yaml = model.state.get("yaml")
    if isinstance(yaml, dict) and type(yaml.get("nc")) is int:
        info["nc"] = yaml["nc"]
    names = model.state.get("names")
    if isinstance(names, dict) and all(type(k) is int for k in names):
        names = [names[k] for k in sorted(names)]
    # class names end up in our checkpoint and on screen: only short, printable text is kept
    if isinstance(names, list) and all(isinstance(n, str) and 0 < len(n) <= 200 and printable(n, 200) == n
                                       for n in names):
        info["names"] = names
    flat = tensors(model)
    if not any(k.startswith("model.") for k in flat):
        raise WeightsError(f"the checkpoint's {model.cls_path} has no 'model' layers (is it a detection model?)")
    return {k: v for k, v in flat.items() if k.startswith("model.")}, info
