"""The `gelanc` command line: a thin layer over the Python API.

Exit status: 0 ok, 1 runtime failure, 2 user error (bad spec, bad arguments).
Heavy modules are imported inside the commands, so `gelanc --help` starts at once.
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import contextmanager
from pathlib import Path

from gelanc.atomic import write_text
from gelanc.errors import UserError

EXIT_OK, EXIT_FAIL, EXIT_USER = 0, 1, 2
# what `pip install gelanc[torch]` adds to the torch-free compiler (pyproject.toml)
TORCH_EXTRA = {"torch", "torchvision", "onnx", "onnxruntime", "onnxscript", "pycocotools", "tqdm", "matplotlib",
               "PIL"}


@contextmanager
def _refused():
    """A check before the work — a folder that is a file, an input given as the output,
    what is not a regular file — as one user-error line, its reason as it is."""
    try:
        yield
    except OSError as e:
        raise UserError(str(e)) from None


@contextmanager
def _writing(target):
    """A failed write of ``target`` as one user-error line: "cannot write TARGET: why"."""
    try:
        yield
    except OSError as e:
        raise UserError(f"cannot write {target}: {e.strerror or e}") from None


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
    from gelanc.pipeline import compile_file

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
    from gelanc.pipeline import compile_file
    from gelanc.stats import model_stats

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


def _module(source: str, params: dict, train: bool = False):
    """A spec (compiled, freshly initialised) or a checkpoint (loaded): deploy graph unless ``train``."""
    import gelanc
    from gelanc.backend.fx import ir_of

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

    from gelanc.atomic import UnsafeTarget, WriteError, check_folder, check_not_input, check_target, write_all
    from gelanc.backend.checkpoint import save
    from gelanc.ir.graph import to_json
    from gelanc.stats import model_stats

    def check(out: Path, files: list[str]) -> None:  # cheap, so before the build (and again once it is named)
        try:
            check_folder(out)
            for file in files:
                check_target(out / file)
                check_not_input(out / file, [args.spec])
        except OSError as e:
            raise UserError(f"{e} (-o takes a folder)" if "not a folder" in str(e) and args.out else str(e)) from None

    if args.out:
        check(Path(args.out), [])
    m, g = _module(args.spec, _model_params(args.set), train=not args.deploy)
    name = g.graph["model"]
    out = Path(args.out or Path("build") / name)
    check(out, [f"{name}{suffix}" for suffix in (".py", ".ir.json", ".stats.json", ".pt")])
    stats = model_stats(g, args.imgsz)  # a bad --imgsz is a located error before anything is written
    code = (f"# Generated by gelanc from {g.graph.get('file')}: model {name}"
            f"{' (deploy graph)' if args.deploy else ''}\n{m.code.lstrip()}").encode()
    ir = _json.dumps(to_json(g), indent=1).encode()
    stats_json = _json.dumps(stats, indent=2).encode()
    writers = {f"{name}.py": lambda tmp: tmp.write_bytes(code), f"{name}.ir.json": lambda tmp: tmp.write_bytes(ir),
               f"{name}.stats.json": lambda tmp: tmp.write_bytes(stats_json), f"{name}.pt": lambda tmp: save(m, tmp)}
    try:
        written = write_all(out, writers)  # the four files, or (on any failure) none of them
    except OSError as e:
        raise UserError(str(e) if isinstance(e, (WriteError, UnsafeTarget)) else
                        f"cannot write to {out}: {e.strerror or e}") from None
    files = dict(zip(("code", "ir", "stats", "checkpoint"), written.values()))
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
    from gelanc.atomic import check_output
    from gelanc.backend.export import FORMATS, export
    from gelanc.passes.budget import check_input
    from gelanc.passes.shapes import check_size

    def check(path: Path) -> None:
        with _refused():  # before the export's work: a folder that is a file or read-only, an input, …
            check_output(path, [args.source])

    if args.output:  # before the model is even built
        check(Path(args.output))
    m, g = _module(args.source, _model_params(args.set), train=args.train)
    check_size(g, args.imgsz)  # the example input must be a size the network is built for
    check_input(g, args.imgsz)  # and one whose feature maps stay within gelanc's bound
    path = Path(args.output or f"{g.graph['model']}{'-train' if args.train else ''}{FORMATS[args.format]}")
    check(path)
    print(f"exporting {g.graph['model']} ({'train' if args.train else 'deploy'} graph) to {args.format}…",
          file=sys.stderr)
    with _writing(path):
        report = export(m, args.format, path, args.imgsz, dynamic=args.dynamic, half=args.half)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"wrote {report['path']}: {args.format}, input {'×'.join(map(str, report['input']))} "
              f"{report['dtype']}{' (dynamic)' if args.dynamic else ''}, {report['layout']} weights, "
              f"checked against PyTorch: max error {report['max_rel_error']:.1e} of the output's scale")
    return EXIT_OK


def cmd_viz(args) -> int:
    from gelanc.dsl.loader import suggest
    from gelanc.passes.deploy import deploy
    from gelanc.pipeline import compile_file
    from gelanc.tools.viz import INSTALL_HINT, block_scopes, render, to_dot

    g = compile_file(args.spec, **_model_params(args.set))[0]
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

    with _refused():
        check_output(path, [args.spec])  # before the drawing: a folder that is a file, the spec itself
    source = to_dot(g, args.imgsz, args.level, tuple(args.expand or ()))
    with _writing(path):
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
    with _refused():  # before the figure's work: a folder that is a file or read-only, an input, …
        check_output(out, [image, *(s for s in sources if s not in BUILTIN)])
    picture, _ = figure(sources, image, args.depths, args.width, args.imgsz, args.seed, args.init,
                        progress=lambda name: print(f"running {name} to depth {args.depths[-1]}…", file=sys.stderr))
    with _writing(out):
        atomic_write(out, lambda tmp: picture.save(tmp, format="PNG"))
    print(f"wrote {out}")
    return EXIT_OK


def cmd_data_synth(args) -> int:
    from gelanc.atomic import check_parent
    from gelanc.data.synth import write

    if args.images < 1 or args.val < 1 or args.imgsz < 32:
        raise UserError("--images and --val must be at least 1 and --imgsz at least 32")
    out = Path(args.out)
    if out.is_symlink() or (out.exists() and not out.is_dir()):  # the new folder is renamed over it
        raise UserError(f"refusing to write {out}: it is not a folder (-o takes a new or empty folder)")
    with _refused():  # before drawing: the set is built beside the folder, in its parent, and renamed into place
        check_parent(out)

    def progress(done: int, total: int) -> None:
        if done == total or done % 50 == 0:
            print(f"\rdrawing images: {done}/{total}", end="\n" if done == total else "", file=sys.stderr)

    try:
        data = write(args.out, args.images, args.val, args.imgsz, args.seed, progress=progress, hard=args.hard)
    except FileExistsError as e:
        raise UserError(f"{e}; choose an empty or new folder") from None
    except OSError as e:
        raise UserError(f"cannot write {args.out}: {e.strerror or e}") from None
    print(f"wrote {data} ({args.images} train + {args.val} val images, {args.imgsz}×{args.imgsz}"
          f"{', the harder set' if args.hard else ''})")
    return EXIT_OK


def _train_args(args):
    """The run's TrainArgs (and the checkpoint to resume, if any) from the command line."""
    from pydantic import ValidationError

    try:
        return _train_args_unchecked(args)
    except ValidationError as e:
        err = e.errors()[0]
        field, msg = str(err["loc"][0]) if err["loc"] else "", err["msg"].removeprefix("Value error, ")
        if args.resume:  # the settings came from the checkpoint, not from an option
            raise UserError(f"{args.resume if args.resume is not True else 'last.pt'}: its stored run setting "
                            f"'{field}' is refused: {msg}") from None
        raise UserError(f"--{field.replace('_', '-')}: {msg}") from None


