"""Pictures of the network: the IR drawn with graphviz.

At ``level="block"`` each statement of the model is one box (a block call, or a
primitive op written at the model's top level); ``expand`` opens named block
scopes into clusters of their own parts, recursively. At ``level="op"`` every IR
node is a box, inside nested clusters for the blocks it belongs to.

Every box shows its block or op, its scope, parameters and GFLOPs; every edge the
shape of the tensor it carries at the chosen image size. PGI's auxiliary branch is
drawn dashed on an orange fill; routes — a block handing out the parts of a split, as
CBLinear does to CBFuse — are purple. The DOT text
depends only on the IR (insertion order, no hashing), so the same spec gives the
same bytes.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx

from gelanc.atomic import write_bytes
from gelanc.ir.graph import inputs
from gelanc.ops import REGISTRY
from gelanc.passes.cost import Cost, count
from gelanc.passes.shapes import infer

MAIN_FILL, AUX_FILL = "#e8f0fb", "#fde8d0"
ROUTE_COLOR = "#7b3fa0"
INSTALL_HINT = ("the graphviz 'dot' program is not installed; wrote the .dot file instead. "
                "Install graphviz (Debian/Ubuntu: apt-get install graphviz; macOS: brew install graphviz; "
                "conda: conda install graphviz) and run: dot -Tsvg FILE.dot -o FILE.svg")


@dataclass
class Unit:
    """One box of the picture: a block instance or an op node."""

    id: str
    label: str  # block or op name
    cost: Cost = field(default_factory=Cost)
    branches: set[str] = field(default_factory=set)
    cluster: str = ""  # the expanded scope it is drawn inside ("" = top level)
    route: bool = False  # a block handing out the parts of a split (CBLinear): its out-edges are routes

    @property
    def aux(self) -> bool:
        return self.branches == {"aux"}


def _unit_of(d: dict, node: str, level: str, expand: set[str]) -> tuple[str, str, str]:
    """(unit id, label, enclosing cluster) of an IR node at this level of detail."""
    cluster = ""
    for scope, block in d.get("blocks", ()):
        if level == "op" or scope in expand:
            cluster = scope
            continue
        return scope, block, cluster
    return node, d["op"], cluster


def block_scopes(g: nx.DiGraph) -> dict[str, str]:
    """Every block instance's scope → its block name (what ``expand`` accepts)."""
    return {scope: block for _, bs in g.nodes(data="blocks") for scope, block in bs or ()}


def units(g: nx.DiGraph, size: tuple[int, int], level: str = "block", expand: tuple[str, ...] = ()):
    """The boxes, the edges between them (with shapes), and the clusters to draw."""
    if level not in ("block", "op"):
        raise ValueError(f"level must be 'block' or 'op', not '{level}'")
    shapes = infer(g, size)
    costs = count(g, shapes).nodes
    expand_set = set(expand)
    of: dict[str, str] = {}
    boxes: dict[str, Unit] = {}
    clusters: dict[str, tuple[str, str]] = {}  # scope → (block name, parent cluster)
    for n, d in g.nodes(data=True):
        uid, label, cluster = _unit_of(d, n, level, expand_set)
        of[n] = uid
        box = boxes.setdefault(uid, Unit(uid, label, cluster=cluster))
        box.cost += costs[n]
        box.branches.add(d["branch"])
        parent = ""
        for scope, block in d.get("blocks", ()):
            if scope == cluster or (scope in clusters and scope != uid):
                clusters.setdefault(scope, (block, parent))
            if scope != uid:
                parent = scope
            if scope == cluster:
                break
    edges: dict[tuple[str, str], tuple] = {}
    leaving: dict[str, set] = {}  # unit → the outputs of its nodes that other units read
    for n in g:
        for r in inputs(g, n):
            a, b = of[r.node], of[n]
            if a != b:
                edges.setdefault((a, b), shapes[r.node][r.out])
                leaving.setdefault(a, set()).add(r)
    for uid, refs in leaving.items():
        # a block that hands out the parts of a split (CBLinear, to CBFuse) routes them
        boxes[uid].route = uid not in g and any(REGISTRY[g.nodes[r.node]["op"]].multi_output for r in refs)
    return boxes, edges, clusters


def _shape(s: tuple) -> str:
    return "×".join(str(x) for x in s)


