"""Deploy transforms: the inference graph, as the reference's re-parameterisation makes it.

* :func:`strip_aux` removes PGI's auxiliary branch and its half of the dual head;
* :func:`drop_train_only` removes the ops that act in training only (dropout; the
  registry's ``train_only``), their readers reading their input instead;
* :func:`fold_bn` folds each BatchNorm into the convolution that feeds it;
* :func:`merge_parallel_convs` merges RepConvN's parallel 3×3 and 1×1 convolutions
  of one input into a single 3×3 (RepVGG's re-parameterisation) — and any odd k×k
  whose padding centres it, dilated or not, with a parallel 1×1.

They match patterns in the graph, not block names, so any spec that has the
pattern is transformed. Each returns a new graph; a folded conv keeps the id of the
convolution it grew from and lists in ``folds`` the (conv, BatchNorm) pairs of the
train graph it sums, which is all a weight-carrying compiler needs to fold the
tensors the same way — without knowing an op by name.
"""

from __future__ import annotations

import networkx as nx

from gelanc.ir.graph import Ref, consumers, inputs, replace_uses, topo_order
from gelanc.ops import REGISTRY


def strip_aux(g: nx.DiGraph) -> nx.DiGraph:
    return _strip_aux(g.copy())


def _strip_aux(out: nx.DiGraph) -> nx.DiGraph:
    out.remove_nodes_from([n for n, b in out.nodes(data="branch") if b == "aux"])
    out.graph["outputs"] = [r for r in out.graph["outputs"] if r.node in out]
    return out


def drop_train_only(g: nx.DiGraph) -> nx.DiGraph:
    return _drop_train_only(g.copy())


def _drop_train_only(out: nx.DiGraph) -> nx.DiGraph:
    for n in [n for n, op in out.nodes(data="op") if REGISTRY[op].train_only]:
        replace_uses(out, Ref(n), inputs(out, n)[0])
        out.remove_node(n)
    return out


def _sole_reader(g: nx.DiGraph, ref: Ref, reader: str) -> bool:
    return ref.out == 0 and [v for v, _ in consumers(g, ref)] == [reader] and ref not in g.graph["outputs"]


def folds(g: nx.DiGraph, conv: str) -> tuple[tuple[str, str | None], ...]:
    """The train-graph branches a deploy conv sums: (conv, the BatchNorm folded into it or
    None) for each — its own, and for a merged RepConvN the parallel 1×1's too."""
    return g.nodes[conv].get("folds", ((conv, None),))


def fold_bn(g: nx.DiGraph) -> nx.DiGraph:
    return _fold_bn(g.copy())


def _fold_bn(out: nx.DiGraph) -> nx.DiGraph:
    for n in topo_order(out):
        if out.nodes[n]["op"] != "batchnorm":
            continue
        (src,) = inputs(out, n)
        if out.nodes[src.node]["op"] != "conv2d" or not _sole_reader(out, src, n):
            continue
        conv = out.nodes[src.node]
        conv["attrs"] = conv["attrs"].model_copy(update={"bias": True})
        conv["folds"] = ((src.node, n),)
        replace_uses(out, Ref(n), src)
        out.remove_node(n)
    return out


def merge_parallel_convs(g: nx.DiGraph) -> nx.DiGraph:
    return _merge_parallel_convs(g.copy())


def _merge_parallel_convs(out: nx.DiGraph) -> nx.DiGraph:
    for n in topo_order(out):
        if out.nodes[n]["op"] != "add":
            continue
        ins = inputs(out, n)
        if len(ins) != 2 or not all(out.nodes[r.node]["op"] == "conv2d" and _sole_reader(out, r, n) for r in ins):
            continue
        (a, b) = sorted(ins, key=lambda r: -out.nodes[r.node]["attrs"].k)
        ka, kb = out.nodes[a.node]["attrs"], out.nodes[b.node]["attrs"]
        same = (inputs(out, a.node) == inputs(out, b.node) and ka.s == kb.s and ka.groups == kb.groups
                and ka.c2 == kb.c2)
        # the 1×1 becomes the big kernel's centre tap: right for any odd k and dilation, as long
        # as the padding centres that tap on the pixel the 1×1 reads (a shape-valid add implies it)
        centred = ka.k % 2 == 1 and ka.padding == ka.dilation * (ka.k // 2) and kb.k == 1 and kb.padding == 0
        if not (same and centred):
            continue
        out.nodes[a.node]["attrs"] = ka.model_copy(update={"bias": ka.bias or kb.bias})
        out.nodes[a.node]["folds"] = folds(out, a.node) + folds(out, b.node)
        replace_uses(out, Ref(n), a)
        out.remove_nodes_from([n, b.node])
    return out


def deploy(g: nx.DiGraph) -> nx.DiGraph:
    """The inference graph: aux branch and training-only ops removed, BN folded, RepConvN merged."""
    return _merge_parallel_convs(_fold_bn(_drop_train_only(_strip_aux(g.copy()))))  # one copy, edited in place
