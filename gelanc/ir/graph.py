"""The IR: a ``networkx.DiGraph`` of primitive op instances.

A node's id is its scope path (``elan3.cv2.0.m.1.cv1.conv1.conv``), unique in the graph.
Its data:

``op``      registry key (:data:`gelanc.ops.REGISTRY`)
``attrs``   the op's validated pydantic attributes
``scope``   the same path, kept as data so it survives relabelling
``blocks``  the block instantiations it sits in, outermost first: ``(("elan3",
            "RepNCSPELAN4"), ("elan3.cv2.0", "RepNCSP"), ...)`` — for per-block reports
``span``    where in the `.gel` source it came from
``branch``  ``"main"`` or ``"aux"`` (PGI's auxiliary branch, removed for deploy)
``channels`` output shapes known at lowering time (channels only; H, W ``None``)
``folds``   after deploy, on a folded conv: the train graph's (conv, BatchNorm or None)
            branches it sums

An edge ``u → v`` carries ``uses``: a tuple of ``(position, output_index)`` pairs,
one for each argument of ``v`` fed from ``u`` (``concat(a, a)`` has two).
Graph-level data: ``model``, ``params`` (the model parameters it was lowered
with), ``outputs`` (a list of :class:`Ref`), ``paper`` (the paper's figures),
``source`` (the `.gel` files' texts, for rebuilding).
"""

from __future__ import annotations

from typing import NamedTuple

import networkx as nx

from gelanc.ops import REGISTRY


class Ref(NamedTuple):
    """One output of one node."""

    node: str
    out: int = 0

    def __str__(self) -> str:
        return self.node if self.out == 0 else f"{self.node}[{self.out}]"


def new_graph(model: str, params: dict | None = None) -> nx.DiGraph:
    return nx.DiGraph(model=model, params=dict(params or {}), outputs=[], paper={}, source={})


def add_node(g: nx.DiGraph, nid: str, op: str, attrs, inputs: list[Ref], **data) -> str:
    """Add op node ``nid`` reading ``inputs`` in order; returns ``nid``."""
    assert nid not in g, f"duplicate node id {nid}"
    g.add_node(nid, op=op, attrs=attrs, scope=data.pop("scope", nid), **data)
    _wire(g, nid, inputs)
    return nid


def connect(g: nx.DiGraph, nid: str, inputs: list[Ref]) -> None:
    """(Re)wire ``nid``'s ordered inputs."""
    for u in list(g.predecessors(nid)):
        g.remove_edge(u, nid)
    _wire(g, nid, inputs)


def _wire(g: nx.DiGraph, nid: str, inputs: list[Ref]) -> None:
    uses: dict[str, list[tuple[int, int]]] = {}
    for pos, ref in enumerate(inputs):  # one tuple per source, built once: linear in the inputs
        uses.setdefault(ref.node, []).append((pos, ref.out))
    for src, u in uses.items():
        if g.has_edge(src, nid):
            g.edges[src, nid]["uses"] += tuple(u)
        else:
            g.add_edge(src, nid, uses=tuple(u))


def inputs(g: nx.DiGraph, nid: str) -> list[Ref]:
    """``nid``'s inputs in argument order."""
    args = [(pos, u, out) for u, d in g._pred[nid].items() for pos, out in d["uses"]]
    args.sort()
    return [Ref(u, out) for _, u, out in args]


def consumers(g: nx.DiGraph, ref: Ref) -> list[tuple[str, int]]:
    """Every (node, argument position) that reads ``ref``."""
    return [(v, pos) for v, d in g._succ[ref.node].items() for pos, out in d["uses"] if out == ref.out]


def replace_uses(g: nx.DiGraph, old: Ref, new: Ref) -> None:
    """Make every reader of ``old`` read ``new`` instead (outputs included)."""
    for v, d in list(g._succ[old.node].items()):
        moved = tuple((pos, new.out) for pos, out in d["uses"] if out == old.out)
        if not moved:
            continue
        keep = tuple(u for u in d["uses"] if u[1] != old.out)
        if keep:
            d["uses"] = keep
        else:
            g.remove_edge(old.node, v)
        if g.has_edge(new.node, v):
            g.edges[new.node, v]["uses"] += moved
        else:
            g.add_edge(new.node, v, uses=moved)
    g.graph["outputs"] = [new if r == old else r for r in g.graph["outputs"]]


def topo_order(g: nx.DiGraph) -> list[str]:
    """A deterministic topological order: insertion order when that is one (lowering
    adds a node after its inputs, and the passes keep that), else a sort."""
    order = list(g)
    index = {n: i for i, n in enumerate(order)}
    if all(index[u] < index[v] for u, v in g.edges):
        return order
    return list(nx.lexicographical_topological_sort(g, key=index.__getitem__))


def weighted_nodes(g: nx.DiGraph) -> list[str]:
    return [n for n, op in g.nodes(data="op") if REGISTRY[op].has_weights]


def to_json(g: nx.DiGraph) -> dict:
    """A plain-data picture of the graph (for `gelanc build`, tools and tests)."""
    nodes = []
    for n in topo_order(g):
        d = g.nodes[n]
        nodes.append({
            "id": n, "op": d["op"], "attrs": d["attrs"].model_dump(), "branch": d["branch"],
            "inputs": [str(r) for r in inputs(g, n)],
            "span": d["span"].to_json() if d.get("span") else None,
            "blocks": [list(b) for b in d.get("blocks", ())],
        })
    return {"model": g.graph["model"], "params": g.graph["params"],
            "outputs": [str(r) for r in g.graph["outputs"]], "nodes": nodes}
