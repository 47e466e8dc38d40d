"""The compiler's pipeline, wired once: source → program → checked IR → torch module.

    program(spec)            a path or `.gel` text → its linked Program (dsl.loader)
    graphs(prog) / graph()   → each model lowered (ir.lower) and validated (passes.validate);
                             ``deployed``: the deploy passes too (passes.deploy)
    compile_file(path)       program and graphs at once
    module(g)                → torch.fx.GraphModule (backend.fx), the one step that imports torch

The API (:func:`gelanc.compile`), checkpoints, ``gelanc stats`` and the importers all go
through these functions, so a new pass is added in one place. Shapes and counts are
not steps of it: they depend on an image size, and are asked for by who needs them
(:mod:`gelanc.stats`, :mod:`gelanc.tools.viz`).
"""

from __future__ import annotations

from pathlib import Path

import networkx as nx

from gelanc.dsl.loader import Program, load, load_text
from gelanc.ir.lower import lower
from gelanc.passes.deploy import deploy
from gelanc.passes.validate import validate


def program(spec: str | Path | Program) -> Program:
    """A spec given as a path, as `.gel` text (it has a newline or a brace), or already loaded."""
    if isinstance(spec, Program):
        return spec
    text = str(spec)
    if "\n" in text or "{" in text:
        return load_text(text, "<string>")
    return load(spec)


def graph(prog: Program, model: str | None = None, deployed: bool = False, **params) -> nx.DiGraph:
    """One model of ``prog`` (its first, without ``model``), lowered with ``params`` and
    validated; with ``deployed`` the deploy passes applied too."""
    g = lower(prog, model, **params)
    validate(g)
    return deploy(g) if deployed else g


def graphs(prog: Program, **params) -> list[nx.DiGraph]:
    """Every model the program's own file defines (at least one: the loader refuses a
    file that defines none), lowered and validated."""
    return [graph(prog, name, **params) for name in prog.own_models]


def compile_file(path: str | Path, **params) -> list[nx.DiGraph]:
    """Every model a spec file defines, lowered and validated (``gelanc check``, ``stats``)."""
    return graphs(load(path), **params)


def module(g: nx.DiGraph, init: bool = True, max_params: int | None = None):
    """The IR as a ``torch.fx.GraphModule``, weights initialised as the reference does
    unless ``init`` is False; refused (a located error) over ``max_params`` parameters."""
    from gelanc.backend.fx import to_fx

    return to_fx(g, init) if max_params is None else to_fx(g, init, max_params)
