"""Pictures and measurements: viz, features, bench."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from gelanc.atomic import write_text
from gelanc.cli.common import EXIT_OK, device_of, model_params, refused, writing, zoo_spec
from gelanc.errors import UserError


def cmd_viz(args) -> int:
    from gelanc.dsl.loader import suggest
    from gelanc.passes.deploy import deploy
    from gelanc.pipeline import compile_file
    from gelanc.tools.viz import INSTALL_HINT, block_scopes, render, to_dot

    g = compile_file(args.spec, **model_params(args.set))[0]
    if args.deploy:
        g = deploy(g)
    scopes = block_scopes(g)
    for name in args.expand or []:
        if name not in scopes:
            raise UserError(f"--expand {name}: no block instance has that scope{suggest(name, scopes)}")
    path = Path(args.output or f"{g.graph['model']}{'-deploy' if args.deploy else ''}.svg")
    if path.suffix.lower() not in (".svg", ".png", ".pdf", ".dot"):
        raise UserError(f"{path}: the picture must be .svg, .png, .pdf or .dot")
    from gelanc.atomic import check_output

    with refused():
        check_output(path, [args.spec])  # before the drawing: a folder that is a file, the spec itself
    source = to_dot(g, args.imgsz, args.level, tuple(args.expand or ()))
    with writing(path):
        written, rendered = render(source, path)
    if written != path:
        print(f"gelanc: warning: {INSTALL_HINT.replace('FILE', str(written.with_suffix('')))}", file=sys.stderr)
    print(f"wrote {written}")
    return EXIT_OK


def cmd_features(args) -> int:
    from gelanc.atomic import atomic_write, check_output
    from gelanc.tools.features import BUILTIN, DEFAULT_IMAGE, figure

    sources = args.sources or list(BUILTIN)
    for src in sources:
        if src not in BUILTIN and not Path(src).is_file():
            raise UserError(f"'{src}' is neither a built-in stack ({', '.join(BUILTIN)}) nor a spec file")
    image = Path(args.image or DEFAULT_IMAGE)
    if not image.is_file():
        raise UserError(f"no such image: {image}")
    if sorted(set(args.depths)) != args.depths or args.depths[0] < 1:
        raise UserError("--depths must be increasing positive integers")
    if args.imgsz < 16 or args.width < 1:
        raise UserError("--imgsz must be at least 16 and --width at least 1")
    from gelanc.data.image import ImageError
    from gelanc.tools.features import load_image

    try:
        load_image(image, args.imgsz)
    except ImageError as e:
        raise UserError(f"cannot read {image}: {e}") from None
    out = Path(args.output)
    with refused():  # before the figure's work: a folder that is a file or read-only, an input, …
        check_output(out, [image, *(s for s in sources if s not in BUILTIN)])
    picture, _ = figure(sources, image, args.depths, args.width, args.imgsz, args.seed, args.init,
                        progress=lambda name: print(f"running {name} to depth {args.depths[-1]}…", file=sys.stderr))
    with writing(out):
        atomic_write(out, lambda tmp: picture.save(tmp, format="PNG"))
    print(f"wrote {out}")
    return EXIT_OK


def cmd_bench(args) -> int:
    from gelanc.tools.bench import CPU_MODES, CUDA_MODES, report, run

    device = device_of(args.device)
    allowed = CUDA_MODES if device.type == "cuda" else CPU_MODES
    bad = [m for m in args.modes or [] if m not in allowed]
    if bad:
        raise UserError(f"--modes {' '.join(bad)}: on {device.type} the modes are {', '.join(allowed)}")
    models = [zoo_spec(m) for m in args.models]
    if args.imgsz % 32 or args.imgsz < 32:
        raise UserError(f"--imgsz {args.imgsz} is not a multiple of 32, the zoo's largest stride")
    if args.output:  # refused before the measurements, which take minutes
        from gelanc.atomic import check_output

        with refused():
            check_output(args.output)
    progress = None if args.json else (lambda what: print(f"measuring {what}…", file=sys.stderr, flush=True))
    r = run(device, models, args.imgsz, tuple(args.batch) if args.batch else None,
            tuple(args.modes) if args.modes else None, args.train_batch, args.quick, progress)
    print(json.dumps(r, indent=1) if args.json else report(r))  # first: a failed write loses no measurement
    if args.output:
        try:
            write_text(args.output, json.dumps(r, indent=1))
        except OSError as e:
            raise UserError(f"{e} (the results are printed above)") from None
    return EXIT_OK
