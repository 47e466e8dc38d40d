"""Cost: parameters and multiply-accumulates per node, rolled up per block.

The numbers follow the convention of the YOLOv9 paper's tables (the reference
implementation measured with thop 0.1.1); each op's rule lives in the registry.
GFLOPs are reported as 2 × MACs / 1e9, as the reference does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

from gelanc.ir.graph import inputs
from gelanc.ops import REGISTRY
from gelanc.passes.shapes import Shapes


@dataclass
class Cost:
    params: int = 0
    macs: int = 0

    @property
    def gflops(self) -> float:
        return 2 * self.macs / 1e9

    def __iadd__(self, other: Cost) -> Cost:
        self.params += other.params
        self.macs += other.macs
        return self

    def to_json(self) -> dict:
        return {"params": self.params, "gflops": round(self.gflops, 6), "macs": self.macs}


@dataclass
class Report:
    total: Cost
    nodes: dict[str, Cost]
    blocks: dict[str, tuple[str, Cost]] = field(default_factory=dict)  # scope → (block, cost)


def count(g: nx.DiGraph, shapes: Shapes) -> Report:
    """Per-node costs for concrete ``shapes``, their total, and per-block rollups."""
    total, per = Cost(), {}
    blocks: dict[str, tuple[str, Cost]] = {}
    for n, d in g.nodes(data=True):
        op = REGISTRY[d["op"]]
        ins = [shapes[r.node][r.out] for r in inputs(g, n)]
        c = Cost(op.params(d["attrs"], ins), op.macs(d["attrs"], ins, shapes[n]))
        per[n] = c
        total += c
        for scope, block in d.get("blocks", ()):
            blocks.setdefault(scope, (block, Cost()))[1].__iadd__(c)
    return Report(total, per, blocks)