def _train_args_unchecked(args):
    from gelanc.train.hyp import load_hyp
    from gelanc.train.loop import TrainArgs, resume_args

    given = {k: getattr(args, k) for k in ("data", "epochs", "imgsz", "batch", "device", "workers", "out", "seed",
                                           "patience")
             if getattr(args, k) is not None}
    flags = {k: True for k in ("deterministic", "sync_bn") if getattr(args, k)}
    if args.no_plots:
        flags["plots"] = False
    if args.amp is not None:
        flags["amp"] = args.amp
    if args.val_graph is not None:
        flags["val"] = args.val_graph
    if args.cache is not None:
        flags["cache"] = args.cache
    if args.resume:
        if args.spec and args.spec.endswith((".pt", ".pth")) and args.resume is True:
            args.resume = args.spec
        path = Path(args.resume if args.resume is not True else Path(args.out or ".") / "last.pt")
        # a resumed run keeps its settings; where it runs, and for how long, may change
        keep = {k: v for k, v in given.items() if k in ("device", "workers", "epochs", "patience")}
        keep.update({k: v for k, v in flags.items() if k in ("plots", "cache")})
        return resume_args(path, **keep, progress=not args.quiet), path
    if not args.spec:
        raise UserError("train needs a SPEC (a .gel file), or --resume LAST.pt")
    if args.spec.endswith((".pt", ".pth")):
        raise UserError(f"{args.spec} is a checkpoint: use --resume {args.spec} to continue its run")
    hyp = load_hyp(args.hyp).model_dump()
    return TrainArgs(spec=args.spec, hyp=hyp, params=_model_params(args.set), progress=not args.quiet,
                     **given, **flags), None


