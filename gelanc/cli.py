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
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USER
    try:
        return args.func(args)
    except UserError as e:
        print(f"gelanc: error: {e}", file=sys.stderr)
        return EXIT_USER
    except KeyboardInterrupt:
        print("gelanc: interrupted", file=sys.stderr)
        return EXIT_FAIL
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
