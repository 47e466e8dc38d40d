"""Lowering: run a model's `.gel` body, emitting one IR node per primitive op.

The language has no recursion and only bounded loops, so lowering is plain
interpretation: blocks are called like functions, arithmetic is evaluated, and
every primitive op call adds a node. Channel counts are propagated as nodes are
added (blocks may read them with ``channels(x)``), using the registry's shape
rules with the spatial size left open; :mod:`gelanc.passes.shapes` later fills
in H and W for an image size.

Scope names: a call assigned to a single name is scoped by that name (``cv1 =
Conv(...)`` → ``cv1``; ``m[i] = ...`` → ``m.0``, ``m.1``, …); ``... as label``
overrides it; anything else gets the callee's name, numbered if repeated.

A spec is a program from anywhere, so its run is bounded (gelanc/limits.py): every
evaluated expression, loop turn and list element walked is a step (MAX_EVAL_STEPS),
every list value is at most MAX_LIST_LEN elements (nested ones counted) and
MAX_LIST_DEPTH deep, every number within ±MAX_INT, the graph at most MAX_NODES ops.
Past a bound, lowering stops with an error at the expression or statement that
passed it.

The interpreter is this module; the values it computes with and their bounds are
:mod:`gelanc.ir.values`, the builtin functions :mod:`gelanc.ir.builtins`, and the
matching of an op call's arguments to the op's inputs and attributes
:mod:`gelanc.ir.opcall`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from gelanc.diagnostics import GelError, Span
from gelanc.dsl import ast
from gelanc.dsl.loader import Program, suggest
from gelanc.ir.builtins import BUILTINS
from gelanc.ir.graph import Ref, add_node, new_graph
from gelanc.ir.opcall import bind_op
from gelanc.ir.values import (
    TYPE_OK,
    BlockValue,
    Seq,
    Tensor,
    as_number,
    bounded,
    check_plain,
    describe,
    flatten,
    list_size,
    short,
    type_name,
)
from gelanc.limits import MAX_BLOCK_DEPTH, MAX_EDGES, MAX_EVAL_STEPS, MAX_LIST_DEPTH, MAX_LIST_LEN, MAX_NODES
from gelanc.ops import REGISTRY, ShapeError

_ARITH = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
          "//": operator.floordiv, "%": operator.mod, "**": operator.pow}
# the operators that are ops of two tensors: + adds them, * multiplies them (broadcasting)
_TENSOR_OPS = {"+": "add", "*": "mul"}
_COMPARE = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
            ">": operator.gt, ">=": operator.ge}


# ---- the interpreter --------------------------------------------------------------


@dataclass
class _Frame:
    """One block instantiation: its variables and the scope names it has handed out."""

    prefix: str
    blocks: tuple  # ((scope, BlockName), ...) of this instance and its callers
    vars: dict[str, tuple[Any, Span | None]] = field(default_factory=dict)
    names: dict[str, Span] = field(default_factory=dict)
    auto: dict[str, int] = field(default_factory=dict)
    branch: str = "main"
    sites: tuple = ()  # spans of the block calls that led here, outermost first
    loop_vars: set[str] = field(default_factory=set)

    def scope(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name


class Lowerer:
    def __init__(self, prog: Program):
        self.prog = prog
        self.g: nx.DiGraph = nx.DiGraph()  # the model's, once lower() starts one
        self.stack: list[str] = []
        self.steps = 0  # work done so far (MAX_EVAL_STEPS): evaluated expressions, loop turns, list elements
        self.edges = 0  # inputs of the ops emitted so far (MAX_EDGES)
        for d in prog.blocks.values():  # a block may not hide a primitive op or a builtin
            if d.name in REGISTRY or d.name in BUILTINS:
                kind = "primitive op" if d.name in REGISTRY else "builtin"
                raise GelError(f"block '{d.name}' has the name of a {kind}; choose another name", d.span)

    # ---- bounds ----
    def tick(self, n: int, span: Span | None) -> None:
        """Count ``n`` steps of work; past MAX_EVAL_STEPS, stop at ``span``, the work that passed it.

        ``eval`` counts its expressions without a check (it is the hot path); the loops,
        calls and list walks that check here are reached often enough that a run stops
        within one straight-line body of the limit."""
        self.steps += n
        if self.steps > MAX_EVAL_STEPS:
            raise GelError(f"the spec takes more than {MAX_EVAL_STEPS} steps to lower (MAX_EVAL_STEPS): "
                           "a loop or a call here runs too long", span)

    def measure(self, v: Any, span: Span) -> None:
        """Refuse a list value past MAX_LIST_LEN elements or MAX_LIST_DEPTH levels; the walk is work."""
        if not isinstance(v, (list, tuple, Seq)):
            return
        size, depth = list_size(v)
        if size > MAX_LIST_LEN:
            raise GelError(f"list of more than {MAX_LIST_LEN} elements, those of nested lists counted "
                           "(MAX_LIST_LEN)", span)
        if depth > MAX_LIST_DEPTH:
            raise GelError(f"lists nested more than {MAX_LIST_DEPTH} deep (MAX_LIST_DEPTH)", span)
        self.tick(size, span)

    def grow(self, op: str, inputs: list[Tensor], outputs: int, span: Span) -> None:
        """Refuse a node past the graph's bounds (MAX_NODES, MAX_EDGES) before its shapes are made;
        its inputs and outputs are work."""
        if outputs > MAX_LIST_LEN:
            raise GelError(f"{op} with {outputs} outputs: at most {MAX_LIST_LEN} (MAX_LIST_LEN)", span)
        if self.g.number_of_nodes() >= MAX_NODES:
            raise GelError(f"the network grew past {MAX_NODES} nodes (MAX_NODES)", span)
        self.edges += len(inputs)
        if self.edges > MAX_EDGES:
            raise GelError(f"the network's ops take more than {MAX_EDGES} inputs in all (MAX_EDGES)", span)
        self.tick(len(inputs) + outputs, span)

    def check_param(self, key: str, v: Any, span: Span) -> None:
        """A model parameter given from outside the spec (``--set``, a checkpoint's metadata) is a
        plain value of the language, within the same bounds as one the spec computes."""
        try:
            self.measure(v, span)
            for x in flatten(v) if isinstance(v, (list, tuple)) else [v]:
                check_plain(x, span)
        except GelError as e:
            raise GelError(f"model parameter '{short(key)}': {e.message}", span) from None

    # ---- entry ----
    def lower_model(self, name: str, overrides: dict[str, Any] | None = None) -> nx.DiGraph:
        model = self.prog.models.get(name)
        if model is None:
            raise GelError(f"no model '{short(name)}' in {self.prog.file}{suggest(name, self.prog.models)}",
                           self.prog.span)
        try:
            return self._lower_model(name, model, overrides)
        except RecursionError:  # a deep expression outside any body: a parameter's default, a paper figure
            raise GelError("expression nested too deeply", model.span) from None

    def _lower_model(self, name: str, model: ast.BlockDef | ast.ModelAlias, overrides: dict[str, Any] | None):
        for k, v in (overrides or {}).items():
            self.check_param(str(k), v, model.span)
        paper: ast.Paper | None = None
        kwargs = dict(overrides or {})
        seen = {name}
        while isinstance(model, ast.ModelAlias):  # model a = b(k = v): b with other parameters
            alias = model
            if alias.args:
                raise GelError("a model alias takes keyword arguments only", alias.args[0].span)
            base = self.prog.models.get(alias.base)
            if alias.base in seen:
                raise GelError(f"model alias '{alias.name}' refers back to '{alias.base}': aliases cannot "
                               "form a cycle", alias.span)
            if base is None:
                raise GelError(f"unknown model '{alias.base}'{suggest(alias.base, self.prog.models)}", alias.span)
            seen.add(alias.base)
            root = _Frame("", ())
            for kw in alias.kwargs:
                kwargs.setdefault(kw.name, self.eval(kw.value, root))
            paper = paper or alias.paper
            model = base
        self.g = new_graph(name, {})
        frame = _Frame("", ())
        bound = self.bind(model, [], kwargs, frame, model.span, from_user=True)
        self.g.graph["params"] = {k: v for k, v in bound.items() if not isinstance(v, (Tensor,))
                                  and type_name(v) in ("int", "float", "bool", "str", "none", "list", "block")}
        self.g.graph["params"] = {k: (str(v) if isinstance(v, BlockValue) else v)
                                  for k, v in self.g.graph["params"].items()}
        frame.vars = {k: (v, None) for k, v in bound.items()}
        result = self.run_body(model, frame)  # measured by its return statement: flattening it is safe
        outs = flatten(result)
        if not outs or not all(isinstance(t, Tensor) for t in outs):
            raise GelError(f"model '{model.name}' must return tensors", model.span)
        self.g.graph["outputs"] = [t.ref for t in outs]
        papers = [stmt for stmt in model.body if isinstance(stmt, ast.Paper)]
        if len(papers) > 1:
            raise GelError("a model has one paper { } clause", papers[1].span).with_note(
                papers[0].span, "the first is here")
        paper = paper or (papers[0] if papers else None)
        if paper:
            self.g.graph["paper"] = {kw.name: self.eval(kw.value, frame) for kw in paper.items}
            for kw in paper.items:
                self.measure(self.g.graph["paper"][kw.name], kw.span)
        self.g.graph["source"] = dict(self.prog.sources)
        self.g.graph["links"] = {k: dict(v) for k, v in self.prog.links.items()}
        self.g.graph["file"] = self.prog.file
        return self.g

    # ---- blocks ----
    def bind(self, d: ast.BlockDef, args: list, kwargs: dict, callee: _Frame, span: Span,
             from_user: bool = False, arg_spans: list | None = None) -> dict[str, Any]:
        """Match arguments to ``d``'s parameters; defaults are evaluated in ``callee``, the
        new frame, so they may use earlier parameters (and any op they call is scoped there)."""
        kind = "model" if d.is_model else "block"
        names = [p.name for p in d.params]
        if len(args) > len(names):
            raise GelError(f"{kind} {d.name} takes at most {len(names)} arguments, got {len(args)}", span)
        bound: dict[str, Any] = dict(zip(names, args))
        known = set(names)  # a block may have thousands of parameters: no scan of the list per argument
        for k, v in kwargs.items():
            if k not in known:
                raise GelError(f"{kind} {d.name} has no parameter '{k}'{suggest(k, names)}", span)
            if k in bound:
                raise GelError(f"argument '{k}' of {d.name} given twice", span)
            bound[k] = v
        if from_user:  # --set cb=RepNCSP: a block's name given as text
            for p in d.params:
                v = bound.get(p.name)
                if p.type in ("block", "any", None) and isinstance(v, str) and (
                        v in self.prog.blocks or v in REGISTRY):
                    bound[p.name] = BlockValue(v)
        callee.vars = {}  # grows parameter by parameter: a default sees the earlier ones
        for p in d.params:
            if p.name not in bound:
                if p.default is None:
                    raise GelError(f"missing argument '{p.name}' of {kind} {d.name}", span).with_note(
                        p.span, "parameter declared here")
                bound[p.name] = self.eval(p.default, callee)
            callee.vars[p.name] = (bound[p.name], None)
            v = bound[p.name]
            if p.type and not TYPE_OK[p.type](v):
                i = names.index(p.name)
                where = arg_spans[i] if arg_spans and i < len(arg_spans) else span
                raise GelError(f"argument '{p.name}' of {d.name} must be {p.type}, got {describe(v)}",
                               where).with_note(p.span, "parameter declared here")
        return bound

    def call_block(self, d: ast.BlockDef, args, kwargs, caller: _Frame, name: str, span: Span,
                   arg_spans) -> Any:
        if d.name in self.stack:
            chain = " → ".join([*self.stack[self.stack.index(d.name):], d.name])
            raise GelError(f"recursive block {d.name} ({chain}): blocks cannot call themselves", span)
        if len(self.stack) >= MAX_BLOCK_DEPTH:
            raise GelError(f"blocks nested more than {MAX_BLOCK_DEPTH} deep (MAX_BLOCK_DEPTH)", span)
        self.tick(1, span)
        scope = caller.scope(name)
        frame = _Frame(scope, (*caller.blocks, (scope, d.name)), branch=caller.branch,
                       sites=(*caller.sites, span))
        self.stack.append(d.name)
        try:
            bound = self.bind(d, args, kwargs, frame, span, arg_spans=arg_spans)
            frame.vars = {k: (v, None) for k, v in bound.items()}
            return self.run_body(d, frame)
        except GelError as e:
            raise e.with_note(span, f"in block {d.name}, called from here") from None
        finally:
            self.stack.pop()

    def run_body(self, d: ast.BlockDef, frame: _Frame) -> Any:
        result = self.run(d.body, frame, top=True)
        if result is _NO_RETURN:
            raise GelError(f"{'model' if d.is_model else 'block'} {d.name} has no return statement", d.span)
        return result

    # ---- statements ----
    def run(self, body: list[ast.Stmt], frame: _Frame, top: bool = False) -> Any:
        try:
            return self._run(body, frame, top)
        except RecursionError:
            raise GelError("expression nested too deeply", body[0].span if body else None) from None

    def _run(self, body: list[ast.Stmt], frame: _Frame, top: bool) -> Any:
        for i, stmt in enumerate(body):
            if isinstance(stmt, ast.Return):
                if not top:
                    raise GelError("return must be the last statement of a block, not inside for or aux",
                                   stmt.span)
                if i != len(body) - 1 and not all(isinstance(s, ast.Paper) for s in body[i + 1:]):
                    raise GelError("statement after return is never run", body[i + 1].span)
                vals = [self.eval(v, frame) for v in stmt.values]
                result = vals[0] if len(vals) == 1 else tuple(vals)
                self.measure(result, stmt.span)  # an indexed name may have grown since its lists were measured
                return result
            if isinstance(stmt, ast.Assign):
                self.assign(stmt, frame, body[i + 1:])
            elif isinstance(stmt, ast.For):
                self.run_for(stmt, frame)
            elif isinstance(stmt, ast.Aux):
                outer = frame.branch
                frame.branch = "aux"
                try:
                    self.run(stmt.body, frame)
                finally:
                    frame.branch = outer
            elif isinstance(stmt, ast.Paper):
                if self.stack:
                    raise GelError("paper figures belong in a model, not a block", stmt.span)
                if not top:
                    raise GelError("paper figures belong at the top level of a model, not inside for or aux",
                                   stmt.span)
        return _NO_RETURN

    def iterate(self, var: str, iterable: ast.Expr, frame: _Frame, what: str, span: Span) -> list | tuple:
        """The items a loop or comprehension runs over, once its variable is known to be free."""
        items = self.eval(iterable, frame)
        if isinstance(items, Seq):
            items = items.as_list(iterable.span)
        if not isinstance(items, (list, tuple)):
            raise GelError(f"{what} run{'s' if what[0] == 'a' else ''} over a list or range(), "
                           f"got {describe(items)}", iterable.span)
        if var in frame.vars:
            raise GelError(f"{'loop' if what == 'for loops' else 'comprehension'} variable '{var}' hides a "
                           "name defined earlier"
                           + (" (an enclosing loop's)" if var in frame.loop_vars else ""), span)
        return items

    def run_for(self, stmt: ast.For, frame: _Frame) -> None:
        items = self.iterate(stmt.var, stmt.iterable, frame, "for loops", stmt.span)
        frame.loop_vars.add(stmt.var)
        try:
            for item in items:
                self.tick(1, stmt.span)
                frame.vars[stmt.var] = (item, stmt.span)
                self.run(stmt.body, frame)
        finally:
            frame.vars.pop(stmt.var, None)
            frame.loop_vars.discard(stmt.var)

    def assign(self, stmt: ast.Assign, frame: _Frame, rest: list[ast.Stmt]) -> None:
        targets = stmt.targets
        for t in targets:
            if t.index is None and t.name in frame.vars and frame.vars[t.name][1] is not None:
                raise GelError(f"'{t.name}' is already defined; names are assigned once"
                               + (" (inside a loop, assign to an indexed name such as "
                                  f"{t.name}[i])" if frame.loop_vars else ""), t.span).with_note(
                    frame.vars[t.name][1], "first defined here")
        name = None
        if len(targets) == 1:
            t = targets[0]
            name = t.name if t.index is None else f"{t.name}.{self._index_key(t, frame)}"
        value = self.eval(stmt.value, frame, name=name)
        if len(targets) == 1:
            self.bind_target(targets[0], value, frame, rest)
            return
        if isinstance(value, Seq):
            value = value.as_list(stmt.value.span)
        if not isinstance(value, (tuple, list)):
            raise GelError(f"cannot unpack {describe(value)} into {len(targets)} names", stmt.span)
        if len(value) != len(targets):
            raise GelError(f"cannot unpack {len(value)} values into {len(targets)} names", stmt.span)
        for t, v in zip(targets, value):
            self.bind_target(t, v, frame, rest)

    def _index_key(self, t: ast.Target, frame: _Frame) -> int:
        assert t.index is not None, "only an indexed target has a key"
        k = self.eval(t.index, frame)
        if not isinstance(k, int) or isinstance(k, bool) or k < 0:
            raise GelError(f"an indexed name takes a non-negative integer index, got {describe(k)}", t.index.span)
        return k

    def bind_target(self, t: ast.Target, value: Any, frame: _Frame, rest: list[ast.Stmt]) -> None:
        if t.name in BUILTINS or t.name in REGISTRY or t.name in self.prog.blocks:
            kind = "a builtin" if t.name in BUILTINS else "an op" if t.name in REGISTRY else "a block"
            raise GelError(f"'{t.name}' names {kind}; choose another name", t.span)
        if t.index is None:
            if t.name in frame.vars:
                prev = frame.vars[t.name][1]
                err = GelError(f"'{t.name}' is already defined; names are assigned once"
                               + (" (inside a loop, assign to an indexed name such as "
                                  f"{t.name}[i])" if frame.loop_vars else ""), t.span)
                raise err.with_note(prev, "first defined here") if prev else err
            frame.vars[t.name] = (value, t.span)
            return
        k = self._index_key(t, frame)
        seq, where = frame.vars.get(t.name, (None, None))
        if seq is None:
            seq = Seq()
            frame.vars[t.name] = (seq, t.span)
        elif not isinstance(seq, Seq):
            raise GelError(f"'{t.name}' is not an indexed name", t.span).with_note(where, "defined here")
        if k in seq:
            raise GelError(f"'{t.name}[{k}]' is already defined", t.span)
        if len(seq) >= MAX_LIST_LEN:
            raise GelError(f"indexed name '{t.name}' with more than {MAX_LIST_LEN} elements (MAX_LIST_LEN)", t.span)
        seq[k] = value

    # ---- expressions ----
    def eval(self, e: ast.Expr, frame: _Frame, name: str | None = None) -> Any:
        self.steps += 1  # checked by tick() at the next loop turn, call or list: this is the hot path
        kind = e.__class__
        if kind is ast.Literal:  # `kind is`, not isinstance: the hot path (mypy cannot narrow it)
            return e.value  # type: ignore[attr-defined]
        if kind is ast.Name:
            found = frame.vars.get(e.id)  # type: ignore[attr-defined]
            return found[0] if found is not None else self.lookup(e.id, e.span, frame)  # type: ignore[attr-defined]
        return _EVAL[kind](self, e, frame, name)

    def unary(self, e: ast.UnaryOp, frame: _Frame, name: str | None = None) -> Any:
        v = self.eval(e.operand, frame)
        if e.op == "not":
            return not self.truth(v, e.operand.span)
        return bounded(-as_number(v, e.span, "unary minus"), e.span)

    def ternary(self, e: ast.Ternary, frame: _Frame, name: str | None = None) -> Any:
        cond = self.truth(self.eval(e.cond, frame), e.cond.span)
        return self.eval(e.then if cond else e.other, frame, name)

    def subscript(self, e: ast.Index, frame: _Frame, name: str | None = None) -> Any:
        return self.index(self.eval(e.value, frame), self.eval(e.index, frame), e)

    def list_expr(self, e: ast.ListExpr, frame: _Frame, name: str | None = None) -> list:
        out = [self.eval(x, frame) for x in e.items]
        self.measure(out, e.span)
        return out

    def comprehension(self, e: ast.Comprehension, frame: _Frame, name: str | None = None) -> list:
        items = self.iterate(e.var, e.iterable, frame, "a comprehension", e.span)
        out = []
        try:
            for item in items:
                self.tick(1, e.span)
                frame.vars[e.var] = (item, e.span)
                out.append(self.eval(e.body, frame))
        finally:
            frame.vars.pop(e.var, None)
        self.measure(out, e.span)
        return out

    def truth(self, v: Any, span: Span) -> bool:
        if isinstance(v, Tensor):
            raise GelError("a tensor has no truth value", span)
        return bool(v)

    def lookup(self, name: str, span: Span, frame: _Frame) -> Any:
        if name in frame.vars:
            return frame.vars[name][0]
        if name in self.prog.blocks or name in REGISTRY:
            return BlockValue(name)
        known = [*frame.vars, *self.prog.blocks, *REGISTRY, *BUILTINS]
        raise GelError(f"unknown name '{name}'{suggest(name, known)}", span)

    def index(self, v: Any, k: Any, e: ast.Index) -> Any:
        if isinstance(v, Seq):
            if not isinstance(k, int) or isinstance(k, bool):
                raise GelError(f"index must be an integer, got {describe(k)}", e.index.span)
            kk = k if k >= 0 else len(v) + k
            if kk not in v:
                raise GelError(f"index {k} out of range (defined: {sorted(v)})", e.span)
            return v[kk]
        if isinstance(v, (list, tuple, str)):
            if not isinstance(k, int) or isinstance(k, bool):
                raise GelError(f"index must be an integer, got {describe(k)}", e.index.span)
            if not -len(v) <= k < len(v):
                raise GelError(f"index {k} out of range for {len(v)} values", e.span)
            return v[k]
        raise GelError(f"cannot index {describe(v)}", e.span)

    def binop(self, e: ast.BinOp, frame: _Frame, name: str | None = None) -> Any:
        if e.op in ("and", "or"):
            left = self.truth(self.eval(e.left, frame), e.left.span)
            if (e.op == "and") != left:
                return left
            return self.truth(self.eval(e.right, frame), e.right.span)
        a, b = self.eval(e.left, frame), self.eval(e.right, frame)
        if e.op in _COMPARE:
            if isinstance(a, Tensor) or isinstance(b, Tensor):
                raise GelError("tensors cannot be compared", e.span)
            if isinstance(a, (list, tuple, Seq)) or isinstance(b, (list, tuple, Seq)):
                self.measure(a, e.left.span)  # comparing lists walks them
                self.measure(b, e.right.span)
            if e.op in ("==", "!="):
                return _COMPARE[e.op](a, b)
            try:
                if (type(a) is not type(b) and type_name(a) != type_name(b)
                        and not all(TYPE_OK["float"](x) for x in (a, b))):
                    raise TypeError
                return _COMPARE[e.op](a, b)
            except TypeError:
                raise GelError(f"cannot compare {describe(a)} with {describe(b)}", e.span) from None
        if e.op in _TENSOR_OPS and isinstance(a, Tensor) and isinstance(b, Tensor):
            op = _TENSOR_OPS[e.op]
            scope = self.claim(frame, name, op, e.span)
            return self.emit(op, [a, b], {}, frame, scope, e.span, [e.left.span, e.right.span])
        if e.op == "+" and isinstance(a, list) and isinstance(b, list):
            out = a + b
            self.measure(out, e.span)  # a list doubled in a loop stops here
            return out
        if isinstance(a, Tensor) or isinstance(b, Tensor):
            raise GelError(f"operator {e.op} is not defined for tensors (+ adds them, * multiplies them)", e.span)
        a, b = as_number(a, e.left.span, f"operator {e.op}"), as_number(b, e.right.span, f"operator {e.op}")
        if e.op in ("/", "//", "%") and b == 0:
            raise GelError("division by zero", e.right.span)
        if e.op == "**" and a == 0 and b < 0:
            raise GelError("division by zero (zero to a negative power)", e.span)
        if e.op == "**" and (abs(b) > 64 or abs(a) > 1e6):
            raise GelError("exponent too large", e.span)
        try:
            out = _ARITH[e.op](a, b)
        except OverflowError:
            raise GelError(f"operator {e.op}: the result is too large", e.span) from None
        if isinstance(out, complex):
            raise GelError(f"operator {e.op}: the result is not a real number", e.span)
        return bounded(out, e.span)

    # ---- calls ----
    def call(self, e: ast.Call, frame: _Frame, name: str | None) -> Any:
        fspan = e.func_span or e.span
        target = frame.vars[e.func][0] if e.func in frame.vars else None
        if e.func in frame.vars and not isinstance(target, BlockValue):
            raise GelError(f"'{e.func}' is {describe(target)}, not a block", fspan)
        func = target.name if isinstance(target, BlockValue) else e.func
        args = [self.eval(a, frame) for a in e.args]
        kwargs = {kw.name: self.eval(kw.value, frame) for kw in e.kwargs}
        arg_spans = [a.span for a in e.args]
        for i, v in enumerate(args):  # builtins and ops walk the lists they are given
            if isinstance(v, (list, tuple, Seq)):
                self.measure(v, arg_spans[i])
        for kw in e.kwargs:
            if isinstance(kwargs[kw.name], (list, tuple, Seq)):
                self.measure(kwargs[kw.name], kw.span)
        if func in BUILTINS and target is None:
            if kwargs:
                raise GelError(f"{func}() takes no keyword arguments", e.kwargs[0].span)
            if e.label:
                raise GelError(f"{func}() is evaluated, not a layer: it cannot be labelled", e.span)
            try:
                out = BUILTINS[func](e.span, *args)
            except TypeError:
                raise GelError(f"wrong number of arguments to {func}()", e.span) from None
            self.measure(out, e.span)  # range() made a list: its elements are work
            return out
        scope = self.name_call(e, frame, func, name)
        if func in self.prog.blocks:
            return self.call_block(self.prog.blocks[func], args, kwargs, frame, scope, e.span, arg_spans)
        if func in REGISTRY:
            return self.emit(func, args, kwargs, frame, scope, e.span, arg_spans)
        if func in self.prog.models:
            raise GelError(f"'{func}' is a model; models cannot be called from a block", fspan)
        known = [*self.prog.blocks, *REGISTRY, *BUILTINS]
        raise GelError(f"unknown block or op '{func}'{suggest(func, known)}", fspan)

    def name_call(self, e: ast.Call, frame: _Frame, func: str, name: str | None) -> str:
        return self.claim(frame, e.label or name, func, e.span)

    @staticmethod
    def claim(frame: _Frame, chosen: str | None, func: str, span: Span) -> str:
        """Reserve a scope name in ``frame``: the one given, or ``func``, ``func_1``, ..."""
        if chosen is None:
            n = frame.auto.get(func, 0)
            chosen = func if n == 0 else f"{func}_{n}"
            while chosen in frame.names:
                n += 1
                chosen = f"{func}_{n}"
            frame.auto[func] = n + 1
        if chosen in frame.names:
            raise GelError(f"scope name '{chosen}' is used twice in this block", span).with_note(
                frame.names[chosen], "first used here")
        frame.names[chosen] = span
        return chosen

    def emit(self, op: str, args: list, kwargs: dict, frame: _Frame, name: str | None, span: Span,
             arg_spans: list[Span]) -> Any:
        """Add one primitive op node; returns its output tensor(s)."""
        d = REGISTRY[op]
        inputs, input_spans, attrs = bind_op(op, args, kwargs, span, arg_spans)
        self.grow(op, inputs, d.num_outputs(attrs), span)
        for t in inputs:
            src = self.g.nodes[t.ref.node]["branch"]
            if frame.branch == "main" and src == "aux":
                raise GelError(f"main-branch {op} reads '{t.ref.node}', which is on the aux branch: "
                               "the auxiliary branch may only feed itself (it is removed for deploy)", span)
        try:
            shapes = d.shape(attrs, [t.shape for t in inputs])
        except ShapeError as se:
            where = input_spans[se.arg] if se.arg is not None and se.arg < len(input_spans) else span
            raise GelError(f"{op}: {se}", where) from None
        nid = frame.scope(name) if name else frame.scope(op)
        add_node(self.g, nid, op, attrs, [t.ref for t in inputs], span=span, branch=frame.branch,
                 blocks=frame.blocks, sites=frame.sites, channels=shapes)
        if not d.multi_output:
            return Tensor(Ref(nid, 0), shapes[0])
        return tuple([Tensor(Ref(nid, i), s) for i, s in enumerate(shapes)])


_NO_RETURN = object()

# eval's dispatch for the expressions it does not answer itself
_EVAL: dict[type, Callable[..., Any]] = {ast.Call: Lowerer.call, ast.BinOp: Lowerer.binop, ast.UnaryOp: Lowerer.unary,
         ast.Ternary: Lowerer.ternary, ast.Index: Lowerer.subscript, ast.ListExpr: Lowerer.list_expr,
         ast.Comprehension: Lowerer.comprehension}


def lower(prog: Program, model: str | None = None, /, **params: Any) -> nx.DiGraph:
    """Lower one model of a program (the file's first model by default) to IR."""
    if model is None:
        if not prog.own_models:
            raise GelError(f"{prog.file} defines no model (a spec needs `model name(...) {{ ... }}`)", prog.span)
        model = prog.own_models[0]
    return Lowerer(prog).lower_model(model, params)