def cmd_train(args) -> int:
    from gelanc.train import ddp
    from gelanc.train.loop import train

    targs, resume = _train_args(args)
    from gelanc.atomic import check_folder

    folder = targs.out or str(Path("runs") / "train")  # the default run folder is made in there
    try:  # cheap, so before the dataset scan and the model build
        check_folder(folder)
    except OSError as e:
        raise UserError(f"{'--out ' if args.out and not resume else 'the run folder '}{folder}: "
                        f"{e.strerror or e}") from None
    try:
        kind, ids = ddp.parse_device(targs.device)
    except ValueError as e:
        raise UserError(str(e)) from None
    if len(ids) > 1 and not ddp.world().distributed:
        import torch

        if torch.cuda.device_count() < len(ids):
            raise UserError(f"--device {targs.device} names {len(ids)} GPUs; torch sees "
                            f"{torch.cuda.device_count()} (on CPUs, run torchrun --nproc_per_node N … --device cpu)")
        return ddp.launch(["train", *args.argv], ids)
    summary = train(targs, resume).summary
    if ddp.world().main:
        if args.json:
            print(json.dumps(summary, indent=2))
        else:
            best = (f"; best epoch {summary['best_epoch']}: mAP50 {summary['best_map50']:.3f}, "
                    f"mAP50-95 {summary['best_map']:.3f}") if "best_epoch" in summary else ""
            n = summary["epochs"]
            early = " (stopped early)" if summary.get("stopped_early") else ""
            print(f"trained {summary['model']} for {n} epoch{'s' * (n != 1)}{early} in {summary['seconds']:.0f} s"
                  f"{best}")
            print(f"  {summary['last']}" + (f"\n  {summary['best']}" if summary.get("best") else ""))
    return EXIT_OK


def _checkpoint_model(path: str, graph: str):
    """A training checkpoint's EMA weights as the deploy graph, or the train graph; and
    the checkpoint's dict (read once)."""
    import gelanc
    from gelanc.backend.checkpoint import build, read

    ckpt = read(path)
    m = build(ckpt, path)
    deployed = m.meta["gelanc"].get("deployed")
    if graph == "train" and deployed:
        raise UserError(f"{path} holds a deploy graph; --graph train needs a train checkpoint")
    if graph == "deploy" and not deployed:
        m = gelanc.deploy(m)
    return m, ckpt


def _check_imgsz(m, imgsz) -> None:
    """A square size the network is built for and gelanc runs it at, or a user error
    (``imgsz`` may be a checkpoint's: see :func:`gelanc.passes.budget.check_run_size`)."""
    from gelanc.backend.fx import ir_of
    from gelanc.diagnostics import GelError
    from gelanc.passes.budget import check_run_size

    try:
        check_run_size(ir_of(m), imgsz)
    except GelError as e:
        raise UserError(e.message) from None


def _names(ckpt: dict, nc: int) -> list[str]:
    names = ckpt.get("names")
    return list(names) if names else [str(i) for i in range(nc)]


def _device(spec: str | None):
    from gelanc.train import ddp

    try:
        return ddp.one_device(spec)
    except ValueError as e:
        raise UserError(str(e)) from None


def cmd_val(args) -> int:
    from torch.utils.data import DataLoader

    from gelanc.backend.checkpoint import run_settings
    from gelanc.backend.fx import heads
    from gelanc.data.dataset import YoloDataset, collate, skipped_note
    from gelanc.train import ddp
    from gelanc.train.loop import default_data, load_data
    from gelanc.train.val import evaluate

    m, ckpt = _checkpoint_model(args.checkpoint, args.graph)
    run = run_settings(ckpt)
    data_path = Path(args.data or run.get("data") or default_data(ddp.World()))
    imgsz = args.imgsz or run.get("imgsz") or 640
    _check_imgsz(m, imgsz)
    data = load_data(data_path, ddp.World())
    nc = heads(m)[0].nc
    if nc != len(data.names):
        raise UserError(f"{args.checkpoint} detects {nc} classes but {data_path} has {len(data.names)}")
    device = _device(args.device)
    loader = DataLoader(YoloDataset(data.val, imgsz), batch_size=args.batch, num_workers=args.workers,
                        collate_fn=collate)
    r = evaluate(m, loader, data.names, device, conf=args.conf, iou=args.iou, progress=not args.json, fast=True,
                 compile=args.compile)
    print(f"inference: {args.graph} graph, {r['how']} on {device.type}", file=sys.stderr)
    if note := skipped_note(r["skipped"]):  # passed the scan, failed to decode: not scored
        print(f"gelanc: warning: {note}", file=sys.stderr)
    r.update(checkpoint=args.checkpoint, graph=args.graph, data=str(data_path), imgsz=imgsz)
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        print(f"{args.checkpoint} ({args.graph} graph) on {data_path}, {imgsz} px: "
              f"mAP50 {r['map50']:.4f}  mAP50-95 {r['map']:.4f}  ({r['images']} images, {r['instances']} objects, "
              f"{r['ms_per_image']:.1f} ms an image)")
        for name, c in r.get("per_class", {}).items():
            print(f"  {name:<16} mAP50 {c['map50']:.4f}  mAP50-95 {c['map']:.4f}")
    return EXIT_OK


