"""The values a `.gel` body computes with while it is lowered, and their bounds.

A value of the language is a number, string, boolean, none, a block used as a value
(:class:`BlockValue`), a list of values, or a :class:`Tensor` — one output of an IR node
whose channels are known and whose spatial size is left open. An indexed name
(``m[i] = ...``) is a :class:`Seq`. Every number and list a spec makes is kept within
gelanc/limits.py's bounds here (:func:`bounded`, :func:`list_size`, :func:`check_value`),
so that the interpreter (:mod:`gelanc.ir.lower`) stays cheap on any input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from gelanc.diagnostics import GelError, Span
from gelanc.ir.graph import Ref
from gelanc.limits import MAX_INT, MAX_LIST_DEPTH, MAX_LIST_LEN, MAX_SPEC_BYTES


class Tensor:
    """A value that is one output of one IR node (a plain class: made for every op)."""

    __slots__ = ("ref", "shape")

    def __init__(self, ref: Ref, shape: tuple):
        self.ref = ref
        self.shape = shape  # channels known, spatial None

    def __repr__(self) -> str:
        return f"Tensor({self.ref}, {self.shape})"

    @property
    def channels(self) -> int:
        return self.shape[0]


@dataclass(frozen=True, slots=True)
class BlockValue:
    """A block or primitive op used as a value (GELAN's pluggable computational block)."""

    name: str

    def __str__(self) -> str:
        return self.name


class Seq(dict):
    """A name assigned by index (``m[i] = ...``): behaves as a list in expressions."""

    def as_list(self, span: Span) -> list:
        keys = sorted(self)
        if keys != list(range(len(keys))):
            missing = next(i for i in range(len(keys) + 1) if i not in self)
            raise GelError(f"indexed name has no element {missing}", span)
        return [self[k] for k in keys]


def type_name(v: Any) -> str:
    if isinstance(v, Tensor):
        return "tensor"
    if isinstance(v, bool):
        return "bool"
    if v is None:
        return "none"
    if isinstance(v, BlockValue):
        return "block"
    if isinstance(v, (list, tuple, Seq)):
        return "list"
    return {int: "int", float: "float", str: "str"}.get(type(v), type(v).__name__)


TYPE_OK = {
    "tensor": lambda v: isinstance(v, Tensor),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "list": lambda v: isinstance(v, (list, tuple, Seq)),
    "block": lambda v: isinstance(v, BlockValue),
    "any": lambda v: True,
}


def describe(v: Any) -> str:
    if isinstance(v, Tensor):
        return f"tensor ({v.channels} channels)"
    if isinstance(v, (list, tuple, Seq)):
        size, depth = list_size(v)
        if size > 32 or depth > 2:  # too big to quote (or, from a bad spec, to walk)
            return f"list of {len(v)} values"
        if any(isinstance(x, Tensor) for x in flatten(v)):
            return f"list of {len(flatten(v))} values with tensors"
    if v is None:
        return "none"
    return f"{type_name(v)} {v!r}" if not isinstance(v, BlockValue) else f"block {v}"




def short(v: Any) -> str:
    text = str(v)
    return text if len(text) <= 24 else f"{text[:10]}…{text[-10:]}"


def bounded(x: int | float, span: Span) -> int | float:
    """``x``, a number a spec computed, if it is finite and within ±MAX_INT.

    Bounding every result keeps arithmetic cheap: repeated squaring would otherwise
    build integers of millions of digits."""
    if -MAX_INT <= x <= MAX_INT:
        return x
    if isinstance(x, float) and not math.isfinite(x):
        raise GelError(f"the result {x} is not a finite number", span)
    raise GelError(f"the result {short(x)} is too large: a spec's numbers stay within ±{MAX_INT} (MAX_INT)", span)


def check_plain(v: Any, span: Span | None) -> None:
    """``v`` is a number, string, boolean or none that a spec could have written."""
    if isinstance(v, str):
        if len(v) > MAX_SPEC_BYTES:
            raise GelError(f"a string of {len(v)} characters is too long", span)
    elif isinstance(v, (int, float)) and not isinstance(v, bool):
        if isinstance(v, float) and not math.isfinite(v):
            raise GelError(f"{v} is not a finite number", span)
        if abs(v) > MAX_INT:
            raise GelError(f"{short(v)} is too large: a spec's numbers stay within ±{MAX_INT} (MAX_INT)", span)
    elif not (v is None or isinstance(v, (bool, BlockValue))):
        raise GelError(f"a {type(v).__name__} is not a value of the language: a model takes numbers, strings, "
                       "booleans, none and lists of them", span)


def check_value(v: Any) -> None:
    """A model parameter that reaches gelanc from outside any spec (a run's stored settings,
    a checkpoint's metadata): a plain value of the language within its bounds, or a
    GelError (without a location) saying why. Cheap for any value, shared or deep."""
    size, depth = list_size(v)
    if size > MAX_LIST_LEN:
        raise GelError(f"a list of more than {MAX_LIST_LEN} elements, those of nested lists counted (MAX_LIST_LEN)")
    if depth > MAX_LIST_DEPTH:
        raise GelError(f"lists nested more than {MAX_LIST_DEPTH} deep (MAX_LIST_DEPTH)")
    for x in flatten(v) if isinstance(v, (list, tuple)) else [v]:
        check_plain(x, None)


def list_size(v: Any) -> tuple[int, int]:
    """Elements of a list value, those of nested lists counted too, and its depth.

    Walked without recursion, and only until MAX_LIST_LEN elements or MAX_LIST_DEPTH
    levels are passed: a value that refers to itself, or nests a list 10,000 deep,
    is measured as cheaply as a small one."""
    if not isinstance(v, (list, tuple, Seq)):
        return 0, 0
    size, deepest = 0, 0
    todo = [(v, 1)]
    while todo:
        x, depth = todo.pop()
        deepest = max(deepest, depth)
        items = list(x.values()) if isinstance(x, Seq) else x
        size += len(items)
        if size > MAX_LIST_LEN or depth > MAX_LIST_DEPTH:
            break
        todo += [(y, depth + 1) for y in items if isinstance(y, (list, tuple, Seq))]
    return size, deepest




def is_tensors(v: Any) -> bool:
    if isinstance(v, Tensor):
        return True
    if isinstance(v, (list, tuple, Seq)):
        items = list(v.values()) if isinstance(v, Seq) else v
        return bool(items) and all(is_tensors(x) for x in items)
    return False


def flatten(v: Any) -> list:
    if isinstance(v, Seq):
        v = [v[k] for k in sorted(v)]
    if isinstance(v, (list, tuple)):
        return [t for x in v for t in flatten(x)]
    return [v]


def as_number(v, span, what):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise GelError(f"{what} expects a number, got {describe(v)}", span)
    return v
