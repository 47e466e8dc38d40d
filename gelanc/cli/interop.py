"""Coming from the reference and ultralytics: import-weights, export-weights, import-yaml."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from gelanc.atomic import write_text
from gelanc.cli.common import EXIT_OK, model_params, refused, writing
from gelanc.errors import UserError


def cmd_import_weights(args) -> int:
    import gelanc
    from gelanc.atomic import check_not_input, check_output
    from gelanc.interop import refckpt
    from gelanc.interop.refweights import load_reference, reference_state

    out = Path(args.output or Path(args.checkpoint).with_suffix("").name + ".gelanc.pt")
    with refused():  # before reading the checkpoint and building the model
        check_output(out, [args.checkpoint, args.spec])
    ckpt = refckpt.read(args.checkpoint)
    state, info = reference_state(ckpt)
    params = model_params(args.set)
    if "nc" in info and "nc" not in params:
        params["nc"] = info["nc"]
    m = gelanc.compile(args.spec, **params)
    load_reference(m, state, source=args.checkpoint)
    imported = m.meta["gelanc"]["imported"]
    extra = {"names": info["names"]} if "names" in info else {}
    with writing(out):
        check_not_input(out, [args.checkpoint, args.spec])
        gelanc.save(m, out, **extra)
    summary = {"checkpoint": args.checkpoint, "spec": args.spec, "output": str(out),
               "layers": len(imported["layers"]), "dropped_layers": imported["dropped"],
               "tensors": len(m.state_dict())}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        dropped = f"; left out the checkpoint's layers {', '.join(imported['dropped'])}" if imported["dropped"] else ""
        print(f"wrote {out}: {summary['tensors']} tensors of {len(imported['layers'])} layers{dropped}")
    return EXIT_OK


def cmd_export_weights(args) -> int:
    import gelanc
    from gelanc.atomic import atomic_save, check_not_input, check_output
    from gelanc.interop.refweights import export_reference

    with refused():  # before loading the checkpoint
        check_output(args.output, [args.checkpoint])
    m = gelanc.load(args.checkpoint)
    if m.meta["gelanc"].get("deployed"):
        raise UserError(f"{args.checkpoint} holds a deploy graph (BatchNorm folded); the reference's layout "
                        f"needs the train graph's checkpoint")
    state = export_reference(m)
    with writing(args.output):
        check_not_input(args.output, [args.checkpoint])
        atomic_save(state, args.output)
    layers = sorted({int(k.split(".")[1]) for k in state})
    if args.json:
        print(json.dumps({"output": args.output, "tensors": len(state), "layers": layers}, indent=2))
    else:
        print(f"wrote {args.output}: {len(state)} tensors as model.{layers[0]} … model.{layers[-1]}")
    return EXIT_OK


def cmd_import_yaml(args) -> int:
    from gelanc.atomic import check_not_input, check_output
    from gelanc.interop.refyaml import convert_file
    from gelanc.stats import model_stats

    out = args.output or Path(args.yaml).with_suffix(".gel").name
    if out != "-":
        with refused():  # before the conversion
            check_output(out, [args.yaml])
    c = convert_file(args.yaml, scale=args.scale, dialect=args.dialect, model_name=args.name)
    if out != "-":
        with writing(out):
            check_not_input(out, [args.yaml])
            write_text(out, c.text)
    stats = model_stats(c.graph)
    summary = {"yaml": args.yaml, "output": out, "model": c.model, "dialect": c.dialect, "layers": c.layers,
               "statements": c.statements, "aux_layers": c.aux_layers,
               "scaling": {"depth": c.scaling.depth, "width": c.scaling.width,
                           "max_channels": None if c.scaling.max_channels == float("inf") else c.scaling.max_channels},
               "train": stats["train"], "deploy": stats["deploy"]}
    if out == "-":  # the spec goes to stdout: with --json, inside the summary
        summary["text"] = c.text
    if args.json:
        print(json.dumps(summary, indent=2))
    elif out == "-":
        sys.stdout.write(c.text)
    else:
        aux = f", {len(c.aux_layers)} of them on PGI's auxiliary branch" if c.aux_layers else ""
        t, d = stats["train"], stats["deploy"]
        print(f"wrote {out}: model {c.model} from {c.layers} {c.dialect} layers{aux}, as {c.statements} statements; "
              f"train {t['params'] / 1e6:.2f}M params {t['gflops']:.1f} GFLOPs, "
              f"deploy {d['params'] / 1e6:.2f}M {d['gflops']:.1f} GFLOPs")
    return EXIT_OK