def cmd_plot(args) -> int:
    from gelanc.train.plots import PlotError, plot_run

    try:
        written = plot_run(args.run, data=args.data, device=args.device, workers=args.workers,
                           progress=not args.json)
    except PlotError as e:
        raise UserError(str(e)) from None
    if args.json:
        print(json.dumps([str(p) for p in written], indent=2))
    else:
        print(f"wrote {len(written)} plots in {args.run}:")
        for p in written:
            print(f"  {p}")
    return EXIT_OK


def cmd_predict(args) -> int:
    from gelanc.atomic import check_folder
    from gelanc.backend.checkpoint import run_settings
    from gelanc.backend.fx import heads
    from gelanc.inference.fastpath import prepare
    from gelanc.inference.predict import as_json, check_out, draw, find_images, output_names, run, write_image

    paths = find_images(args.sources)
    out = Path(args.out)
    drawn = {} if args.no_save else output_names(paths)
    try:  # before any work, the model's load included: a folder gelanc can write in (or make), never
        check_folder(out)  # into a source folder, over an input, or over what is not a regular file
        check_out(out, args.sources, paths, ["predictions.json", *drawn.values()])
    except OSError as e:
        raise UserError(f"{e} (-o takes a folder)" if "not a folder" in str(e) else str(e)) from None
    m, ckpt = _checkpoint_model(args.checkpoint, "deploy")
    names = _names(ckpt, heads(m)[0].nc)
    imgsz = args.imgsz or run_settings(ckpt).get("imgsz") or 640
    _check_imgsz(m, imgsz)
    device = _device(args.device)
    fast = prepare(m, device, images=len(paths), compile=args.compile)
    print(f"inference: deploy graph, {fast.description} on {device.type}", file=sys.stderr)
    results = []
    for path, image, det in run(fast, paths, imgsz, args.conf, args.iou, args.max_det):
        results.append(as_json(path, image, det, names))
        if not args.no_save:
            with _refused():
                write_image(out / drawn[path], draw(image, det, names))
        if not args.json:
            found = ", ".join(f"{d['name']} {d['score']:.2f}" for d in results[-1]["detections"][:8])
            more = len(results[-1]["detections"]) - 8
            print(f"{path}: {len(det)} detections" + (f": {found}" if found else "")
                  + (f" … (+{more})" if more > 0 else ""))
    with _refused():
        write_text(out / "predictions.json", json.dumps(results, indent=1))
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        n = len(results)
        print(f"wrote {out / 'predictions.json'}" + ("" if args.no_save else f" and {n} drawn image{'s' * (n != 1)}"))
    return EXIT_OK


def cmd_bench(args) -> int:
    from gelanc.tools.bench import CPU_MODES, CUDA_MODES, report, run

    device = _device(args.device)
    allowed = CUDA_MODES if device.type == "cuda" else CPU_MODES
    bad = [m for m in args.modes or [] if m not in allowed]
    if bad:
        raise UserError(f"--modes {' '.join(bad)}: on {device.type} the modes are {', '.join(allowed)}")
    models = [_zoo_spec(m) for m in args.models]
    if args.imgsz % 32 or args.imgsz < 32:
        raise UserError(f"--imgsz {args.imgsz} is not a multiple of 32, the zoo's largest stride")
    if args.output:  # refused before the measurements, which take minutes
        from gelanc.atomic import check_output

        with _refused():
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


def _zoo_spec(name: str) -> Path:
    """A zoo model by name (gelan-c) or a spec file."""
    from gelanc.dsl.loader import library_root

    p = Path(name)
    if p.is_file():
        return p
    zoo = library_root() / "specs" / f"{name}.gel"
    if not zoo.is_file():
        raise UserError(f"'{name}' is neither a spec file nor a zoo model (gelan-t … yolov9-e)")
    return zoo


