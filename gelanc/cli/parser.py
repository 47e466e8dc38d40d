"""The argument parser: every command, its options and its help, in one place."""

from __future__ import annotations

import argparse

from gelanc.cli.common import imgsz_arg
from gelanc.cli.compiler import cmd_build, cmd_check, cmd_export, cmd_stats
from gelanc.cli.interop import cmd_export_weights, cmd_import_weights, cmd_import_yaml
from gelanc.cli.tools import cmd_bench, cmd_features, cmd_viz
from gelanc.cli.training import cmd_data_synth, cmd_plot, cmd_predict, cmd_train, cmd_val


def _common(p: argparse.ArgumentParser, imgsz: str | None = None, json: bool = True) -> None:
    """The options several commands share: --imgsz, --set, --json."""
    if imgsz:
        p.add_argument("--imgsz", type=imgsz_arg, default=(640, 640), metavar="N|HxW", help=imgsz)
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
