"""The builtin functions a `.gel` expression may call: ``int``, ``float``, ``round``, ``abs``,
``max``, ``min``, ``sum``, ``len``, ``range``, ``channels`` and ``make_divisible``.

Each takes the call's span first (for its errors) and the evaluated arguments; each
result stays within the language's bounds (gelanc/limits.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from gelanc.diagnostics import GelError
from gelanc.ir.values import Seq, Tensor, as_number, bounded, describe
from gelanc.limits import MAX_LIST_LEN


def _b_int(span, x):
    x = as_number(x, span, "int()")
    if not math.isfinite(x):
        raise GelError(f"int() of {x}", span)
    return int(x)


def _b_range(span, *a):
    if not 1 <= len(a) <= 3 or not all(isinstance(x, int) and not isinstance(x, bool) for x in a):
        raise GelError("range() takes one to three integers", span)
    if len(a) == 3 and a[2] == 0:
        raise GelError("range() step must not be zero", span)
    r = range(*a)
    if len(r) > MAX_LIST_LEN:
        raise GelError(f"range of {len(r)} steps is too long (at most {MAX_LIST_LEN}, MAX_LIST_LEN)", span)
    return list(r)


def _b_channels(span, x):
    if not isinstance(x, Tensor):
        raise GelError(f"channels() expects a tensor, got {describe(x)}", span)
    return x.channels


def _b_len(span, x):
    if not isinstance(x, (list, tuple, Seq, str)):
        raise GelError(f"len() expects a list, got {describe(x)}", span)
    return len(x)


def _b_make_divisible(span, x, d):
    # The reference's make_divisible: the smallest multiple of d not below x.
    x, d = as_number(x, span, "make_divisible()"), as_number(d, span, "make_divisible()")
    if d <= 0 or not math.isfinite(x):
        raise GelError(f"make_divisible({x}, {d}): the divisor must be positive", span)
    return bounded(math.ceil(x / d) * d, span)


def _numbers(span, name, a):
    vals = a[0] if len(a) == 1 and isinstance(a[0], (list, tuple)) else a
    if not vals:
        raise GelError(f"{name}() of nothing", span)
    return [as_number(v, span, f"{name}()") for v in vals]


BUILTINS: dict[str, Callable[..., Any]] = {
    "int": _b_int,
    "float": lambda span, x: float(as_number(x, span, "float()")),
    "round": lambda span, x: round(as_number(x, span, "round()")),
    "abs": lambda span, x: abs(as_number(x, span, "abs()")),
    "max": lambda span, *a: max(_numbers(span, "max", a)),
    "min": lambda span, *a: min(_numbers(span, "min", a)),
    "sum": lambda span, *a: bounded(sum(_numbers(span, "sum", a)), span),
    "len": _b_len,
    "range": _b_range,
    "channels": _b_channels,
    "make_divisible": _b_make_divisible,
}