def cmd_import_weights(args) -> int:
    import gelanc
    from gelanc.atomic import check_not_input, check_output
    from gelanc.interop import refckpt
    from gelanc.interop.refweights import load_reference, reference_state

    out = Path(args.output or Path(args.checkpoint).with_suffix("").name + ".gelanc.pt")
    with _refused():  # before reading the checkpoint and building the model
        check_output(out, [args.checkpoint, args.spec])
    ckpt = refckpt.read(args.checkpoint)
    state, info = reference_state(ckpt)
    params = _model_params(args.set)
    if "nc" in info and "nc" not in params:
        params["nc"] = info["nc"]
    m = gelanc.compile(args.spec, **params)
    load_reference(m, state, source=args.checkpoint)
    imported = m.meta["gelanc"]["imported"]
    extra = {"names": info["names"]} if "names" in info else {}
    with _writing(out):
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

    with _refused():  # before loading the checkpoint
        check_output(args.output, [args.checkpoint])
    m = gelanc.load(args.checkpoint)
    if m.meta["gelanc"].get("deployed"):
        raise UserError(f"{args.checkpoint} holds a deploy graph (BatchNorm folded); the reference's layout "
                        f"needs the train graph's checkpoint")
    state = export_reference(m)
    with _writing(args.output):
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
        with _refused():  # before the conversion
            check_output(out, [args.yaml])
    c = convert_file(args.yaml, scale=args.scale, dialect=args.dialect, model_name=args.name)
    if out != "-":
        with _writing(out):
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


# ---- wiring -----------------------------------------------------------------------