def _box_label(u: Unit, level: str) -> str:
    # inside a cluster, the scope relative to it: "cv1" in elan3, not "elan3.cv1"
    short = u.id[len(u.cluster) + 1:] if u.cluster and u.id.startswith(u.cluster + ".") else u.id
    head = u.label if short == u.label else f"{u.label}\\n{short}"
    detail = []
    if u.cost.params:
        detail.append(f"{u.cost.params / 1e6:.2f}M" if u.cost.params >= 1e5 else f"{u.cost.params:,}")
    if u.cost.macs:
        detail.append(f"{u.cost.gflops:.2f} GFLOPs" if u.cost.gflops >= 0.01 else f"{u.cost.gflops * 1e3:.1f} MFLOPs")
    return head + ("\\n" + " · ".join(detail) if detail else "")


def to_dot(g: nx.DiGraph, size: tuple[int, int] = (640, 640), level: str = "block",
           expand: tuple[str, ...] = (), title: str | None = None) -> str:
    """The picture as DOT source text."""
    import graphviz

    boxes, edges, clusters = units(g, size, level, expand)
    name = title or g.graph.get("model", "model")
    dot = graphviz.Digraph(name, graph_attr={
        "rankdir": "TB", "fontname": "Helvetica", "fontsize": "12", "nodesep": "0.25", "ranksep": "0.35",
        "label": f"{name} — {size[0]}×{size[1]}, {level} level", "labelloc": "t", "newrank": "true"},
        node_attr={"shape": "box", "style": "rounded,filled", "fontname": "Helvetica", "fontsize": "10",
                   "fillcolor": MAIN_FILL, "color": "#4a6fa5"},
        edge_attr={"fontname": "Helvetica", "fontsize": "8", "color": "#555555", "arrowsize": "0.6"})
    subgraphs: dict[str, graphviz.Digraph] = {}

    def cluster(scope: str) -> graphviz.Digraph:
        if scope == "":
            return dot
        if scope not in subgraphs:
            block, _ = clusters.get(scope, (scope, ""))
            aux = all(b.aux for b in boxes.values() if b.cluster == scope or b.cluster.startswith(scope + "."))
            subgraphs[scope] = graphviz.Digraph(name=f"cluster_{scope}", graph_attr={
                "label": f"{scope}: {block}", "style": "rounded,dashed" if aux else "rounded",
                "color": "#c8741a" if aux else "#7a8ca8", "fontsize": "10"})
        return subgraphs[scope]

    for u in boxes.values():
        attrs = {"class": "aux" if u.aux else "main"}
        if u.aux:
            attrs.update(fillcolor=AUX_FILL, color="#c8741a", style="rounded,filled,dashed")
        if u.route:
            attrs.update(color=ROUTE_COLOR, penwidth="1.5")
        cluster(u.cluster).node(u.id, _box_label(u, level), **attrs)
    # nest clusters, innermost first, in a fixed order
    for scope in sorted(subgraphs, key=lambda s: (-s.count("."), s)):
        parent = clusters.get(scope, ("", ""))[1]
        while parent and parent not in subgraphs and parent in clusters:
            parent = clusters[parent][1]
        cluster(parent if parent in subgraphs else "").subgraph(subgraphs[scope])
    for (a, b), shape in edges.items():
        attrs = {"label": _shape(shape)}
        if boxes[a].route:
            attrs.update(color=ROUTE_COLOR, fontcolor=ROUTE_COLOR, style="dashed")
        elif boxes[a].aux or boxes[b].aux:
            attrs.update(color="#c8741a", style="dashed")
        dot.edge(a, b, **attrs)
    return dot.source


def render(dot_source: str, path: str | Path) -> tuple[Path, bool]:
    """Write ``path`` (.dot as is; .svg/.png/.pdf through `dot`). Returns the file
    written and whether it was rendered (False: `dot` is missing, the .dot was written)."""
    import subprocess
    import tempfile

    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "dot" or shutil.which("dot") is None:
        target = path if fmt == "dot" else path.with_suffix(".dot")
        write_bytes(target, dot_source.encode())
        return target, fmt == "dot"
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "graph.dot"
        src.write_text(dot_source, encoding="utf-8")
        out = subprocess.run(["dot", f"-T{fmt}", str(src)], capture_output=True, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"dot failed: {out.stderr.decode(errors='replace').strip()}")
    write_bytes(path, out.stdout)
    return path, True
