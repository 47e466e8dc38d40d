"""Data, training and its results: data synth, train, val, plot, predict."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from gelanc.atomic import write_text
from gelanc.cli.common import EXIT_OK, check_imgsz, checkpoint_model, class_names, device_of, model_params, refused
from gelanc.errors import UserError


def cmd_data_synth(args) -> int:
    from gelanc.atomic import check_parent
    from gelanc.data.synth import write

    if args.images < 1 or args.val < 1 or args.imgsz < 32:
        raise UserError("--images and --val must be at least 1 and --imgsz at least 32")
    out = Path(args.out)
    if out.is_symlink() or (out.exists() and not out.is_dir()):  # the new folder is renamed over it
        raise UserError(f"refusing to write {out}: it is not a folder (-o takes a new or empty folder)")
    with refused():  # before drawing: the set is built beside the folder, in its parent, and renamed into place
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
    from gelanc.train.args import TrainArgs
    from gelanc.train.hyp import load_hyp
    from gelanc.train.resume import resume_args

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
    return TrainArgs(spec=args.spec, hyp=hyp, params=model_params(args.set), progress=not args.quiet,
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


def cmd_val(args) -> int:
    from torch.utils.data import DataLoader

    from gelanc.backend.checkpoint import run_settings
    from gelanc.backend.fx import heads
    from gelanc.data.dataset import YoloDataset, collate, skipped_note
    from gelanc.train import ddp
    from gelanc.train.setup import default_data, load_data
    from gelanc.train.val import evaluate

    m, ckpt = checkpoint_model(args.checkpoint, args.graph)
    run = run_settings(ckpt)
    data_path = Path(args.data or run.get("data") or default_data(ddp.World()))
    imgsz = args.imgsz or run.get("imgsz") or 640
    check_imgsz(m, imgsz)
    data = load_data(data_path, ddp.World())
    nc = heads(m)[0].nc
    if nc != len(data.names):
        raise UserError(f"{args.checkpoint} detects {nc} classes but {data_path} has {len(data.names)}")
    device = device_of(args.device)
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
    m, ckpt = checkpoint_model(args.checkpoint, "deploy")
    names = class_names(ckpt, heads(m)[0].nc)
    imgsz = args.imgsz or run_settings(ckpt).get("imgsz") or 640
    check_imgsz(m, imgsz)
    device = device_of(args.device)
    fast = prepare(m, device, images=len(paths), compile=args.compile)
    print(f"inference: deploy graph, {fast.description} on {device.type}", file=sys.stderr)
    results = []
    for path, image, det in run(fast, paths, imgsz, args.conf, args.iou, args.max_det):
        results.append(as_json(path, image, det, names))
        if not args.no_save:
            with refused():
                write_image(out / drawn[path], draw(image, det, names))
        if not args.json:
            found = ", ".join(f"{d['name']} {d['score']:.2f}" for d in results[-1]["detections"][:8])
            more = len(results[-1]["detections"]) - 8
            print(f"{path}: {len(det)} detections" + (f": {found}" if found else "")
                  + (f" … (+{more})" if more > 0 else ""))
    with refused():
        write_text(out / "predictions.json", json.dumps(results, indent=1))
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        n = len(results)
        print(f"wrote {out / 'predictions.json'}" + ("" if args.no_save else f" and {n} drawn image{'s' * (n != 1)}"))
    return EXIT_OK
