"""Stats: the train and deploy graphs' counts, side by side with the paper's.

The counting end of the pipeline (:mod:`gelanc.pipeline` gives the checked IR):
infer shapes → count, then deploy transforms → infer → count.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from gelanc.passes.cost import Cost, Report, count
from gelanc.passes.deploy import deploy
from gelanc.passes.shapes import infer


def parse_imgsz(text: str | int | tuple) -> tuple[int, int]:
    """``640`` → (640, 640); ``"384x640"`` → (384, 640) (height × width)."""
    if isinstance(text, int):
        return (text, text)
    if isinstance(text, tuple):
        return text
    parts = str(text).lower().replace("×", "x").split("x")
    if len(parts) not in (1, 2) or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"image size must be N or HxW, got '{text}'")
    h, w = (int(parts[0]), int(parts[-1]))
    return (h, w)


@dataclass
class GraphStats:
    report: Report
    nodes: int

    def to_json(self) -> dict:
        return {**self.report.total.to_json(), "nodes": self.nodes}


def _stats(g: nx.DiGraph, size: tuple[int, int], check_stride: bool = True) -> GraphStats:
    return GraphStats(count(g, infer(g, size, check_stride)), g.number_of_nodes())


def model_stats(g: nx.DiGraph, size: tuple[int, int] = (640, 640), per_block: bool = False) -> dict:
    """One model's figures as plain data (the ``--json`` shape of ``gelanc stats``)."""
    train = _stats(g, size)
    dep_graph = deploy(g)
    dep = _stats(dep_graph, size, check_stride=False)  # checked on the train graph
    out = {
        "model": g.graph["model"],
        "file": g.graph.get("file"),
        "imgsz": size[0] if size[0] == size[1] else list(size),
        "train": train.to_json(),
        "deploy": dep.to_json(),
        "paper": dict(g.graph.get("paper", {})),
        "aux_nodes": sum(1 for _, b in g.nodes(data="branch") if b == "aux"),
    }
    if per_block:
        dep_blocks = top_blocks(dep_graph, dep.report)
        out["blocks"] = [
            {"scope": scope, "block": block, "branch": branch, "train": cost.to_json(),
             "deploy": dep_blocks[scope][1].to_json() if scope in dep_blocks else None}
            for scope, (block, cost, branch) in top_blocks(g, train.report).items()
        ]
    return out


def top_blocks(g: nx.DiGraph, report: Report) -> dict[str, tuple[str, Cost, str]]:
    """Costs rolled up to the model's own statements: each top-level block call, or op."""
    rows: dict[str, tuple[str, Cost, str]] = {}
    for n, d in g.nodes(data=True):
        scope, block = d["blocks"][0] if d.get("blocks") else (n, d["op"])
        block_, cost, branch = rows.get(scope, (block, Cost(), d["branch"]))
        cost += report.nodes[n]
        # a block with nodes on both branches (PGI's dual head) is "both"
        rows[scope] = (block_, cost, branch if branch == d["branch"] else "both")
    return rows
