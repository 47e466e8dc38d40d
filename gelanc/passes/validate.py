"""Validation: the structural rules an IR must keep, whoever built or edited it.

Lowering a spec already enforces most of these as it goes; this pass re-checks a
graph after passes, or one loaded from JSON or built by hand: known ops with
valid attributes, arity, live references, no cycle, every node reaching an
output, no aux node feeding a main one, and every shape rule of the registry
(channels, and spatial sizes for all input sizes at once).
"""

from __future__ import annotations

import networkx as nx

from gelanc.diagnostics import GelError
from gelanc.ir.graph import inputs
from gelanc.ir.located import fail
from gelanc.ops import REGISTRY
from gelanc.passes import shapes


def validate(g: nx.DiGraph) -> None:
    """Raise a located :class:`GelError` at the first broken rule."""
    for n, d in g.nodes(data=True):
        op = REGISTRY.get(d.get("op"))
        if op is None:
            raise fail(g, n, f"unknown op '{d.get('op')}'")
        if not isinstance(d.get("attrs"), op.attrs):
            raise fail(g, n, f"{d['op']} node '{n}' has attributes of the wrong kind")
        ins = inputs(g, n)
        lo, hi = op.arity
        if len(ins) < lo or (hi is not None and len(ins) > hi):
            raise fail(g, n, f"{d['op']} node '{n}' has {len(ins)} inputs; it takes {lo}"
                             + ("" if hi == lo else f" to {hi}" if hi else " or more"))
        if sorted(p for p, _ in _positions(g, n)) != list(range(len(ins))):
            raise fail(g, n, f"node '{n}' has gaps in its argument positions")
        for r in ins:
            src = g.nodes[r.node]
            if r.out >= REGISTRY[src["op"]].num_outputs(src["attrs"]):
                raise fail(g, n, f"'{n}' reads output {r.out} of '{r.node}', which has fewer outputs")
            if src.get("branch") == "aux" and d.get("branch") == "main":
                raise fail(g, n, f"main-branch node '{n}' reads aux-branch node '{r.node}': the auxiliary "
                                 "branch may only feed itself (it is removed for deploy)")
    if not nx.is_directed_acyclic_graph(g):
        cycle = nx.find_cycle(g)
        path = " → ".join([u for u, _ in cycle] + [cycle[0][0]])
        raise fail(g, cycle[0][0], f"cycle in the graph: {path}")
    outs = g.graph.get("outputs", [])
    if not outs:
        raise GelError(f"model '{g.graph.get('model')}' has no outputs")
    live = set()
    for r in outs:
        if r.node not in g:
            raise GelError(f"output '{r}' names no node")
        live |= nx.ancestors(g, r.node) | {r.node}
    dead = [n for n in g if n not in live]
    if dead:
        raise dead_code(g, dead)
    shapes.check_spatial(g)  # every shape rule, channels and spatial sizes


def _positions(g: nx.DiGraph, n: str):
    return [(pos, out) for d in g._pred[n].values() for pos, out in d["uses"]]


def dead_code(g: nx.DiGraph, dead: list[str]) -> GelError:
    """Point at the outermost statement whose result is never used."""
    first = dead[0]
    d = g.nodes[first]
    sites = d.get("sites", ())
    err = GelError(f"the result of '{d['blocks'][0][0] if d.get('blocks') else first}' is never used: "
                   "it reaches no output of the model", sites[0] if sites else d.get("span"))
    if len(dead) > 1:
        err.with_note(None, f"{len(dead)} nodes in all reach no output")
    return err
