"""The `gelanc` command line: a thin layer over the Python API.

Exit status: 0 ok, 1 runtime failure, 2 user error (bad spec, bad arguments).
Heavy modules are imported inside the commands, so `gelanc --help` starts at once.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXIT_OK, EXIT_FAIL, EXIT_USER = 0, 1, 2


class UserError(Exception):
    """A mistake in how gelanc was called (not in a spec): exit 2."""


def _specs(files: list[str]) -> list[Path]:
    if files:
        return [Path(f) for f in files]
    from gelanc.dsl.loader import builtin_specs

    return builtin_specs()


def _imgsz(text: str) -> tuple[int, int]:
    from gelanc.stats import parse_imgsz

    try:
        h, w = parse_imgsz(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if h <= 0 or w <= 0:
        raise argparse.ArgumentTypeError(f"image size must be positive, got {text}")
    return (h, w)


def _model_params(pairs: list[str]) -> dict:
    out = {}
    for p in pairs or []:
        key, sep, value = p.partition("=")
        if not sep or not key.isidentifier():
            raise UserError(f"--set takes NAME=VALUE, got '{p}'")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


# ---- commands ---------------------------------------------------------------------


def cmd_check(args) -> int:
    from gelanc.diagnostics import GelError, render
    from gelanc.stats import compile_file

    status, results = EXIT_OK, []
    for path in _specs(args.files):
        try:
            graphs = compile_file(path, **_model_params(args.set))
        except GelError as e:
            status = EXIT_USER
            print(render(e), file=sys.stderr)
            results.append({"file": str(path), "ok": False, "error": str(e)})
            continue
        for g in graphs:
            aux = sum(1 for _, b in g.nodes(data="branch") if b == "aux")
            results.append({"file": str(path), "ok": True, "model": g.graph["model"],
                            "nodes": g.number_of_nodes(), "aux_nodes": aux})
            if not args.json:
                print(f"{path}: ok: model {g.graph['model']}, {g.number_of_nodes()} ops"
                      + (f" ({aux} on the aux branch)" if aux else ""))
    if args.json:
        print(json.dumps(results[0] if len(results) == 1 else results, indent=2))
    return status


def cmd_stats(args) -> int:
    from gelanc.diagnostics import GelError, render
    from gelanc.stats import compile_file, model_stats

    rows, status = [], EXIT_OK
    for path in _specs(args.files):
        try:
            for g in compile_file(path, **_model_params(args.set)):
                rows.append(model_stats(g, args.imgsz, per_block=args.per_block))
        except GelError as e:
            status = EXIT_USER
            print(render(e), file=sys.stderr)
    if args.json:
        if rows:
            print(json.dumps(rows[0] if len(rows) == 1 else rows, indent=2))
    else:
        from gelanc.report import stats_table

        print(stats_table(rows, per_block=args.per_block))
    return status


def _write_text(path: Path, text: str) -> None:
    """Write a whole file or nothing: a temporary file beside it, renamed into place."""
    import os
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _module(source: str, params: dict, train: bool = False):
    """A spec (compiled, freshly initialised) or a checkpoint (loaded): deploy graph unless ``train``."""
    import gelanc
    from gelanc.torch_fx import ir_of

    if source.endswith((".pt", ".pth")):
        if params:
            raise UserError("--set applies to specs; a checkpoint keeps the parameters it was built with")
        m = gelanc.load(source)
    else:
        m = gelanc.compile(source, **params)
    deployed = m.meta["gelanc"].get("deployed")
    if train and deployed:
        raise UserError(f"{source} holds a deploy graph; --train needs a train checkpoint or a spec")
    if not train and not deployed:
        m = gelanc.deploy(m)
    return m, ir_of(m)


def cmd_build(args) -> int:
    import json as _json

    from gelanc.checkpoint import save
    from gelanc.ir.graph import to_json
    from gelanc.stats import model_stats

    m, g = _module(args.spec, _model_params(args.set), train=not args.deploy)
    name = g.graph["model"]
    out = Path(args.out or Path("build") / name)
    try:
        out.mkdir(parents=True, exist_ok=True)
        stats = model_stats(g, args.imgsz)
        files = {"code": out / f"{name}.py", "ir": out / f"{name}.ir.json", "stats": out / f"{name}.stats.json",
                 "checkpoint": out / f"{name}.pt"}
        _write_text(files["code"], f"# Generated by gelanc from {g.graph.get('file')}: model {name}"
                                   f"{' (deploy graph)' if args.deploy else ''}\n{m.code.lstrip()}")
        _write_text(files["ir"], _json.dumps(to_json(g), indent=1))
        _write_text(files["stats"], _json.dumps(stats, indent=2))
        save(m, files["checkpoint"])
    except OSError as e:
        raise UserError(f"cannot write to {out}: {e.strerror or e}") from None
    graph = "deploy" if args.deploy else "train"
    summary = {"model": name, "graph": graph, "params": sum(p.numel() for p in m.parameters()),
               "gflops": stats[graph]["gflops"], "imgsz": stats["imgsz"], "nodes": g.number_of_nodes(),
               "files": {k: str(v) for k, v in files.items()}}
    if args.json:
        print(_json.dumps(summary, indent=2))
    else:
        print(f"{name} ({graph} graph): {summary['params']:,} parameters, {summary['gflops']:.1f} GFLOPs at "
              f"{args.imgsz[0]}×{args.imgsz[1]}, {summary['nodes']} ops")
        for kind, path in files.items():
            print(f"  {kind:<10} {path}")
    return EXIT_OK


def cmd_export(args) -> int:
    from gelanc.export import FORMATS, export

    m, g = _module(args.source, _model_params(args.set), train=args.train)
    path = Path(args.output or f"{g.graph['model']}{'-train' if args.train else ''}{FORMATS[args.format]}")
    print(f"exporting {g.graph['model']} ({'train' if args.train else 'deploy'} graph) to {args.format}…",
          file=sys.stderr)
    try:
        report = export(m, args.format, path, args.imgsz, dynamic=args.dynamic, half=args.half)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"wrote {report['path']}: {args.format}, input {'×'.join(map(str, report['input']))} "
              f"{report['dtype']}{' (dynamic)' if args.dynamic else ''}, checked against PyTorch: "
              f"max error {report['max_rel_error']:.1e} of the output's scale")
    return EXIT_OK


# ---- wiring -----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gelanc", description="A compiler and model zoo for GELAN networks (YOLOv9).")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    c = sub.add_parser("check", help="parse, lower and validate specs; print diagnostics only",
                       description="Check .gel specs (the whole zoo when no FILE is given).")
    c.add_argument("files", nargs="*", metavar="FILE")
    c.add_argument("--set", action="append", metavar="NAME=VALUE", help="override a model parameter, e.g. nc=20")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c.set_defaults(func=cmd_check)

    s = sub.add_parser("stats", help="parameters and GFLOPs of the train and deploy graphs beside the paper's",
                       description="Count parameters and FLOPs (thop convention, as the YOLOv9 paper) of "
                                   "each model's train graph and deploy graph (aux branch removed, BN and "
                                   "RepConvN fused), beside the paper's figures. The whole zoo when no FILE "
                                   "is given.")
    s.add_argument("files", nargs="*", metavar="FILE")
    s.add_argument("--imgsz", type=_imgsz, default=(640, 640), metavar="N|HxW",
                   help="input size, square N or height×width (default 640)")
    s.add_argument("--per-block", action="store_true", help="break the counts down by top-level block")
    s.add_argument("--set", action="append", metavar="NAME=VALUE", help="override a model parameter, e.g. nc=20")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_stats)

    b = sub.add_parser("build", help="compile a spec to a torch.fx module; write its code, IR, stats, checkpoint",
                       description="Compile SPEC to a torch.fx GraphModule (weights initialised as the "
                                   "reference does) and write DIR/MODEL.py (the generated forward), "
                                   "MODEL.ir.json, MODEL.stats.json and MODEL.pt (a checkpoint).")
    b.add_argument("spec", metavar="SPEC")
    b.add_argument("-o", "--out", metavar="DIR", help="output folder (default build/MODEL)")
    b.add_argument("--deploy", action="store_true", help="build the deploy graph (aux removed, BN/RepConvN fused)")
    b.add_argument("--imgsz", type=_imgsz, default=(640, 640), metavar="N|HxW", help="size for the stats")
    b.add_argument("--set", action="append", metavar="NAME=VALUE", help="override a model parameter, e.g. nc=20")
    b.add_argument("--json", action="store_true", help="machine-readable summary")
    b.set_defaults(func=cmd_build)

    e = sub.add_parser("export", help="export to ONNX, TorchScript or torch.export, checked against PyTorch",
                       description="Export the deploy graph (or the train graph with --train) of a spec or "
                                   "checkpoint as images → predictions (B, 4 + nc, anchors). The file is "
                                   "run and compared with PyTorch before it is kept.")
    e.add_argument("source", metavar="SPEC_OR_CHECKPOINT")
    e.add_argument("--format", required=True, choices=["onnx", "torchscript", "pt2"])
    e.add_argument("-o", "--output", metavar="FILE", help="output file (default MODEL.onnx etc.)")
    e.add_argument("--train", action="store_true", help="export the train graph (with PGI's aux branch)")
    e.add_argument("--dynamic", action="store_true", help="dynamic batch and image size")
    e.add_argument("--half", action="store_true", help="fp16 weights and input")
    e.add_argument("--imgsz", type=_imgsz, default=(640, 640), metavar="N|HxW", help="example input size")
    e.add_argument("--set", action="append", metavar="NAME=VALUE", help="override a model parameter (specs)")
    e.add_argument("--json", action="store_true", help="machine-readable report")
    e.set_defaults(func=cmd_export)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USER
    from gelanc.diagnostics import GelError, render

    try:
        return args.func(args)
    except UserError as e:
        print(f"gelanc: error: {e}", file=sys.stderr)
        return EXIT_USER
    except GelError as e:
        print(render(e), file=sys.stderr)
        return EXIT_USER
    except Exception as e:  # noqa: BLE001 - user errors of the torch stage, by type
        from gelanc.checkpoint import CheckpointError

        if isinstance(e, CheckpointError):
            print(f"gelanc: error: {e}", file=sys.stderr)
            return EXIT_USER
        raise
    except KeyboardInterrupt:
        print("gelanc: interrupted", file=sys.stderr)
        return EXIT_FAIL
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