def _common(p: argparse.ArgumentParser, imgsz: str | None = None, json: bool = True) -> None:
    """The options several commands share: --imgsz, --set, --json."""
    if imgsz:
        p.add_argument("--imgsz", type=_imgsz, default=(640, 640), metavar="N|HxW", help=imgsz)
    p.add_argument("--set", action="append", metavar="NAME=VALUE", help="override a model parameter, e.g. nc=20")
    if json:
        p.add_argument("--json", action="store_true", help="machine-readable output")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gelanc", description="A compiler and model zoo for GELAN networks (YOLOv9).")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    c = sub.add_parser("check", help="parse, lower and validate specs; print diagnostics only",
                       description="Check .gel specs (the whole zoo when no FILE is given).")
    c.add_argument("files", nargs="*", metavar="FILE")
    _common(c)
    c.set_defaults(func=cmd_check)

    s = sub.add_parser("stats", help="parameters and GFLOPs of the train and deploy graphs beside the paper's",
                       description="Count parameters and FLOPs (thop convention, as the YOLOv9 paper) of "
                                   "each model's train graph and deploy graph (aux branch removed, BN and "
                                   "RepConvN fused), beside the paper's figures. The whole zoo when no FILE "
                                   "is given.")
    s.add_argument("files", nargs="*", metavar="FILE")
    s.add_argument("--per-block", action="store_true", help="break the counts down by top-level block")
    _common(s, imgsz="input size, square N or height×width (default 640)")
    s.set_defaults(func=cmd_stats)

    b = sub.add_parser("build", help="compile a spec to a torch.fx module; write its code, IR, stats, checkpoint",
                       description="Compile SPEC to a torch.fx GraphModule (weights initialised as the "
                                   "reference does) and write DIR/MODEL.py (the generated forward), "
                                   "MODEL.ir.json, MODEL.stats.json and MODEL.pt (a checkpoint).")
    b.add_argument("spec", metavar="SPEC")
    b.add_argument("-o", "--out", metavar="DIR", help="output folder (default build/MODEL)")
    b.add_argument("--deploy", action="store_true", help="build the deploy graph (aux removed, BN/RepConvN fused)")
    _common(b, imgsz="size for the stats")
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
    _common(e, imgsz="example input size")
    e.set_defaults(func=cmd_export)

    v = sub.add_parser("viz", help="draw the network with graphviz (SVG, PNG, PDF or DOT)",
                       description="Draw SPEC's topology: boxes for blocks (or ops), clusters for block "
                                   "scopes, tensor shapes on the edges, parameters and FLOPs in the boxes; "
                                   "PGI's aux branch dashed and orange, CBLinear routes purple.")
    v.add_argument("spec", metavar="SPEC")
    v.add_argument("-o", "--output", metavar="FILE", help="FILE.svg|.png|.pdf|.dot (default MODEL.svg)")
    v.add_argument("--level", choices=["block", "op"], default="block", help="one box per block, or per op")
    v.add_argument("--expand", nargs="+", metavar="NAME", help="block scopes to open up, e.g. elan3 elan3.cv2.0")
    v.add_argument("--deploy", action="store_true", help="draw the deploy graph")
    _common(v, imgsz="size for the edge shapes", json=False)
    v.set_defaults(func=cmd_viz)

    f = sub.add_parser("features", help="the paper's Figures 2 and 6: feature maps of random deep stacks",
                       description="Run randomly initialised deep stacks (PlainNet, ResNet, CSPNet, GELAN, "
                                   "or .gel specs whose model takes depth, taps and width) on one image "
                                   "and lay out their feature maps at several depths as one grid.")
    f.add_argument("sources", nargs="*", metavar="SPEC_OR_BUILTIN",
                   help="plainnet, resnet, cspnet, gelan, or a spec (default: the four)")
    f.add_argument("--image", metavar="IMG", help="input image (default: the bird gelanc ships)")
    f.add_argument("-o", "--output", default="features.png", metavar="FILE.png", help="the grid (default features.png)")
    f.add_argument("--depths", type=int, nargs="+", default=[50, 100, 150, 200], metavar="N")
    f.add_argument("--width", type=int, default=32, help="channels of every stack (default 32)")
    f.add_argument("--imgsz", type=int, default=128, help="image size (default 128)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--init", choices=["auto", "default", "he"], default="auto",
                   help="the convolutions' initialisation: auto (each built-in stack as its architecture's "
                        "reference code: He fan-out for PlainNet and ResNet, PyTorch's default for CSPNet and "
                        "GELAN), or one for all")
    f.set_defaults(func=cmd_features)

    d = sub.add_parser("data", help="datasets: the built-in synthetic set", description="Dataset tools.")
    dsub = d.add_subparsers(dest="data_command", metavar="COMMAND", required=True)
    ds = dsub.add_parser("synth", help="write the synthetic shapes dataset in YOLO format",
                         description="Draw a seeded dataset of coloured shapes (circle, square, triangle, "
                                     "diamond) on textured backgrounds, with exact labels, in YOLO format "
                                     "with its data.yaml.")
    ds.add_argument("-o", "--out", required=True, metavar="DIR", help="a new or empty folder")
    ds.add_argument("--images", type=int, default=512, metavar="N", help="training images (default 512)")
    ds.add_argument("--val", type=int, default=64, metavar="N", help="validation images (default 64)")
    ds.add_argument("--imgsz", type=int, default=320, metavar="N", help="image size (default 320)")
    ds.add_argument("--seed", type=int, default=0, metavar="S")
    ds.add_argument("--hard", action="store_true",
                    help="the harder set: 5 classes, up to 12 objects that overlap and hide each other, small "
                         "objects, clutter of no class, shading and noise")
    ds.set_defaults(func=cmd_data_synth)

    t = sub.add_parser("train", help="train a model on a YOLO dataset (default: the built-in synthetic set)",
                       description="Train SPEC (warmup, EMA, mosaic/affine/HSV/flip, TAL loss with PGI's aux head; the "
                                   "optimizer and augmentation strength fitted to the run's length, or the "
                                   "reference's hyp.scratch-high with --hyp scratch-high) and write "
                                   "DIR/last.pt, best.pt, results.csv and results.png. Several GPUs: "
                                   "--device 0,1,… or torchrun --nproc_per_node N -m gelanc train ….")
    t.add_argument("spec", nargs="?", metavar="SPEC", help="the .gel model to train")
    t.add_argument("--data", metavar="DATA.yaml", help="dataset (default: the built-in synthetic shapes)")
    t.add_argument("--epochs", type=int, metavar="N", help="epochs (default 100)")
    t.add_argument("--imgsz", type=int, metavar="N", help="training and validation size (default 640)")
    t.add_argument("--batch", type=int, metavar="N", help="global batch size, over all processes (default 16)")
    t.add_argument("--device", metavar="cpu|cuda|0,1,…", help="default: cuda if available, else cpu")
    t.add_argument("--workers", type=int, metavar="N",
                   help="data-loading processes per rank (default min(8, usable CPUs per rank, batch per rank))")
    t.add_argument("--patience", type=int, metavar="N",
                   help="stop after N epochs without a better fitness (0.1·mAP50 + 0.9·mAP50-95; default 100)")
    t.add_argument("--out", metavar="DIR", help="run folder (default runs/train/MODEL, MODEL2, …)")
    t.add_argument("--resume", nargs="?", const=True, metavar="LAST.pt",
                   help="continue a run from its last.pt (default DIR/last.pt of --out)")
    t.add_argument("--seed", type=int, metavar="N", help="seed of weights, order and augmentation (default 0)")
    t.add_argument("--hyp", metavar="FILE.yaml|RECIPE",
                   help="a recipe (scratch-high: the reference's) or a YAML file of hyper-parameters changing "
                        "the default's (a file of the reference's starts from scratch-high)")
    t.add_argument("--cache", choices=["auto", "ram", "off"],
                   help="decode the training images once and keep them in memory at the training size (auto, the "
                        "default: when they take under a quarter of the memory available; ram: under a half)")
    t.add_argument("--deterministic", action="store_true", help="deterministic algorithms (exact resume)")
    t.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm across GPUs")
    t.add_argument("--amp", choices=["auto", "bf16", "fp16", "off"], help="mixed precision on CUDA (default auto)")
    t.add_argument("--no-plots", action="store_true",
                   help="no plots at the end of the run (gelanc plot RUN makes them later)")
    t.add_argument("--val-graph", choices=["deploy", "train"],
                   help="validate the EMA's deploy graph (default) or the train graph's main head")
    t.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    _common(t)
    t.set_defaults(func=cmd_train)

    va = sub.add_parser("val", help="mAP of a checkpoint on a dataset's val split (pycocotools)",
                        description="Validate CKPT's EMA weights — its deploy graph, or with --graph train "
                                    "the train graph's main head — on the val split: mAP@0.5 and "
                                    "mAP@0.5:0.95 by pycocotools after torchvision's batched NMS.")
    va.add_argument("checkpoint", metavar="CKPT")
    va.add_argument("--data", metavar="DATA.yaml", help="default: the data the checkpoint was trained on")
    va.add_argument("--imgsz", type=int, metavar="N", help="default: the training size")
    va.add_argument("--batch", type=int, default=16, metavar="N")
    va.add_argument("--device", metavar="cpu|cuda|0")
    va.add_argument("--workers", type=int, default=2, metavar="N")
    va.add_argument("--conf", type=float, default=0.001, help="score threshold (default 0.001)")
    va.add_argument("--iou", type=float, default=0.7, help="NMS IoU threshold (default 0.7)")
    va.add_argument("--graph", choices=["deploy", "train"], default="deploy")
    va.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                    help="torch.compile the model (default: on CPU from 256 images, where it pays off)")
    _common(va)
    va.set_defaults(func=cmd_val)

    pl = sub.add_parser("plot", help="a run's plots: results, PR/P/R/F1 curves, confusion matrix, labels, val images",
                        description="Write a training run's plots into its folder: results.png, PR_curve.png, "
                                    "P/R/F1_curve.png, confusion_matrix(_normalized).png, labels.png and "
                                    "val_batchN_labels/pred.png — validating its best.pt (else last.pt) once on "
                                    "the data it was trained on (or --data).")
    pl.add_argument("run", metavar="RUN", help="the run folder (holding best.pt or last.pt)")
    pl.add_argument("--data", metavar="DATA.yaml", help="default: the data the run was trained on")
    pl.add_argument("--device", metavar="cpu|cuda|0")
    pl.add_argument("--workers", type=int, default=0, metavar="N", help="data-loading processes (default 0)")
    pl.add_argument("--json", action="store_true", help="print the files written as a JSON list")
    pl.set_defaults(func=cmd_plot)

    pr = sub.add_parser("predict", help="detect objects in images; draw the boxes and write them as JSON",
                        description="Run CKPT's deploy graph on images (files, folders, glob patterns), "
                                    "write each with its boxes drawn and all detections to predictions.json.")
    pr.add_argument("checkpoint", metavar="CKPT")
    pr.add_argument("sources", nargs="+", metavar="SOURCE")
    pr.add_argument("--conf", type=float, default=0.25, help="score threshold (default 0.25)")
    pr.add_argument("--iou", type=float, default=0.45, help="NMS IoU threshold (default 0.45)")
    pr.add_argument("--max-det", type=int, default=300, metavar="N")
    pr.add_argument("--imgsz", type=int, metavar="N", help="default: the training size")
    pr.add_argument("-o", "--out", default="runs/predict", metavar="DIR", help="default runs/predict")
    pr.add_argument("--no-save", action="store_true", help="write predictions.json only, no drawn images")
    pr.add_argument("--device", metavar="cpu|cuda|0")
    pr.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                    help="torch.compile the model (default: on CPU from 256 images, where it pays off)")
    _common(pr)
    pr.set_defaults(func=cmd_predict)

    bn = sub.add_parser("bench", help="speed of the compiler and the models on this machine, against its matmul rate",
                        description="Measure compile and stats time over the zoo, inference latency and throughput "
                                    "of the train and deploy modules (eager, channels-last, torch.compile; on CUDA "
                                    "also fp16/bf16 and CUDA graphs), a training step and peak memory — each "
                                    "inference figure also as a fraction of this machine's measured matmul "
                                    "FLOP/s.")
    bn.add_argument("--device", metavar="cpu|cuda|0", help="default: cuda if available, else cpu")
    bn.add_argument("--models", nargs="+", default=["gelan-c"], metavar="MODEL",
                    help="zoo models or spec files (default gelan-c); the last one also trains a step")
    bn.add_argument("--imgsz", type=int, default=640, metavar="N")
    bn.add_argument("--batch", type=int, nargs=2, metavar=("SMALL", "LARGE"),
                    help="the two inference batch sizes (default 1 8 on CPU, 1 32 on CUDA)")
    bn.add_argument("--modes", nargs="+", metavar="MODE",
                    help="eager channels_last compile (and on CUDA fp16 bf16 cuda_graphs); default all")
    bn.add_argument("--train-batch", type=int, metavar="N", help="training-step batch (default 2 on CPU, 16 on CUDA)")
    bn.add_argument("--quick", action="store_true", help="fewer runs and a smaller roofline; the given models only")
    bn.add_argument("-o", "--output", metavar="FILE.json", help="also write the results as JSON")
    _common(bn)
    bn.set_defaults(func=cmd_bench)
    _add_weight_commands(sub)
    return p


