"""Text → :class:`~gelanc.dsl.ast.Module`, with located syntax errors."""

from __future__ import annotations

import functools
import math
from pathlib import Path

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from gelanc.diagnostics import SOURCES, GelError, Span
from gelanc.dsl import ast
from gelanc.limits import MAX_INT, MAX_SPEC_BYTES

GRAMMAR = Path(__file__).with_name("gel.lark")

# Words the grammar gives a meaning; most are only reserved where they can appear,
# so they are also refused as names to keep specs unambiguous to a reader.
KEYWORDS = frozenset({"import", "block", "model", "for", "in", "aux", "return", "paper", "if", "else",
                      "and", "or", "not", "true", "false", "none", "as"})

# Friendly names for the grammar's terminals in "expected ..." messages.
_TERMINALS = {
    "NAME": "a name", "INT": "an integer", "FLOAT": "a number", "STRING": "a string",
    "QUANTITY": "a quantity", "TYPE": "a type", "LPAR": "'('", "RPAR": "')'",
    "LSQB": "'['", "RSQB": "']'", "LBRACE": "'{'", "RBRACE": "'}'", "COMMA": "','",
    "EQUAL": "'='", "COLON": "':'", "SEMICOLON": "';'", "DOT": "'.'", "MINUS": "'-'",
    "ADD_OP": "an operator", "MUL_OP": "an operator", "COMP_OP": "a comparison",
    "POW_OP": "'**'", "LABEL_PART": "a label", "$END": "end of file",
}


@functools.cache
def _lark() -> Lark:
    # lark keeps the built LALR tables in a cache file, so the CLI starts fast
    return Lark(GRAMMAR.read_text(), parser="lalr", propagate_positions=True, maybe_placeholders=True,
                cache=True)


def _span(file: str, meta) -> Span:
    return Span(file, meta.line, meta.column, meta.end_line, meta.end_column)


def _tok_span(file: str, tok: Token) -> Span:
    assert tok.line is not None and tok.column is not None, "lark gives every token a position"
    return Span(file, tok.line, tok.column, tok.end_line, tok.end_column)


