"""The typed syntax tree of a `.gel` file.

Every node carries the :class:`~gelanc.diagnostics.Span` it was parsed from, so any
later stage can point back into the source. The tree is plain data: the parser
builds it, :mod:`gelanc.ir.lower` interprets it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gelanc.diagnostics import Span

# ---- expressions ----------------------------------------------------------


@dataclass(slots=True)
class Expr:
    span: Span


@dataclass(slots=True)
class Literal(Expr):
    value: int | float | str | bool | None


@dataclass(slots=True)
class Name(Expr):
    id: str


@dataclass(slots=True)
class ListExpr(Expr):
    items: list[Expr]


@dataclass(slots=True)
class Comprehension(Expr):
    body: Expr
    var: str
    iterable: Expr


@dataclass(slots=True)
class BinOp(Expr):
    op: str  # + - * / // % ** == != < <= > >= and or
    left: Expr
    right: Expr


@dataclass(slots=True)
class UnaryOp(Expr):
    op: str  # - not
    operand: Expr


@dataclass(slots=True)
class Ternary(Expr):
    cond: Expr
    then: Expr
    other: Expr


@dataclass(slots=True)
class Index(Expr):
    value: Expr
    index: Expr


@dataclass(slots=True)
class Keyword:
    name: str
    value: Expr
    span: Span


@dataclass(slots=True)
class Call(Expr):
    """`f(args, k = v) as label` — a block, primitive op, builtin or block-valued name."""

    func: str
    args: list[Expr]
    kwargs: list[Keyword]
    label: str | None = None  # explicit scope name, e.g. `as 0` or `as cv2.1`
    func_span: Span | None = None


# ---- statements -----------------------------------------------------------


@dataclass(slots=True)
class Target:
    name: str
    index: Expr | None
    span: Span


@dataclass(slots=True)
class Stmt:
    span: Span


@dataclass(slots=True)
class Assign(Stmt):
    targets: list[Target]
    value: Expr


@dataclass(slots=True)
class For(Stmt):
    var: str
    iterable: Expr
    body: list[Stmt]


@dataclass(slots=True)
class Aux(Stmt):
    """PGI's auxiliary region: every node lowered inside it is on the aux branch."""

    body: list[Stmt]


@dataclass(slots=True)
class Return(Stmt):
    values: list[Expr]


@dataclass(slots=True)
class Paper(Stmt):
    """The paper's reference figures for a model, kept beside its topology."""

    items: list[Keyword]


# ---- definitions ----------------------------------------------------------


@dataclass(slots=True)
class Param:
    name: str
    type: str | None
    default: Expr | None
    span: Span


@dataclass(slots=True)
class BlockDef:
    name: str
    params: list[Param]
    body: list[Stmt]
    span: Span
    is_model: bool = False


@dataclass(slots=True)
class ModelAlias:
    """`model a = b(k = v) paper {...}`: model b with other parameters."""

    name: str
    base: str
    args: list[Expr]
    kwargs: list[Keyword]
    paper: Paper | None
    span: Span


@dataclass(slots=True)
class Import:
    path: str
    span: Span


@dataclass(slots=True)
class Module:
    """One parsed `.gel` file."""

    file: str
    imports: list[Import] = field(default_factory=list)
    blocks: list[BlockDef] = field(default_factory=list)
    models: list[BlockDef | ModelAlias] = field(default_factory=list)