def _add_weight_commands(sub) -> None:
    iw = sub.add_parser("import-weights", help="read a reference YOLOv9 checkpoint into a gelanc checkpoint",
                        description="Read a checkpoint of the reference code (WongKinYiu/yolov9: yolov9-*.pt, "
                                    "gelan-*.pt, *-converted.pt, or a state_dict from export-weights) without "
                                    "its code and without running anything from the file, map its layers onto "
                                    "SPEC by structure, and write a gelanc checkpoint embedding the spec.")
    iw.add_argument("checkpoint", metavar="CKPT")
    iw.add_argument("--spec", required=True, metavar="SPEC")
    iw.add_argument("-o", "--output", metavar="OUT.pt", help="default CKPT.gelanc.pt in this folder")
    _common(iw)
    iw.set_defaults(func=cmd_import_weights)

    ew = sub.add_parser("export-weights", help="a gelanc checkpoint's weights in the reference's layout",
                        description="Write CKPT's train-graph weights as a state_dict in the reference's "
                                    "layout (model.N.<submodule>), for the reference's tools.")
    ew.add_argument("checkpoint", metavar="CKPT")
    ew.add_argument("-o", "--output", required=True, metavar="OUT.pt")
    _common(ew)
    ew.set_defaults(func=cmd_export_weights)

    iy = sub.add_parser("import-yaml", help="convert a reference or ultralytics model YAML into a .gel spec",
                        description="Convert a model YAML of the reference code (WongKinYiu/yolov9) or of "
                                    "ultralytics — backbone/head lists of [from, repeats, module, args] — into a "
                                    ".gel spec that uses the zoo's blocks and names instead of indices, checked "
                                    "by compiling it.")
    iy.add_argument("yaml", metavar="MODEL.yaml")
    iy.add_argument("-o", "--output", metavar="SPEC.gel", help="default MODEL.gel in this folder; - for stdout")
    iy.add_argument("--scale", metavar="S", help="which of the YAML's `scales` (ultralytics), e.g. n or s")
    iy.add_argument("--dialect", choices=["auto", "reference", "ultralytics"], default="auto",
                    help="whose module semantics (Detect differs); auto: reference if the YAML has `anchors`")
    iy.add_argument("--name", metavar="NAME", help="the model's name in the spec (default from the file name)")
    iy.add_argument("--json", action="store_true", help="machine-readable summary")
    iy.set_defaults(func=cmd_import_yaml)


