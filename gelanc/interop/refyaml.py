"""Model YAMLs of the reference code (WongKinYiu/yolov9) and of ultralytics → `.gel`.

Such a YAML lists layers as ``[from, repeats, module, args]`` rows that name their
inputs by index. The conversion is a small compiler of its own:

1. **read** — the rows, with their places in the file (every error points at one);
2. **resolve** — ``from`` to absolute indices, the widths and depths scaled as the
   YAML's own parser scales them (``make_divisible(c2 × width, 8)`` on a layer's
   output width, ``round(n × depth)`` on its repeats; ultralytics' ``scales`` too);
3. **branch** — with a dual head, the auxiliary half's inputs and every layer only
   they read are PGI's auxiliary branch; the rest is the main one;
4. **name** — each layer by its kind and pyramid level (``elan3``, ``down4``, ``p5``);
   the parameter-free ``Concat`` and ``nn.Upsample`` are folded into the expression
   that reads them;
5. **emit** — one statement per layer with weights, in the YAML's order (so the
   spec's units are the YAML's layers, and import-weights / export-weights map a
   checkpoint of this YAML onto it), aux runs inside ``aux { }``;
6. **check** — the spec is compiled and its shapes inferred; an error there is
   reported at the YAML row that produced the statement.

Which modules are known, and how each one's arguments become a zoo block's, is the
table :data:`MODULES` — one entry per module.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gelanc.diagnostics import SOURCES, GelError, Span
from gelanc.limits import (
    MAX_MODEL_YAML_BYTES,
    MAX_SPEC_BYTES,
    MAX_YAML_ARGS,
    MAX_YAML_FROM,
    MAX_YAML_INT,
    MAX_YAML_MULTIPLE,
    MAX_YAML_REPEATS,
    MAX_YAML_ROWS,
)
from gelanc.yamlfile import compose, read_bounded

DIALECTS = ("reference", "ultralytics")
QUOTE_CHARS = 60  # of a value from the file in a message
LINE_CHARS = 200  # of a line of the file (or of the converted spec) quoted under an error
COMMENT_COLUMN = 100  # where the spec's comments line up (a longer statement pushes its own out)


def _cut(text: str, limit: int = 200) -> str:
    """A message (a library's, or one quoting the file) cut to ``limit`` characters."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _show(value: Any) -> str:
    """A value from the file for a message: its repr, cut (the file may hold pages in one)."""
    text = repr(value)
    return text if len(text) <= QUOTE_CHARS else text[: QUOTE_CHARS - 1] + "…"


def _cut_lines(text: str) -> str:
    """``text`` with every line cut to LINE_CHARS, for quoting under an error."""
    return "\n".join(line if len(line) <= LINE_CHARS else line[: LINE_CHARS - 1] + "…"
                     for line in text.split("\n"))


# ---- the YAML's top level ---------------------------------------------------------


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


# ---- reading ----------------------------------------------------------------------


def _span(file: str, node: yaml.Node) -> Span:
    m, e = node.start_mark, node.end_mark
    return Span(file, m.line + 1, m.column + 1, e.line + 1 if e.line == m.line else None,
                e.column + 1 if e.line == m.line else None)


def _read(text: str, file: str) -> tuple[ModelYaml, list[tuple[Any, yaml.Node]]]:
    """The YAML's settings, and its rows with their nodes (for locations)."""
    size = len(text.encode("utf-8"))
    if size > MAX_MODEL_YAML_BYTES:  # before parsing: PyYAML takes ~6 µs a byte
        raise GelError(f"{file} is {size:,} bytes; a model YAML may be at most {MAX_MODEL_YAML_BYTES:,} "
                       f"(MAX_MODEL_YAML_BYTES; the reference's largest is 3.4 KB)")
    SOURCES.add(file, _cut_lines(text))
    try:
        root = compose(text)
        # built from the node tree, not parsed a second time
        data = yaml.constructor.SafeConstructor().construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        span = Span(file, mark.line + 1, mark.column + 1) if mark else None
        raise GelError(f"not valid YAML: {_cut(str(e.problem or e.context))}", span) from None
    except yaml.YAMLError as e:
        raise GelError(f"{file}: not valid YAML: {_cut(str(e))}") from None
    except RecursionError:
        raise GelError(f"{file}: not valid YAML: collections nested too deeply") from None
    except ValueError as e:  # a value PyYAML's constructors cannot make (an integer of 5,000 digits, a date)
        what = "an integer of thousands of digits" if "digits" in str(e) else _cut(str(e), 100)
        raise GelError(f"{file}: not valid YAML: {what}") from None
    if not isinstance(data, dict) or not isinstance(root, yaml.MappingNode):
        raise GelError(f"{file}: a model YAML is a mapping with `backbone` and `head` lists")
    nodes = {k.value: v for k, v in root.value if isinstance(k, yaml.ScalarNode)}
    try:
        cfg = ModelYaml.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        key = str(err["loc"][0]) if err["loc"] else ""
        where = _span(file, nodes[key]) if key in nodes else None
        what = _cut(".".join(str(p) for p in err["loc"]))
        raise GelError(f"`{what}`: {_cut(err['msg'])}" if what else _cut(err["msg"]), where) from None
    rows = []
    for section in ("backbone", "head"):
        seq = nodes.get(section)
        if seq is None:
            continue
        if not isinstance(seq, yaml.SequenceNode):
            raise GelError(f"`{section}` must be a list of [from, repeats, module, args] rows", _span(file, seq))
        rows += list(zip(data[section] or [], seq.value))
        if len(rows) > MAX_YAML_ROWS:
            raise GelError(f"layer {MAX_YAML_ROWS}: a model YAML may list at most {MAX_YAML_ROWS:,} layers "
                           f"(MAX_YAML_ROWS; the reference's largest has 50)", _span(file, rows[MAX_YAML_ROWS][1]))
    if not rows:
        raise GelError(f"{file} lists no layers (`backbone` and `head` are empty)")
    return cfg, rows


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_args(args: list, i: int, span: Span) -> None:
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
        elif _is_int(v) and abs(v) > MAX_YAML_INT:
            raise GelError(f"layer {i}: argument {_show(v)} is over {MAX_YAML_INT:,} in magnitude (MAX_YAML_INT)",
                           span)


def _resolve(raw: list[tuple[Any, yaml.Node]], file: str) -> list[Row]:
    rows = []
    for i, (value, node) in enumerate(raw):
        span = _span(file, node)
        if not (isinstance(value, list) and len(value) == 4):
            raise GelError(f"layer {i}: a row is [from, repeats, module, args], got {_show(value)}", span)
        f, n, module, args = value
        module_span, repeats_span = _span(file, node.value[2]), _span(file, node.value[1])
        if not isinstance(module, str):
            raise GelError(f"layer {i}: the module must be a name, got {_show(module)}", module_span)
        if not (_is_int(n) and n >= 1):
            raise GelError(f"layer {i}: repeats must be a positive integer, got {_show(n)}", repeats_span)
        if n > MAX_YAML_INT:  # before any arithmetic on it; scaled, it is held to MAX_YAML_REPEATS
            raise GelError(f"layer {i}: {_show(n)} repeats is over {MAX_YAML_INT:,} (MAX_YAML_INT)", repeats_span)
        if not isinstance(args, list):
            raise GelError(f"layer {i}: args must be a list, got {_show(args)}", _span(file, node.value[3]))
        _check_args(args, i, _span(file, node.value[3]))
        many = isinstance(f, list)
        from_span = _span(file, node.value[0])
        if many and not f:
            raise GelError(f"layer {i}: `from` lists no layer", from_span)
        if many and len(f) > MAX_YAML_FROM:
            raise GelError(f"layer {i}: `from` lists {len(f):,} layers; a row may read at most {MAX_YAML_FROM} "
                           f"(MAX_YAML_FROM; the reference's read at most 6)", from_span)
        sources = []
        for s in f if many else [f]:
            if not _is_int(s):
                raise GelError(f"layer {i}: `from` holds layer indices, got {_show(s)}", from_span)
            j = i + s if s < 0 else s
            if s < 0 and i == 0 and j == -1:
                sources.append(-1)  # the first layer reads the image
            elif not 0 <= j < i:
                raise GelError(f"layer {i} reads layer {_show(s)}, which " +
                               ("comes later (a layer reads only earlier ones)" if j >= i else "does not exist"),
                               from_span)
            else:
                sources.append(j)
        if n > 1 and (len(sources) != 1 or _kind(module) in ("join", "fuse", "head")):
            mod = _cut(module, QUOTE_CHARS)
            raise GelError(f"layer {i} ({mod}): repeats > 1 chains copies of a one-input layer; "
                           f"{mod} reading {len(sources)} layer(s) cannot be chained", repeats_span)
        rows.append(Row(i, sources, n, module, list(args), span, module_span, repeats_span))
    return rows


# ---- arguments --------------------------------------------------------------------


def _literal(v: Any, row: Row) -> str:
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
        return "[" + ", ".join(_literal(x, row) for x in v) + "]"
    raise GelError(f"layer {row.index} ({row.module}): argument {_show(v)} has no .gel form", row.span)


@dataclass
class Scaling:
    """The YAML's multiples, applied by both parsers' rules."""

    depth: float = 1.0
    width: float = 1.0
    max_channels: float = math.inf

    def channels(self, c: Any, row: Row) -> int:
        if not isinstance(c, int) or isinstance(c, bool) or c <= 0:
            raise GelError(f"layer {row.index} ({row.module}): the output width must be a positive integer, "
                           f"got {_show(c)}", row.span)
        # both parsers: make_divisible(min(c2, max_channels) * width, 8)
        return int(math.ceil(min(c, self.max_channels) * self.width / 8) * 8)

    def repeats(self, n: int) -> int:
        return max(round(n * self.depth), 1) if n > 1 else n


# ---- the module table -------------------------------------------------------------


@dataclass(frozen=True)
class Module:
    """How one YAML module becomes .gel.

    ``block``: the zoo block it is (None for the parameter-free ones, which become
    expressions); ``stem``: the naming stem; ``params``: the block's arguments after the
    input, in the YAML's order (a longer args list is an error); ``stride``: how it
    changes the feature map's stride (a callable of the args for Conv); ``kind``: how the
    conversion treats it — "block" (a zoo block called on one input), "route" (CBLinear:
    its outputs are what a fuse may route), "fuse" (CBFuse: routed parts, then the map they
    join), "join" (Concat), "enlarge" (nn.Upsample), "pass" (the image, or its input, as it is), "head";
    for a head, ``dual`` (main and auxiliary halves) and ``ultralytics_head`` (the narrower
    class branch when the YAML is ultralytics')."""

    block: str | None
    stem: str
    params: tuple[str, ...] = ()
    stride: Callable[[list], float] = lambda args: 1
    scaled: bool = True  # args[0] is an output width the width multiple scales
    kind: str = "block"
    dual: bool = False
    ultralytics_head: bool = False
    fixed: dict = field(default_factory=dict)  # params whose only convertible value is this


def _conv_stride(args: list) -> float:
    return args[2] if len(args) > 2 and isinstance(args[2], int) else 1


_PASS = {"Silence", "nn.Identity", "Identity"}

MODULES: dict[str, Module] = {
    "Conv": Module("Conv", "conv", ("c2", "k", "s", "p", "g", "d", "act"), _conv_stride),
    "AConv": Module("AConv", "down", ("c2",), lambda a: 2),
    "ADown": Module("ADown", "down", ("c2",), lambda a: 2),
    "ELAN1": Module("ELAN1", "elan", ("c2", "c3", "c4")),
    "RepNCSPELAN4": Module("RepNCSPELAN4", "elan", ("c2", "c3", "c4", "c5")),
    "SPPELAN": Module("SPPELAN", "spp", ("c2", "c3", "k"), fixed={"k": 5}),
    "CBLinear": Module("CBLinear", "route", ("c2s",), scaled=False, kind="route"),
    "CBFuse": Module(None, "fuse", scaled=False, kind="fuse"),
    "Concat": Module(None, "cat", scaled=False, kind="join"),
    "nn.Upsample": Module(None, "up", scaled=False, kind="enlarge"),
    **{name: Module(None, "x", scaled=False, kind="pass") for name in _PASS},
    "DDetect": Module("DDetect", "head", scaled=False, kind="head"),
    "DualDDetect": Module("DualDDetect", "head", scaled=False, kind="head", dual=True),
    "Detect": Module("Detect", "head", scaled=False, kind="head", ultralytics_head=True),
}




def _kind(module: str) -> str:
    """How the conversion treats a YAML module (an unknown one is refused where it is named)."""
    m = MODULES.get(module)
    return m.kind if m is not None else "block"


# ---- the conversion ---------------------------------------------------------------


@dataclass
class Converted:
    """A YAML's conversion: the spec's text and what it holds."""

    text: str
    model: str
    layers: int  # the YAML's rows
    statements: int  # the spec's statements (layers with weights, and shared expressions)
    aux_layers: list[int]  # the rows on PGI's auxiliary branch
    dialect: str
    scaling: Scaling
    graph: Any = None  # the lowered, checked IR (networkx)


def _dialect(cfg: ModelYaml, asked: str) -> str:
    if asked != "auto":
        return asked
    # the reference's detect YAMLs all carry `anchors`; ultralytics' never do
    return "reference" if "anchors" in (cfg.model_extra or {}) else "ultralytics"


def _scaling(cfg: ModelYaml, file: str, scale: str | None) -> Scaling:
    if not cfg.scales:
        if scale:
            raise GelError(f"--scale {scale}: {file} has no `scales`")
        return Scaling(cfg.depth_multiple, cfg.width_multiple)
    pick = scale or cfg.scale
    if pick is None:  # ultralytics' own guess: yolov8n.yaml is scale n
        m = re.search(r"yolov?\d+([a-z])", Path(file).stem)
        pick = m.group(1) if m and m.group(1) in cfg.scales else None
    if pick not in cfg.scales:
        names = [_cut(k, 20) for k in list(cfg.scales)[:12]]
        raise GelError(f"{file} defines the scales {', '.join(names)}{', …' if len(cfg.scales) > 12 else ''}: "
                       f"choose one with --scale" + (f" ('{_cut(pick, 20)}' is not one of them)" if pick else ""))
    values = cfg.scales[pick]
    if len(values) < 2:
        raise GelError(f"scale '{_cut(pick, 20)}' must list [depth, width, max_channels]")
    depth, width = values[0], values[1]
    cap = values[2] if len(values) > 2 else math.inf
    if not (0 < depth <= MAX_YAML_MULTIPLE and 0 < width <= MAX_YAML_MULTIPLE
            and (cap == math.inf or 1 <= cap <= MAX_YAML_INT)):
        raise GelError(f"scale '{_cut(pick, 20)}': depth and width must be over 0 and at most {MAX_YAML_MULTIPLE:g} "
                       f"(MAX_YAML_MULTIPLE), max_channels from 1 to {MAX_YAML_INT:,}; got {_show(values)}")
    return Scaling(depth, width, cap)


def _strides(rows: list[Row]) -> dict[int, float]:
    """Each row's stride, for its name's level. Clamped to [0, 2³⁰]: a YAML may ask for any
    stride (1,000 rows of stride 2²⁰), which the spec's compile then refuses at its row."""
    out: dict[int, float] = {-1: 1.0}
    for r in rows:
        s = out[r.sources[-1] if _kind(r.module) == "fuse" else r.sources[0]]
        if _kind(r.module) == "enlarge":
            factor = r.args[1] if len(r.args) > 1 and isinstance(r.args[1], int) else 2
            s = s / factor if factor else s
        else:
            s = s * float(MODULES[r.module].stride(r.args)) if r.module in MODULES else s
        out[r.index] = min(max(s, 0.0), float(1 << 30))
    return out


def _branches(rows: list[Row]) -> tuple[set[int], set[int]]:
    """(main rows, aux rows). A dual head's first half reads the auxiliary branch (the
    reference's DualDDetect(A3, A4, A5, P3, P4, P5))."""
    heads = [r for r in rows if _kind(r.module) == "head"]
    if len(heads) != 1:
        where = heads[1].span if heads else rows[-1].span
        raise GelError("a model YAML needs exactly one detection head (DDetect, DualDDetect or Detect); "
                       f"found {len(heads)}", where)
    head = heads[0]
    by = {r.index: r for r in rows}
    roots = head.sources[len(head.sources) // 2:] if head.module.startswith("Dual") else head.sources

    def reach(starts) -> set[int]:
        seen, todo = set(), [s for s in starts if s >= 0]
        while todo:
            i = todo.pop()
            if i not in seen:
                seen.add(i)
                todo += [s for s in by[i].sources if s >= 0]
        return seen

    main = reach(roots) | {head.index}
    everything = reach(head.sources) | {head.index}
    for r in rows:
        if r.index not in everything:
            raise GelError(f"layer {r.index} ({r.module}) feeds nothing the detection head reads", r.span)
    return main, everything - main


def convert(text: str, file: str = "<model.yaml>", *, scale: str | None = None, dialect: str = "auto",
            model_name: str | None = None) -> Converted:
    """A model YAML's text → a checked .gel spec. Raises :class:`GelError` located in the YAML."""
    if dialect not in ("auto", *DIALECTS):
        raise GelError(f"unknown dialect '{dialect}' (auto, {', '.join(DIALECTS)})")
    cfg, raw = _read(text, file)
    if cfg.activation and cfg.activation.replace(" ", "") not in ("nn.SiLU()", "SiLU()"):
        raise GelError(f"activation {_cut(cfg.activation, QUOTE_CHARS)}: the zoo's blocks use SiLU only")
    rows = _resolve(raw, file)
    for r in rows:
        if r.module not in MODULES:
            from gelanc.dsl.loader import suggest

            raise GelError(f"layer {r.index}: module '{_cut(r.module, QUOTE_CHARS)}' has no counterpart in the zoo "
                           f"(known: {', '.join(sorted(MODULES))}){suggest(r.module, MODULES)}", r.module_span)
    dialect = _dialect(cfg, dialect)
    scaling = _scaling(cfg, file, scale)
    for r in rows:  # before any copy is written
        if (n := scaling.repeats(r.repeats)) > MAX_YAML_REPEATS:
            scaled = f" ({r.repeats:,} × depth {scaling.depth:g})" if n != r.repeats else ""
            raise GelError(f"layer {r.index} ({r.module}): {n:,} repeats{scaled}; a row may repeat at most "
                           f"{MAX_YAML_REPEATS} times (MAX_YAML_REPEATS; the reference's: 1, ultralytics': ≤ 9)",
                           r.repeats_span)
    name = model_name or re.sub(r"\W", "_", Path(file).stem).strip("_") or "model"
    if name[0].isdigit():
        name = "m_" + name
    emitter = _Emitter(rows, scaling, dialect, _strides(rows), *_branches(rows))
    body = emitter.emit()
    head = ["import \"zoo/blocks.gel\"", "",
            f"# Converted by `gelanc import-yaml` from {Path(file).name} ({dialect} YAML)"]
    if (scaling.depth, scaling.width, scaling.max_channels) != (1.0, 1.0, math.inf):
        head.append(f"# depth × {scaling.depth:g}, width × {scaling.width:g}"
                    + (f", at most {scaling.max_channels:g} channels" if scaling.max_channels != math.inf else "")
                    + " applied (the widths below are final)")
    head.append("# The comments give each statement's layer indices in the YAML.")
    spec = "\n".join([*head, f"model {name}(nc: int = {cfg.nc}) {{", *body, "}", ""])
    out_name = str(Path(file).with_suffix(".gel"))
    g = _check(spec, out_name, emitter.lines, file)
    return Converted(spec, name, len(rows), emitter.statements, sorted(emitter.aux), dialect, scaling, g)


def convert_file(path: str | Path, **options) -> Converted:
    path = Path(path)
    try:
        text = read_bounded(path).decode("utf-8")
    except FileNotFoundError:
        raise GelError(f"no such file: {path}") from None
    except UnicodeDecodeError:
        raise GelError(f"cannot read {path}: not UTF-8 text") from None
    except OSError as e:
        raise GelError(f"cannot read {path}: {e.strerror or type(e).__name__}") from None
    except ValueError as e:
        raise GelError(f"{path}: {e}: not a model YAML") from None
    return convert(text, str(path), **options)


class _Emitter:
    """Rows → statement lines. Keeps which .gel line came from which row, for errors."""

    def __init__(self, rows: list[Row], scaling: Scaling, dialect: str, strides: dict[int, float],
                 main: set[int], aux: set[int]) -> None:
        self.rows, self.scaling, self.dialect, self.strides = rows, scaling, dialect, strides
        self.main, self.aux = main, aux
        # readers of each row's value; a Silence or nn.Identity passes its input on, so its
        # readers read that input (else one Concat, folded, would be copied into each of them)
        self.readers: dict[int, int] = {}
        root: dict[int, int] = {}
        for r in rows:
            if _kind(r.module) == "pass":
                root[r.index] = root.get(r.sources[0], r.sources[0])
                continue
            for s in r.sources:
                self.readers[root.get(s, s)] = self.readers.get(root.get(s, s), 0) + 1
        head = next(r for r in rows if _kind(r.module) == "head")
        half = len(head.sources) // 2 if head.module.startswith("Dual") else 0
        self.head_inputs = {s: ("aux_p" if k < half else "p") for k, s in enumerate(head.sources)}
        self.expr: dict[int, str] = {-1: "x"}
        self.folded: dict[int, list[int]] = {}  # a row's expression holds these rows too
        self.names: set[str] = {"x", "nc"}
        self.suffixes: dict[str, int] = {}  # the next _k to try after each base name
        self.size = 0  # bytes of the statements so far, at least
        self.lines: dict[int, tuple[str, Row]] = {}  # 1-based body line → (its rows as errors name them, row)
        self.body: list[tuple[str, list[int], Row]] = []  # (code, the rows it holds, row)
        self.statements = 0

    def level(self, i: int) -> str:
        s = self.strides.get(i, 1)
        return str(int(round(math.log2(s)))) if s >= 1 else "0"

    def fresh(self, row: Row) -> str:
        m = MODULES[row.module]
        if row.index in self.head_inputs:
            base = f"{self.head_inputs[row.index]}{self.level(row.index)}"
        elif m.stem == "head":
            base = "head"
        elif m.stem == "spp":
            base = "spp"
        else:
            at = row.sources[0] if m.stem == "route" else row.index
            stem = m.stem
            if stem == "elan" and any(self.rows[k].module == "nn.Upsample" for k in self.folded.get(row.index, [])):
                stem = "up"  # the top-down path's blocks
            base = f"{stem}{self.level(at)}"
            if stem == "down" and base in self.names and row.sources[0] in self.head_inputs:
                base = f"down_{self.expr[row.sources[0]]}"  # the bottom-up path's: down_p3, down_p4
        if row.index in self.aux and not base.startswith("aux_"):
            base = "aux_" + base
        name, k = base, self.suffixes.get(base, 2)
        while name in self.names:
            name, k = f"{base}_{k}", k + 1
        self.suffixes[base] = k
        self.names.add(name)
        return name

    def call_args(self, row: Row) -> list[str]:
        m = MODULES[row.module]
        args = list(row.args)
        if len(args) > len(m.params):
            raise GelError(f"layer {row.index} ({row.module}) takes at most {len(m.params)} arguments "
                           f"({', '.join(m.params)}), got {len(args)}", row.span)
        if m.scaled and args:
            args[0] = self.scaling.channels(args[0], row)
        out, keyword = [], False
        for p, v in zip(m.params, args):
            if p == "act":
                if v is False:
                    out.append("act = none")
                    keyword = True
                elif v is not True:
                    raise GelError(f"layer {row.index} (Conv): act={_show(v)}; the zoo's Conv takes True (SiLU) "
                                   f"or False (none)", row.span)
                continue
            if p in m.fixed:  # an argument the zoo's block does not take: only its one value converts
                if v != m.fixed[p]:
                    raise GelError(f"layer {row.index} ({row.module}): {p}={_show(v)}; the zoo's {m.block} has "
                                   f"{p}={m.fixed[p]}", row.span)
                continue
            out.append(_literal(v, row) if not keyword else f"{p} = {_literal(v, row)}")
        return out

    def value(self, row: Row, src: list[str] | None = None) -> str:
        """The row's .gel expression, reading its sources' expressions (or ``src``)."""
        src = src or [self.expr[s] for s in row.sources]
        mod, kind = row.module, _kind(row.module)
        if kind == "pass":
            return src[0]
        if kind == "join":
            if row.args and row.args[0] not in (1, -3):
                raise GelError(f"layer {row.index} (Concat) joins along dim {_show(row.args[0])}; .gel's concat joins "
                               f"channels (dim 1)", row.span)
            return f"concat({', '.join(src)})"
        if kind == "enlarge":
            size, factor, mode = (list(row.args) + [None, 2, "nearest"][len(row.args):])[:3]
            if size not in (None, "None") or mode != "nearest" or not isinstance(factor, int):
                raise GelError(f"layer {row.index} (nn.Upsample): only nearest upsampling by an integer factor "
                               f"has a .gel form, got {_show(row.args)}", row.span)
            return f"upsample({src[0]})" if factor == 2 else f"upsample({src[0]}, {factor})"
        if kind == "fuse":
            picks = row.args[0] if row.args else None
            if not (isinstance(picks, list) and len(picks) == len(src) - 1):
                raise GelError(f"layer {row.index} (CBFuse) needs one index per routed layer, got {_show(row.args)}",
                               row.span)
            for s in row.sources[:-1]:
                if _kind(self.rows[s].module) != "route":
                    raise GelError(f"layer {row.index} (CBFuse) routes layer {s}, a {self.rows[s].module}; "
                                   f"CBFuse routes CBLinear outputs", row.span)
            routes = ", ".join(f"{e}[{_literal(k, row)}]" for e, k in zip(src, picks))
            return f"CBFuse([{routes}], {src[-1]})"
        if kind == "head":
            return self.head(row, src)
        if len(src) != 1:
            raise GelError(f"layer {row.index} ({mod}) reads one layer, got {len(src)}", row.span)
        return f"{MODULES[mod].block}({', '.join([src[0], *self.call_args(row)])})"

    def head(self, row: Row, src: list[str]) -> str:
        nc = _literal(row.args[0], row) if row.args else "nc"
        if len(row.args) > 1:
            raise GelError(f"layer {row.index} ({row.module}) takes [nc], got {_show(row.args)}", row.span)
        if MODULES[row.module].dual:
            if len(src) % 2:
                raise GelError(f"layer {row.index} (DualDDetect) reads an even number of layers: the auxiliary "
                               f"half, then the main one", row.span)
            half = len(src) // 2
            return f"DualDDetect([{', '.join(src[half:])}], [{', '.join(src[:half])}], {nc})"
        extra = ""
        if MODULES[row.module].ultralytics_head:  # the reference's Detect, or ultralytics' (narrower class branch)
            extra = ", g = 1" if self.dialect == "reference" else ", g = 1, cls_mult = 1, cls_max = 100"
        return f"DDetect([{', '.join(src)}], {nc}{extra})"

    def emit(self) -> list[str]:
        for row in self.rows:
            mod = MODULES[row.module]
            expr = self.value(row)
            folded = [k for s in row.sources if s in self.folded for k in self.folded.pop(s)]
            if mod.kind == "pass":
                self.expr[row.index] = expr  # Silence: the image itself
                if folded:
                    self.folded[row.index] = folded
                continue
            if mod.block is None and mod.kind != "fuse" and self.readers.get(row.index, 0) == 1:
                self._grow(len(expr), row)
                self.expr[row.index] = expr  # a Concat or Upsample read once: folded into its reader
                self.folded[row.index] = [*folded, row.index]
                continue
            n = self.scaling.repeats(row.repeats)
            self.folded[row.index] = folded
            name = self.fresh(row)
            self.folded.pop(row.index)
            for k in range(n - 1):  # the reference's nn.Sequential of n copies, as a chain
                self._append(f"{name}_{k} = {expr}", [row.index], row)
                self.names.add(f"{name}_{k}")
                expr = self.value(row, [f"{name}_{k}"])
            self._append(f"{name} = {expr}", [*folded, row.index], row)
            self.expr[row.index] = name
        return self._layout()

    def _append(self, code: str, held: list[int], row: Row) -> None:
        self.size += len(code) + 8  # its indent and comment: 8 bytes at least
        self._grow(0, row)
        self.body.append((code, held, row))

    def _grow(self, extra: int, row: Row) -> None:
        """Stop at the row whose statement takes the spec past MAX_SPEC_BYTES, before
        writing the rest (a row may ask for 100 copies, and there may be 1,000 rows)."""
        if self.size + extra > MAX_SPEC_BYTES:
            raise GelError(f"layer {row.index} ({row.module}): the converted spec passes {MAX_SPEC_BYTES:,} bytes "
                           f"here, the most a .gel file may hold (MAX_SPEC_BYTES)", row.span)

    def _layout(self) -> list[str]:
        lines = ["    x = input(3)"]
        # the comments line up, up to COMMENT_COLUMN: a long statement does not push every line out
        width = min(max(len(code) for code, _, _ in self.body) + (8 if self.aux else 4), COMMENT_COLUMN)
        in_aux = False
        for code, held, row in self.body:
            aux = row.index in self.aux
            if aux != in_aux:
                lines.append("    aux {" if aux else "    }")
                in_aux = aux
            indent = "        " if aux else "    "
            stride = self.strides.get(row.index, 1)
            down = stride > self.strides.get(row.sources[0], 1) and stride >= 2
            note = f"  P{self.level(row.index)}/{int(stride)}" if down else ""
            lines.append(f"{indent}{code}".ljust(width) + f"  # {', '.join(map(str, held))}{note}")
            self.lines[len(lines)] = (_rows_named(held, self.rows), row)
            self.statements += 1
        if in_aux:
            lines.append("    }")
        lines.append(f"    return {self.expr[self.rows[-1].index]}")  # the head: every other row feeds it
        return lines


def _rows_named(held: list[int], rows: list[Row]) -> str:
    """The rows of one statement as an error names them: ``layers 10, 11, 12 (nn.Upsample,
    Concat, RepNCSPELAN4)``; a long fold by its ends."""
    if len(held) == 1:
        return f"layer {held[0]} ({rows[held[0]].module})"
    if len(held) > 6:
        return f"layers {held[0]} … {held[-1]} ({len(held)} rows folded into one statement)"
    return f"layers {', '.join(map(str, held))} ({', '.join(rows[k].module for k in held)})"


def _check(spec: str, name: str, lines: dict[int, tuple[str, Row]], file: str):
    """Compile the spec and infer its shapes at 640; an error is the YAML row's, or the
    YAML file's where no one row made it. The spec is not written, so the error names no
    place in it: a note quotes the converted statement instead."""
    from gelanc.dsl.loader import load_text
    from gelanc.passes.shapes import infer
    from gelanc.pipeline import graphs

    header = spec[: spec.index("\nmodel ")].count("\n") + 2  # the body's line 1 is the model line + 1
    try:
        (g,) = graphs(load_text(spec, name))
        infer(g, (640, 640))
        return g
    except GelError as e:
        spans = [s for s in [e.span, *(n.span for n in e.notes)] if s and s.file == name]
        what, row = lines.get(spans[-1].line - header, (None, None)) if spans else (None, None)
        message = _cut(e.message, 300)
        if row is None:
            raise GelError(f"{file}: the converted network does not build: {message}") from None
        raise GelError(f"{what}: {message}", row.span).with_note(None, _statement(spec, spans[-1])) from None


def _statement(spec: str, span: Span) -> str:
    """The note under an error in the converted spec: its statement, and the part at fault."""
    line = spec.split("\n")[span.line - 1]
    code = line.split("  # ")[0].strip()
    note = f"in the converted statement `{_cut(code, 120)}`"
    if span.end_line == span.line and span.end_column:
        part = line[span.column - 1: span.end_column - 1]
        if part and part != code:
            note += f", at `{_cut(part, 60)}`"
    return note
