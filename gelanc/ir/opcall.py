"""Binding a call of a primitive op to the op's inputs and attributes.

``Conv2d(x, 64, k = 3)``: the leading arguments that are tensors (or lists of them) are
the op's inputs, up to its arity; the rest, positional then by keyword, are its
attributes, validated by the op's pydantic model in the registry. Every error points
at the argument that caused it.
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic import ValidationError

from gelanc.diagnostics import GelError, Span
from gelanc.dsl.loader import suggest
from gelanc.ir.values import BlockValue, Seq, Tensor, describe, flatten, is_tensors
from gelanc.ops import REGISTRY, Attrs, OpDef


def bind_op(op: str, args: list, kwargs: dict, span: Span,
            arg_spans: list[Span]) -> tuple[list[Tensor], list[Span], Attrs]:
    """The inputs of a call of ``op``, the span of the argument each came from, and its
    validated attributes (one shared instance for equal arguments)."""
    d = REGISTRY[op]
    args = [a.as_list(span) if isinstance(a, Seq) else a for a in args]
    lo, hi = d.arity
    inputs: list[Tensor] = []
    input_spans: list[Span] = []  # for each input, the argument it came from
    i = 0  # leading arguments that are tensors are the inputs (indexed: concat may take thousands)
    while i < len(args) and (hi is None or len(inputs) < hi) and is_tensors(args[i]):
        got = flatten(args[i])
        inputs += got
        input_spans += [arg_spans[i] if i < len(arg_spans) else span] * len(got)
        i += 1
    rest, rest_spans = args[i:], list(arg_spans[i:])
    if len(inputs) < lo or (hi is not None and len(inputs) > hi):
        want = f"{lo}" if lo == hi else f"at least {lo}" if hi is None else f"{lo} to {hi}"
        raise GelError(f"{op} takes {want} tensor input{'s' if want != '1' else ''}, got {len(inputs)}", span)
    fields = _field_names(d.attrs)
    if len(rest) > len(fields):
        bad = rest[len(fields)]
        raise GelError(f"{op} takes {len(fields)} argument{'s' if len(fields) != 1 else ''} after its "
                       f"tensor input{'s' if lo != 1 else ''}, got {len(rest)} (extra: {describe(bad)})",
                       rest_spans[len(fields)] if len(rest_spans) > len(fields) else span)
    raw = dict(zip(fields, rest))
    field_spans = dict(zip(fields, rest_spans))
    for k, v in kwargs.items():
        if k not in fields:
            raise GelError(f"{op} has no argument '{k}'{suggest(k, fields)}"
                           + (f" (it takes: {', '.join(fields)})" if fields else " (it takes none)"), span)
        if k in raw:
            raise GelError(f"argument '{k}' of {op} given twice", span)
        raw[k] = v
    for k, v in raw.items():
        if isinstance(v, Tensor):
            raise GelError(f"{op}: argument '{k}' must be {_annotation(d, k)}, got a tensor",
                           field_spans.get(k, span))
        if isinstance(v, (list, Seq)):
            raw[k] = tuple(v.as_list(span) if isinstance(v, Seq) else v)
        if isinstance(v, BlockValue):
            raw[k] = str(v)
    key = (op, tuple(sorted(raw.items())))
    try:
        attrs = _ATTRS.get(key) or _ATTRS.setdefault(key, d.attrs(**raw))
    except TypeError:  # an unhashable value: validate it uncached
        attrs = None
    except ValidationError as ve:
        raise _attr_error(op, ve, raw, field_spans, span) from None
    if attrs is None:
        try:
            attrs = d.attrs(**raw)
        except ValidationError as ve:
            raise _attr_error(op, ve, raw, field_spans, span) from None
    return inputs, input_spans, attrs


def _attr_error(op, ve: ValidationError, raw, field_spans, span) -> GelError:
    err = ve.errors()[0]
    k = str(err["loc"][0]) if err["loc"] else ""
    if err["type"] == "missing":
        return GelError(f"{op}: missing argument '{k}'", span)
    return GelError(f"{op}: argument '{k}': {err['msg'][0].lower()}{err['msg'][1:]} "
                    f"(got {describe(raw.get(k))})", field_spans.get(k, span))


# Validated attributes are immutable, so equal arguments share one instance.
_ATTRS: dict[tuple, Any] = {}


@functools.cache
def _field_names(attrs: type[Attrs]) -> tuple[str, ...]:
    return tuple(attrs.model_fields)  # pydantic's model_fields is slow to read: once per op


def _annotation(d: OpDef, k: str) -> str:
    f = d.attrs.model_fields[k]
    return getattr(f.annotation, "__name__", str(f.annotation))