def main(argv: list[str] | None = None) -> int:
    """Run one command; its failures become one line on stderr and an exit status."""
    from gelanc.interrupts import held_during_imports
    from gelanc.terminal import clean_output

    try:
        with held_during_imports(), clean_output():
            return _run(argv)
    except KeyboardInterrupt:  # wherever it lands: in a command, in an import, in an error handler
        print("gelanc: interrupted", file=sys.stderr)
        return EXIT_FAIL
    except BrokenPipeError:  # `gelanc … | head`: the reader has all it wanted
        _quiet_stdout()
        return EXIT_OK


def _run(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[2:] if argv is None else argv[1:])  # after the command's name
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USER
    from gelanc.diagnostics import GelError, render

    try:
        return args.func(args)
    except GelError as e:  # a UserError with a span: the located diagnostic
        print(render(e), file=sys.stderr)
        return EXIT_USER
    except UserError as e:  # every other error the input caused (gelanc/errors.py)
        print(f"gelanc: error: {e}", file=sys.stderr)
        return EXIT_USER
    except (KeyboardInterrupt, BrokenPipeError):
        raise
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] not in TORCH_EXTRA:
            return _runtime_failure(e)
        print(f"gelanc: error: '{args.command}' needs {e.name}, which the torch extra installs: "
              f"pip install 'gelanc[torch]'", file=sys.stderr)
        return EXIT_FAIL
    except Exception as e:  # noqa: BLE001 - what is left is gelanc's own failure
        return _runtime_failure(e)


def _runtime_failure(e: Exception) -> int:
    """Exit 1 with one line — the error's type and first line — unless GELANC_TRACEBACK is set.

    Libraries' messages can run to pages of C++ frames and may quote a file's content:
    the first line, made printable, is what the user can act on."""
    import os

    from gelanc.safeload import printable

    if os.environ.get("GELANC_TRACEBACK"):
        raise e
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    if isinstance(e, OSError) and e.strerror:
        first = f"{e.strerror}{f': {e.filename}' if e.filename else ''}"
    print(f"gelanc: error: {type(e).__name__}{': ' if first else ''}{printable(first, 300)} "
          f"(GELANC_TRACEBACK=1 shows where)", file=sys.stderr)
    return EXIT_FAIL


def _quiet_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so Python's exit flush stays silent."""
    import os

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
