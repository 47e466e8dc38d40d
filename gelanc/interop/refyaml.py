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

Steps 1 and 2 are :mod:`gelanc.interop.yaml_rows`; which modules are known, and how
each one's arguments become a zoo block's, is the table :data:`MODULES` in
:mod:`gelanc.interop.yaml_modules` — one entry per module; steps 3 to 6 are here.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gelanc.diagnostics import GelError, Span
from gelanc.interop.yaml_modules import MODULES, module_kind
from gelanc.interop.yaml_rows import (
    QUOTE_CHARS,
    ModelYaml,
    Row,
    Scaling,
    cut,
    literal,
    read_rows,
    resolve,
    show,
)
from gelanc.limits import MAX_SPEC_BYTES, MAX_YAML_INT, MAX_YAML_MULTIPLE, MAX_YAML_REPEATS
from gelanc.yamlfile import read_bounded

DIALECTS = ("reference", "ultralytics")
COMMENT_COLUMN = 100  # where the spec's comments line up (a longer statement pushes its own out)


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
        names = [cut(k, 20) for k in list(cfg.scales)[:12]]
        raise GelError(f"{file} defines the scales {', '.join(names)}{', …' if len(cfg.scales) > 12 else ''}: "
                       f"choose one with --scale" + (f" ('{cut(pick, 20)}' is not one of them)" if pick else ""))
    values = cfg.scales[pick]
    if len(values) < 2:
        raise GelError(f"scale '{cut(pick, 20)}' must list [depth, width, max_channels]")
    depth, width = values[0], values[1]
    cap = values[2] if len(values) > 2 else math.inf
    if not (0 < depth <= MAX_YAML_MULTIPLE and 0 < width <= MAX_YAML_MULTIPLE
            and (cap == math.inf or 1 <= cap <= MAX_YAML_INT)):
        raise GelError(f"scale '{cut(pick, 20)}': depth and width must be over 0 and at most {MAX_YAML_MULTIPLE:g} "
                       f"(MAX_YAML_MULTIPLE), max_channels from 1 to {MAX_YAML_INT:,}; got {show(values)}")
    return Scaling(depth, width, cap)


def _strides(rows: list[Row]) -> dict[int, float]:
    """Each row's stride, for its name's level. Clamped to [0, 2³⁰]: a YAML may ask for any
    stride (1,000 rows of stride 2²⁰), which the spec's compile then refuses at its row."""
    out: dict[int, float] = {-1: 1.0}
    for r in rows:
        s = out[r.sources[-1] if module_kind(r.module) == "fuse" else r.sources[0]]
        if module_kind(r.module) == "enlarge":
            factor = r.args[1] if len(r.args) > 1 and isinstance(r.args[1], int) else 2
            s = s / factor if factor else s
        else:
            s = s * float(MODULES[r.module].stride(r.args)) if r.module in MODULES else s
        out[r.index] = min(max(s, 0.0), float(1 << 30))
    return out


def _branches(rows: list[Row]) -> tuple[set[int], set[int]]:
    """(main rows, aux rows). A dual head's first half reads the auxiliary branch (the
    reference's DualDDetect(A3, A4, A5, P3, P4, P5))."""
    heads = [r for r in rows if module_kind(r.module) == "head"]
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
    cfg, raw = read_rows(text, file)
    if cfg.activation and cfg.activation.replace(" ", "") not in ("nn.SiLU()", "SiLU()"):
        raise GelError(f"activation {cut(cfg.activation, QUOTE_CHARS)}: the zoo's blocks use SiLU only")
    rows = resolve(raw, file)
    for r in rows:
        if r.module not in MODULES:
            from gelanc.dsl.loader import suggest

            raise GelError(f"layer {r.index}: module '{cut(r.module, QUOTE_CHARS)}' has no counterpart in the zoo "
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
            if module_kind(r.module) == "pass":
                root[r.index] = root.get(r.sources[0], r.sources[0])
                continue
            for s in r.sources:
                self.readers[root.get(s, s)] = self.readers.get(root.get(s, s), 0) + 1
        head = next(r for r in rows if module_kind(r.module) == "head")
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
                    raise GelError(f"layer {row.index} (Conv): act={show(v)}; the zoo's Conv takes True (SiLU) "
                                   f"or False (none)", row.span)
                continue
            if p in m.fixed:  # an argument the zoo's block does not take: only its one value converts
                if v != m.fixed[p]:
                    raise GelError(f"layer {row.index} ({row.module}): {p}={show(v)}; the zoo's {m.block} has "
                                   f"{p}={m.fixed[p]}", row.span)
                continue
            out.append(literal(v, row) if not keyword else f"{p} = {literal(v, row)}")
        return out

    def value(self, row: Row, src: list[str] | None = None) -> str:
        """The row's .gel expression, reading its sources' expressions (or ``src``)."""
        src = src or [self.expr[s] for s in row.sources]
        mod, kind = row.module, module_kind(row.module)
        if kind == "pass":
            return src[0]
        if kind == "join":
            if row.args and row.args[0] not in (1, -3):
                raise GelError(f"layer {row.index} (Concat) joins along dim {show(row.args[0])}; .gel's concat joins "
                               f"channels (dim 1)", row.span)
            return f"concat({', '.join(src)})"
        if kind == "enlarge":
            size, factor, mode = (list(row.args) + [None, 2, "nearest"][len(row.args):])[:3]
            if size not in (None, "None") or mode != "nearest" or not isinstance(factor, int):
                raise GelError(f"layer {row.index} (nn.Upsample): only nearest upsampling by an integer factor "
                               f"has a .gel form, got {show(row.args)}", row.span)
            return f"upsample({src[0]})" if factor == 2 else f"upsample({src[0]}, {factor})"
        if kind == "fuse":
            picks = row.args[0] if row.args else None
            if not (isinstance(picks, list) and len(picks) == len(src) - 1):
                raise GelError(f"layer {row.index} (CBFuse) needs one index per routed layer, got {show(row.args)}",
                               row.span)
            for s in row.sources[:-1]:
                if module_kind(self.rows[s].module) != "route":
                    raise GelError(f"layer {row.index} (CBFuse) routes layer {s}, a {self.rows[s].module}; "
                                   f"CBFuse routes CBLinear outputs", row.span)
            routes = ", ".join(f"{e}[{literal(k, row)}]" for e, k in zip(src, picks))
            return f"CBFuse([{routes}], {src[-1]})"
        if kind == "head":
            return self.head(row, src)
        if len(src) != 1:
            raise GelError(f"layer {row.index} ({mod}) reads one layer, got {len(src)}", row.span)
        return f"{MODULES[mod].block}({', '.join([src[0], *self.call_args(row)])})"

    def head(self, row: Row, src: list[str]) -> str:
        nc = literal(row.args[0], row) if row.args else "nc"
        if len(row.args) > 1:
            raise GelError(f"layer {row.index} ({row.module}) takes [nc], got {show(row.args)}", row.span)
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
        message = cut(e.message, 300)
        if row is None:
            raise GelError(f"{file}: the converted network does not build: {message}") from None
        raise GelError(f"{what}: {message}", row.span).with_note(None, _statement(spec, spans[-1])) from None


def _statement(spec: str, span: Span) -> str:
    """The note under an error in the converted spec: its statement, and the part at fault."""
    line = spec.split("\n")[span.line - 1]
    code = line.split("  # ")[0].strip()
    note = f"in the converted statement `{cut(code, 120)}`"
    if span.end_line == span.line and span.end_column:
        part = line[span.column - 1: span.end_column - 1]
        if part and part != code:
            note += f", at `{cut(part, 60)}`"
    return note
