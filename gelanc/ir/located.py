"""Errors located at an IR node: the node's span in the `.gel` source, and the chain of
block calls that produced it — what every pass reports a broken rule with."""

from __future__ import annotations

import networkx as nx

from gelanc.diagnostics import GelError


def where(g: nx.DiGraph, node: str | None) -> GelError:
    """An error located at a node, with the chain of block calls that produced it (at
    nothing for ``None``: a graph with no node to blame)."""
    d = g.nodes[node] if node is not None else {}
    err = GelError("", d.get("span"))
    for site, (scope, block) in zip(reversed(d.get("sites", ())), reversed(d.get("blocks", ()))):
        err.with_note(site, f"in block {block} ('{scope}'), called from here")
    return err


def fail(g: nx.DiGraph, node: str | None, message: str) -> GelError:
    """:func:`where` with its message."""
    err = where(g, node)
    err.message = message
    return err