class _ToAst(Transformer):
    """Builds typed AST nodes; each callback gets lark's position metadata."""

    def __init__(self, file: str):
        super().__init__()
        self.file = file

    def _s(self, meta) -> Span:
        return _span(self.file, meta)

    # ---- literals and names ----
    def _number(self, meta, value: int | float) -> ast.Literal:
        if not (math.isfinite(value) and abs(value) <= MAX_INT):
            raise GelError(f"number {_short(value)} is too large: a spec's numbers stay within ±{MAX_INT} "
                           "(MAX_INT)", self._s(meta))
        return ast.Literal(self._s(meta), value)

    @v_args(meta=True)
    def int_lit(self, meta, c):
        if len(c[0]) > 100:  # before int(), whose time grows with the square of the digits
            raise GelError(f"integer literal of {len(c[0])} digits is too long", self._s(meta))
        return self._number(meta, int(c[0]))

    @v_args(meta=True)
    def float_lit(self, meta, c):
        return self._number(meta, float(c[0]))

    @v_args(meta=True)
    def quantity(self, meta, c):
        text = str(c[0])
        scale = {"k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9}[text[-1]]
        value = float(text[:-1]) * scale
        return self._number(meta, int(round(value)) if math.isfinite(value) and value == round(value) else value)

    @v_args(meta=True)
    def string(self, meta, c):
        return ast.Literal(self._s(meta), str(c[0])[1:-1])

    @v_args(meta=True)
    def true(self, meta, c):
        return ast.Literal(self._s(meta), True)

    @v_args(meta=True)
    def false(self, meta, c):
        return ast.Literal(self._s(meta), False)

    @v_args(meta=True)
    def none(self, meta, c):
        return ast.Literal(self._s(meta), None)

    @v_args(meta=True)
    def name(self, meta, c):
        return ast.Name(self._s(meta), str(c[0]))

    @v_args(meta=True)
    def list_lit(self, meta, c):
        return ast.ListExpr(self._s(meta), [x for x in c if x is not None])

    @v_args(meta=True)
    def comprehension(self, meta, c):
        return ast.Comprehension(self._s(meta), c[0], str(c[1]), c[2])

    # ---- operators ----
    @v_args(meta=True)
    def binop(self, meta, c):
        return ast.BinOp(self._s(meta), str(c[1]), c[0], c[2])

    compare = binop

    @v_args(meta=True)
    def or_op(self, meta, c):
        return ast.BinOp(self._s(meta), "or", c[0], c[1])

    @v_args(meta=True)
    def and_op(self, meta, c):
        return ast.BinOp(self._s(meta), "and", c[0], c[1])

    @v_args(meta=True)
    def not_op(self, meta, c):
        return ast.UnaryOp(self._s(meta), "not", c[0])

    @v_args(meta=True)
    def neg(self, meta, c):
        return ast.UnaryOp(self._s(meta), "-", c[0])

    @v_args(meta=True)
    def ternary(self, meta, c):
        return ast.Ternary(self._s(meta), c[1], c[0], c[2])

    @v_args(meta=True)
    def index(self, meta, c):
        return ast.Index(self._s(meta), c[0], c[1])

    # ---- calls ----
    @v_args(meta=True)
    def kwarg(self, meta, c):
        return ast.Keyword(str(c[0]), c[1], self._s(meta))

    def args(self, c):
        return c

    def label(self, c):
        return ".".join(str(t) for t in c)

    @v_args(meta=True)
    def call(self, meta, c):
        func, arglist, label = c
        pos, kws = self._split_args(arglist or [])
        return ast.Call(self._s(meta), str(func), pos, kws, label, _tok_span(self.file, func))

    def _split_args(self, arglist):
        pos, kws, given = [], [], set()  # a set: a call may have thousands of keywords
        for a in arglist:
            if isinstance(a, ast.Keyword):
                if a.name in given:
                    raise GelError(f"keyword argument '{a.name}' given twice", a.span)
                given.add(a.name)
                kws.append(a)
            elif kws:
                raise GelError("positional argument follows keyword argument", a.span)
            else:
                pos.append(a)
        return pos, kws

    # ---- statements ----
    def _name(self, tok, meta) -> str:
        if str(tok) in KEYWORDS:
            raise GelError(f"'{tok}' is a keyword and cannot be a name", _tok_span(self.file, tok))
        return str(tok)

    @v_args(meta=True)
    def target(self, meta, c):
        return ast.Target(self._name(c[0], meta), c[1], self._s(meta))

    @v_args(meta=True)
    def assign(self, meta, c):
        return ast.Assign(self._s(meta), c[:-1], c[-1])

    def body(self, c):
        return list(c)

    @v_args(meta=True)
    def for_stmt(self, meta, c):
        return ast.For(self._s(meta), str(c[0]), c[1], c[2])

    @v_args(meta=True)
    def aux_stmt(self, meta, c):
        return ast.Aux(self._s(meta), c[0])

    @v_args(meta=True)
    def return_stmt(self, meta, c):
        return ast.Return(self._s(meta), list(c))

    @v_args(meta=True)
    def paper_item(self, meta, c):
        return ast.Keyword(str(c[0]), c[1], self._s(meta))

    @v_args(meta=True)
    def paper_stmt(self, meta, c):
        return ast.Paper(self._s(meta), [x for x in c if x is not None])

    # ---- definitions ----
    @v_args(meta=True)
    def param(self, meta, c):
        return ast.Param(self._name(c[0], meta), str(c[1]) if c[1] is not None else None, c[2], self._s(meta))

    def params(self, c):
        return c

    @v_args(meta=True)
    def block_def(self, meta, c):
        return ast.BlockDef(self._name(c[0], meta), c[1] or [], c[2], self._s(meta))

    @v_args(meta=True)
    def model_def(self, meta, c):
        return ast.BlockDef(str(c[0]), c[1] or [], c[2], self._s(meta), is_model=True)

    @v_args(meta=True)
    def model_alias(self, meta, c):
        name, base, arglist, paper = c
        pos, kws = self._split_args(arglist or [])
        return ast.ModelAlias(str(name), str(base), pos, kws, paper, self._s(meta))

    @v_args(meta=True)
    def import_stmt(self, meta, c):
        return ast.Import(str(c[0])[1:-1], self._s(meta))

    def start(self, items):
        mod = ast.Module(self.file)
        for it in items:
            if isinstance(it, ast.Import):
                mod.imports.append(it)
            elif isinstance(it, ast.BlockDef) and not it.is_model:
                mod.blocks.append(it)
            else:
                mod.models.append(it)
        return mod


def _describe(tok: Token) -> str:
    if tok.type == "$END":
        return "end of file"
    return f"'{tok}'"


def _syntax_error(e: UnexpectedInput, file: str, text: str) -> GelError:
    line, col = getattr(e, "line", -1), getattr(e, "column", -1)
    if isinstance(e, UnexpectedEOF) or line in (-1, None):
        lines = text.split("\n") or [""]
        line, col = len(lines), len(lines[-1]) + 1
        return GelError("unexpected end of file", Span(file, line, col))
    expected = sorted(getattr(e, "expected", None) or getattr(e, "allowed", None) or [])
    names = sorted({_TERMINALS.get(t, f"'{t.lower()}'" if t.isupper() else f"'{t}'") for t in expected})
    want = f"; expected {', '.join(names[:8])}{', …' if len(names) > 8 else ''}" if names else ""
    if isinstance(e, UnexpectedCharacters):
        lines = text.split("\n")
        ch = lines[line - 1][col - 1 : col] if line <= len(lines) else "?"
        return GelError(f"unexpected character {ch!r}{want}", Span(file, line, col))
    assert isinstance(e, UnexpectedToken)
    tok = e.token
    end = tok.end_column if tok.end_line == line else None
    if tok.type == "$END":
        return GelError(f"unexpected end of file{want}", Span(file, line, col))
    return GelError(f"unexpected {_describe(tok)}{want}", Span(file, line, col, line, end))


def _short(value: int | float) -> str:
    text = str(value)
    return text if len(text) <= 24 else f"{text[:10]}…{text[-10:]}"


def _size_error(text: str, file: str) -> GelError | None:
    """An error pointing where ``text`` passes MAX_SPEC_BYTES (counted in UTF-8), or None.

    Cheap on any text: it looks at no more than the first MAX_SPEC_BYTES + 1 characters."""
    if len(text) * 4 <= MAX_SPEC_BYTES:  # UTF-8 takes at most 4 bytes a character
        return None
    head = text[: MAX_SPEC_BYTES + 1].encode("utf-8", "surrogatepass")
    if len(head) <= MAX_SPEC_BYTES:
        return None
    inside = head[:MAX_SPEC_BYTES].decode("utf-8", "ignore")
    line = inside.count("\n") + 1
    column = len(inside) - (inside.rfind("\n") + 1) + 1
    SOURCES.add(file, inside)  # the quote shows the line up to the limit, never past it
    return GelError(f"the file passes {MAX_SPEC_BYTES} bytes here: a .gel file may be at most "
                    f"{MAX_SPEC_BYTES} bytes (MAX_SPEC_BYTES)", Span(file, line, column))


def parse(text: str, file: str = "<string>") -> ast.Module:
    """Parse `.gel` source text; raises :class:`GelError` pointing at the first syntax error.

    Text longer than MAX_SPEC_BYTES is refused before lark sees it (lark takes ~10 s a megabyte)."""
    too_big = _size_error(text, file)
    if too_big:
        raise too_big
    SOURCES.add(file, text)
    try:
        tree = _lark().parse(text)
        return _ToAst(file).transform(tree)
    except UnexpectedInput as e:
        raise _syntax_error(e, file, text) from None
    except VisitError as e:
        if isinstance(e.orig_exc, GelError):
            raise e.orig_exc from None
        if isinstance(e.orig_exc, RecursionError):
            raise GelError("expression nested too deeply", Span(file, 1, 1)) from None
        raise
    except RecursionError:
        raise GelError("expression nested too deeply", Span(file, 1, 1)) from None
