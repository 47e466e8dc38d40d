"""Reading a model YAML (the reference's or ultralytics'): its top level checked, its
``[from, repeats, module, args]`` rows resolved to absolute indices, each with its
place in the file, and the width and depth scaling its parser applies. Everything
read is bounded (gelanc/limits.py) and quoted only cut short."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gelanc.diagnostics import SOURCES, GelError, Span
from gelanc.interop.yaml_modules import module_kind
from gelanc.limits import (
    MAX_MODEL_YAML_BYTES,
    MAX_YAML_ARGS,
    MAX_YAML_FROM,
    MAX_YAML_INT,
    MAX_YAML_MULTIPLE,
    MAX_YAML_ROWS,
)
from gelanc.yamlfile import compose

QUOTE_CHARS = 60  # of a value from the file in a message


LINE_CHARS = 200  # of a line of the file (or of the converted spec) quoted under an error


def cut(text: str, limit: int = 200) -> str:
    """A message (a library's, or one quoting the file) cut to ``limit`` characters."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def show(value: Any) -> str:
    """A value from the file for a message: its repr, cut (the file may hold pages in one)."""
    text = repr(value)
    return text if len(text) <= QUOTE_CHARS else text[: QUOTE_CHARS - 1] + "…"


def cut_lines(text: str) -> str:
    """``text`` with every line cut to LINE_CHARS, for quoting under an error."""
    return "\n".join(line if len(line) <= LINE_CHARS else line[: LINE_CHARS - 1] + "…"
                     for line in text.split("\n"))


class ModelYaml(BaseModel):
    """The keys of a model YAML that shape the network (others, e.g. ``anchors``, are ignored)."""

    model_config = ConfigDict(extra="allow")
    nc: int = Field(80, ge=1, le=MAX_YAML_INT)
    depth_multiple: float = Field(1.0, gt=0, le=MAX_YAML_MULTIPLE)
    width_multiple: float = Field(1.0, gt=0, le=MAX_YAML_MULTIPLE)
    scales: dict[str, list[float]] | None = None
    scale: str | None = None
    activation: str | None = None
    backbone: list
    head: list | None = None


@dataclass
class Row:
    """One ``[from, repeats, module, args]`` row, resolved."""

    index: int
    sources: list[int]  # absolute layer indices; -1 is the image
    repeats: int
    module: str
    args: list
    span: Span  # the row
    module_span: Span
    repeats_span: Span | None = None


def node_span(file: str, node: yaml.Node) -> Span:
    m, e = node.start_mark, node.end_mark
    return Span(file, m.line + 1, m.column + 1, e.line + 1 if e.line == m.line else None,
                e.column + 1 if e.line == m.line else None)


def read_rows(text: str, file: str) -> tuple[ModelYaml, list[tuple[Any, yaml.Node]]]:
    """The YAML's settings, and its rows with their nodes (for locations)."""
    size = len(text.encode("utf-8"))
    if size > MAX_MODEL_YAML_BYTES:  # before parsing: PyYAML takes ~6 µs a byte
        raise GelError(f"{file} is {size:,} bytes; a model YAML may be at most {MAX_MODEL_YAML_BYTES:,} "
                       f"(MAX_MODEL_YAML_BYTES; the reference's largest is 3.4 KB)")
    SOURCES.add(file, cut_lines(text))
    try:
        root = compose(text)
        # built from the node tree, not parsed a second time
        data = yaml.constructor.SafeConstructor().construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        span = Span(file, mark.line + 1, mark.column + 1) if mark else None
        raise GelError(f"not valid YAML: {cut(str(e.problem or e.context))}", span) from None
    except yaml.YAMLError as e:
        raise GelError(f"{file}: not valid YAML: {cut(str(e))}") from None
    except RecursionError:
        raise GelError(f"{file}: not valid YAML: collections nested too deeply") from None
    except ValueError as e:  # a value PyYAML's constructors cannot make (an integer of 5,000 digits, a date)
        what = "an integer of thousands of digits" if "digits" in str(e) else cut(str(e), 100)
        raise GelError(f"{file}: not valid YAML: {what}") from None
    if not isinstance(data, dict) or not isinstance(root, yaml.MappingNode):
        raise GelError(f"{file}: a model YAML is a mapping with `backbone` and `head` lists")
    nodes = {k.value: v for k, v in root.value if isinstance(k, yaml.ScalarNode)}
    try:
        cfg = ModelYaml.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        key = str(err["loc"][0]) if err["loc"] else ""
        where = node_span(file, nodes[key]) if key in nodes else None
        what = cut(".".join(str(p) for p in err["loc"]))
        raise GelError(f"`{what}`: {cut(err['msg'])}" if what else cut(err["msg"]), where) from None
    rows = []
    for section in ("backbone", "head"):
        seq = nodes.get(section)
        if seq is None:
            continue
        if not isinstance(seq, yaml.SequenceNode):
            raise GelError(f"`{section}` must be a list of [from, repeats, module, args] rows", node_span(file, seq))
        rows += list(zip(data[section] or [], seq.value))
        if len(rows) > MAX_YAML_ROWS:
            raise GelError(f"layer {MAX_YAML_ROWS}: a model YAML may list at most {MAX_YAML_ROWS:,} layers "
                           f"(MAX_YAML_ROWS; the reference's largest has 50)", node_span(file, rows[MAX_YAML_ROWS][1]))
    if not rows:
        raise GelError(f"{file} lists no layers (`backbone` and `head` are empty)")
    return cfg, rows


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_args(args: list, i: int, span: Span) -> None:
    """A row's args within MAX_YAML_ARGS elements (nested lists' counted) and MAX_YAML_INT;
    walked without recursion, and stopped at the bound."""
    todo, seen = list(args), 0
    while todo:
        v = todo.pop()
        seen += 1
        if seen > MAX_YAML_ARGS:
            raise GelError(f"layer {i}: its args hold more than {MAX_YAML_ARGS} elements, nested lists' counted "
                           f"(MAX_YAML_ARGS; the reference's rows hold at most 6)", span)
        if isinstance(v, list):
            todo += v
        elif is_int(v) and abs(v) > MAX_YAML_INT:
            raise GelError(f"layer {i}: argument {show(v)} is over {MAX_YAML_INT:,} in magnitude (MAX_YAML_INT)",
                           span)


def resolve(raw: list[tuple[Any, yaml.Node]], file: str) -> list[Row]:
    rows = []
    for i, (value, node) in enumerate(raw):
        span = node_span(file, node)
        if not (isinstance(value, list) and len(value) == 4):
            raise GelError(f"layer {i}: a row is [from, repeats, module, args], got {show(value)}", span)
        f, n, module, args = value
        module_span, repeats_span = node_span(file, node.value[2]), node_span(file, node.value[1])
        if not isinstance(module, str):
            raise GelError(f"layer {i}: the module must be a name, got {show(module)}", module_span)
        if not (is_int(n) and n >= 1):
            raise GelError(f"layer {i}: repeats must be a positive integer, got {show(n)}", repeats_span)
        if n > MAX_YAML_INT:  # before any arithmetic on it; scaled, it is held to MAX_YAML_REPEATS
            raise GelError(f"layer {i}: {show(n)} repeats is over {MAX_YAML_INT:,} (MAX_YAML_INT)", repeats_span)
        if not isinstance(args, list):
            raise GelError(f"layer {i}: args must be a list, got {show(args)}", node_span(file, node.value[3]))
        check_args(args, i, node_span(file, node.value[3]))
        many = isinstance(f, list)
        from_span = node_span(file, node.value[0])
        if many and not f:
            raise GelError(f"layer {i}: `from` lists no layer", from_span)
        if many and len(f) > MAX_YAML_FROM:
            raise GelError(f"layer {i}: `from` lists {len(f):,} layers; a row may read at most {MAX_YAML_FROM} "
                           f"(MAX_YAML_FROM; the reference's read at most 6)", from_span)
        sources = []
        for s in f if many else [f]:
            if not is_int(s):
                raise GelError(f"layer {i}: `from` holds layer indices, got {show(s)}", from_span)
            j = i + s if s < 0 else s
            if s < 0 and i == 0 and j == -1:
                sources.append(-1)  # the first layer reads the image
            elif not 0 <= j < i:
                raise GelError(f"layer {i} reads layer {show(s)}, which " +
                               ("comes later (a layer reads only earlier ones)" if j >= i else "does not exist"),
                               from_span)
            else:
                sources.append(j)
        if n > 1 and (len(sources) != 1 or module_kind(module) in ("join", "fuse", "head")):
            mod = cut(module, QUOTE_CHARS)
            raise GelError(f"layer {i} ({mod}): repeats > 1 chains copies of a one-input layer; "
                           f"{mod} reading {len(sources)} layer(s) cannot be chained", repeats_span)
        rows.append(Row(i, sources, n, module, list(args), span, module_span, repeats_span))
    return rows


def literal(v: Any, row: Row) -> str:
    """A YAML argument as a .gel expression."""
    if v == "nc":
        return "nc"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if v is None or v == "None":
        return "none"
    if isinstance(v, list):
        return "[" + ", ".join(literal(x, row) for x in v) + "]"
    raise GelError(f"layer {row.index} ({row.module}): argument {show(v)} has no .gel form", row.span)


@dataclass
class Scaling:
    """The YAML's multiples, applied by both parsers' rules."""

    depth: float = 1.0
    width: float = 1.0
    max_channels: float = math.inf

    def channels(self, c: Any, row: Row) -> int:
        if not isinstance(c, int) or isinstance(c, bool) or c <= 0:
            raise GelError(f"layer {row.index} ({row.module}): the output width must be a positive integer, "
                           f"got {show(c)}", row.span)
        # both parsers: make_divisible(min(c2, max_channels) * width, 8)
        return int(math.ceil(min(c, self.max_channels) * self.width / 8) * 8)

    def repeats(self, n: int) -> int:
        return max(round(n * self.depth), 1) if n > 1 else n
