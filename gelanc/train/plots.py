"""The plots a training run leaves in its folder, and ``gelanc plot RUN``.

Named as ultralytics and the reference YOLOv9 code name theirs, so the two can be laid
side by side (all PNG here):

    results.png                     the curves of results.csv (:func:`gelanc.train.results.plot`)
    PR_curve.png                    COCO's precision-recall curve at IoU 0.5, per class, AP50 in the legend
    P_curve.png, R_curve.png,       precision, recall and F1 against the confidence threshold, IoU 0.5
    F1_curve.png
    confusion_matrix.png            detections over 0.25 matched to objects at IoU 0.45, with a background
    confusion_matrix_normalized.png   row and column; the second with each true class's column summing to 1
    labels.png                      the train split's labels: instances per class, box shapes, centres, sizes
    val_batchN_labels.png           validation images with their objects, 16 a grid, N = 0, 1, 2
    val_batchN_pred.png             the same images with the detections over 0.25

The curves come from the COCOeval that scores the validation (:mod:`gelanc.train.metrics`):
its matches and its precision table, so they agree with the reported mAP by
construction. Every file is written whole or not at all (:mod:`gelanc.atomic`), and
every figure is closed, also when a write fails.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import numpy as np
import torch

from gelanc.atomic import atomic_write
from gelanc.errors import UserError

DPI = 100
CURVE_INCHES = (9, 6)  # the P/R/F1 and PR curves: 900 × 600 pixels
CONFUSION_INCHES = (12, 9)  # 1200 × 900
LABELS_INCHES = (8, 8)  # 800 × 800
GRID_IMAGES, GRIDS = 16, 3  # validation images a grid, grids written
GRID_MAX, TILE_MIN, GRID_PAD = 1920, 320, 2  # grid width at most; a tile at least (small images enlarged); gaps
CONF, IOU = 0.25, 0.45  # the confusion matrix's and the drawn predictions' (ultralytics')
MANY = 20  # more classes than this: per-class curves drawn thin and grey, without a legend entry

CURVE_FILES = {"precision": "P_curve.png", "recall": "R_curve.png", "f1": "F1_curve.png"}
# the files :func:`plot_run` writes (besides the numbered val_batchN_labels/pred.png)
PLOT_FILES = ("results.png", "PR_curve.png", *CURVE_FILES.values(), "confusion_matrix.png",
              "confusion_matrix_normalized.png", "labels.png")


class PlotError(UserError):
    """A run folder that cannot be plotted as asked (a user error: exit 2)."""


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@contextlib.contextmanager
def _figure(inches: tuple[float, float], rows: int = 1, cols: int = 1):
    """(figure, axes) of a fixed size, closed whatever happens (a long run must not gather figures)."""
    plt = _pyplot()
    fig, axes = plt.subplots(rows, cols, figsize=inches, dpi=DPI, squeeze=False)
    try:
        yield fig, axes
    finally:
        plt.close(fig)


def _write(fig, path: Path) -> Path:
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))
    return path


def _text(name) -> str:
    """A class name as matplotlib should show it: literally (``$`` would start mathtext), and short."""
    s = str(name)
    s = s if len(s) <= 40 else s[:39] + "…"
    return s.replace("$", r"\$")


def _per_class(ax, x: np.ndarray, y: np.ndarray, names: list[str], classes, label) -> None:
    """One line per class; grey and unlabelled when there are many."""
    classes = list(classes)
    many = len(classes) > MANY
    for k in classes:
        if many:
            ax.plot(x, y[k], linewidth=0.5, color="grey", alpha=0.6)
        else:
            ax.plot(x, y[k], linewidth=1, label=label(k))


def _finish_curve(fig, ax, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(bbox_to_anchor=(1.02, 1), loc="upper left", fontsize=8, frameon=False)
    fig.tight_layout()


# ---- the plots, each from data ------------------------------------------------------------


# The panels of results.png (:func:`gelanc.train.results.plot`), in order: a title and the
# columns drawn in it. Train and validation losses of a kind share a panel (same loss, same
# scale: the gap between them is what one looks for); a column of no panel gets one of its
# own after these.
PANELS = (
    ("box loss", ("train/box_loss", "val/box_loss")),
    ("cls loss", ("train/cls_loss", "val/cls_loss")),
    ("dfl loss", ("train/dfl_loss", "val/dfl_loss")),
    ("precision (conf 0.25)", ("metrics/precision",)),
    ("recall (conf 0.25)", ("metrics/recall",)),
    ("mAP@0.5", ("metrics/mAP50",)),
    ("mAP@0.5:0.95", ("metrics/mAP50-95",)),
    ("learning rate", ("lr/bias", "lr/bn", "lr/weights")),
    ("images/s (training)", ("images_per_s",)),
    ("seconds an epoch", ("time_s",)),
)
SMOOTH_SIGMA = 3.0  # epochs: the Gaussian that draws the smoothed line (ultralytics' too)
PANEL_COLS, PANEL_INCHES, PLOT_DPI = 5, (3.2, 2.8), 100  # results.png: 320 × 280 pixels a panel


def panels(columns) -> list[tuple[str, list[str]]]:
    """The panels results.png draws for these columns: those of :data:`PANELS` with at
    least one of them, then one for each other column (``epoch`` is the x axis)."""
    have = [c for c in columns if c != "epoch"]
    out = [(title, [c for c in cols if c in have]) for title, cols in PANELS]
    out = [(title, cols) for title, cols in out if cols]
    known = {c for _, cols in PANELS for c in cols}
    return out + [(c, [c]) for c in have if c not in known]


def smooth(y, sigma: float = SMOOTH_SIGMA):
    """A Gaussian-weighted mean of each point's neighbours (``sigma`` in points), the
    missing (NaN) ones left out and the weights renormalised at the ends."""
    y = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(y)
    i = np.arange(len(y))
    w = np.exp(-0.5 * ((i[:, None] - i[None, :]) / sigma) ** 2) * ok[None, :]
    total = w.sum(1)
    return np.where(total > 0, (w * np.where(ok, y, 0)[None, :]).sum(1) / np.where(total > 0, total, 1), np.nan)




def pr_curve(path: Path, e, names: list[str]) -> Path:
    """COCO's precision-recall curve at IoU 0.5 of each class with objects, its AP50 in the
    legend, and the mean over them (whose mean is the mAP50 validation reports)."""
    from gelanc.train.metrics import pr_curves

    recall, precision = pr_curves(e, len(names))
    has = np.flatnonzero(~np.isnan(precision).any(1))
    with _figure(CURVE_INCHES) as (fig, axes):
        ax = axes[0, 0]
        _per_class(ax, recall, precision, names, has, lambda k: f"{_text(names[k])} {precision[k].mean():.3f}")
        if len(has):
            mean = precision[has].mean(0)
            ax.plot(recall, mean, linewidth=3, color="blue", label=f"all classes {mean.mean():.3f} mAP@0.5")
        _finish_curve(fig, ax, "Recall", "Precision", "Precision-recall (IoU 0.5)")
        return _write(fig, path)


def confidence_curve(path: Path, curves: dict, names: list[str], which: str) -> Path:
    """``which`` (precision, recall or f1) of :func:`gelanc.train.metrics.confidence_curves`
    against the confidence threshold, per class with objects and their mean — labelled
    with the mean's best value and the threshold that reaches it first."""
    title = {"precision": "Precision", "recall": "Recall", "f1": "F1"}[which]
    conf, y = curves["conf"], curves[which]
    has = np.flatnonzero(curves["instances"] > 0)
    with _figure(CURVE_INCHES) as (fig, axes):
        ax = axes[0, 0]
        _per_class(ax, conf, y, names, has, lambda k: _text(names[k]))
        if len(has):
            mean = y[has].mean(0)
            best = int(np.argmax(mean))
            ax.plot(conf, mean, linewidth=3, color="blue",
                    label=f"all classes {mean[best]:.2f} at {conf[best]:.3f}")
        _finish_curve(fig, ax, "Confidence", title, f"{title}–confidence (IoU 0.5)")
        return _write(fig, path)


def confusion(path: Path, matrix: np.ndarray, names: list[str], normalize: bool = False,
              conf: float = CONF, iou: float = IOU) -> Path:
    """The confusion matrix of :func:`gelanc.train.metrics.confusion_matrix` (rows
    predicted, columns true, the last of each the background): counts, or with
    ``normalize`` each column divided by its sum (the share of a true class's objects
    predicted as each class, or missed)."""
    m = np.asarray(matrix, dtype=np.float64)
    if normalize:
        m = m / np.maximum(m.sum(0, keepdims=True), 1)
    labels = [_text(n) for n in names] + ["background"]
    n = len(labels)
    with _figure(CONFUSION_INCHES) as (fig, axes):
        ax = axes[0, 0]
        top = 1.0 if normalize else max(float(m.max()), 1.0)
        im = ax.imshow(m, cmap="Blues", vmin=0, vmax=top)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        ticks = n <= 100  # COCO's 80 classes still get their names, small
        ax.set_xticks(range(n) if ticks else [])
        ax.set_yticks(range(n) if ticks else [])
        if ticks:
            small = 10 if n <= 15 else 7 if n <= 40 else 4
            ax.set_xticklabels(labels, rotation=90 if n > 8 else 0, fontsize=small)
            ax.set_yticklabels(labels, fontsize=small)
        if n <= 30:
            for i, j in zip(*np.nonzero(m)):
                v = m[i, j]
                ax.text(j, i, f"{v:.2f}" if normalize else f"{int(v)}", ha="center", va="center",
                        fontsize=11 if n <= 15 else 6, color="white" if v > 0.5 * top else "black")
        ax.set_xlabel("True")
        ax.set_ylabel("Predicted")
        how = "normalised by true class" if normalize else "counts"
        ax.set_title(f"Confusion matrix ({how}): detections over {conf:g} matched at IoU {iou:g}", fontsize=11)
        fig.tight_layout()
        return _write(fig, path)


def labels_plot(path: Path, labels: torch.Tensor, names: list[str], max_boxes: int = 1000) -> Path:
    """The split's labels ((n, 5): class, cx, cy, w, h normalised to their image): instances
    per class; the shapes of up to ``max_boxes`` boxes, centred; where the centres lie;
    the boxes' widths against their heights."""
    from matplotlib.patches import Rectangle

    from gelanc.inference.predict import PALETTE

    lab = torch.as_tensor(labels).detach().cpu().double().reshape(-1, 5).numpy()
    nc = len(names)
    cls = lab[:, 0].astype(np.int64)
    ok = (cls >= 0) & (cls < nc)
    lab, cls = lab[ok], cls[ok]
    colours = [PALETTE[c % len(PALETTE)] for c in range(nc)]
    with _figure(LABELS_INCHES, 2, 2) as (fig, axes):
        ax = axes[0, 0]
        counts = np.bincount(cls, minlength=nc)
        ax.bar(range(nc), counts, color=colours)
        ax.set_ylabel("instances")
        ax.set_title(f"{len(lab)} objects in {nc} classes", fontsize=10)
        if nc <= 30:
            ax.set_xticks(range(nc))
            ax.set_xticklabels([_text(n) for n in names], rotation=90 if nc > 6 else 0, fontsize=8)

        ax = axes[0, 1]
        for c, _, _, w, h in lab[:max_boxes]:
            ax.add_patch(Rectangle((0.5 - w / 2, 0.5 - h / 2), w, h, fill=False, linewidth=0.5, alpha=0.4,
                                   edgecolor=colours[int(c)]))
        ax.set_xlim(0, 1)
        ax.set_ylim(1, 0)
        ax.set_aspect("equal")
        ax.set_title(f"box shapes, centred ({min(len(lab), max_boxes)} shown)", fontsize=10)

        ax = axes[1, 0]
        ax.hist2d(lab[:, 1], lab[:, 2], bins=40, range=[[0, 1], [0, 1]], cmap="Blues")
        ax.set_ylim(1, 0)  # as in the image: y down
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        ax.set_title("box centres", fontsize=10)

        ax = axes[1, 1]
        ax.scatter(lab[:, 3], lab[:, 4], s=3, alpha=0.3, c=[colours[c] for c in cls], linewidths=0)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("width")
        ax.set_ylabel("height")
        ax.set_title("box sizes (fraction of the image)", fontsize=10)
        for a in axes.flat:
            a.tick_params(labelsize=7)
        fig.tight_layout()
        return _write(fig, path)


def grid_size(n: int, imgsz: int) -> tuple[int, int, int]:
    """(columns, rows, tile side) of a grid of ``n`` square images of ``imgsz`` pixels: as
    square as it goes, each tile at least TILE_MIN (so labels stay legible) and the grid at
    most about GRID_MAX wide."""
    cols = max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    tile = max(16, min(max(imgsz, TILE_MIN), GRID_MAX // cols))
    return cols, rows, tile


def _mosaic(tiles: list[torch.Tensor], cols: int, rows: int, tile: int) -> torch.Tensor:
    step = tile + GRID_PAD
    out = torch.full((3, rows * step + GRID_PAD, cols * step + GRID_PAD), 255, dtype=torch.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        out[:, GRID_PAD + r * step:GRID_PAD + r * step + tile, GRID_PAD + c * step:GRID_PAD + c * step + tile] = t
    return out


def _draw_objects(image: torch.Tensor, gt: torch.Tensor, names: list[str]) -> torch.Tensor:
    """The image with each object's box and class name, styled as ``gelanc predict`` draws."""
    from torchvision.utils import draw_bounding_boxes

    from gelanc.inference.predict import PALETTE, _font

    if len(gt) == 0:
        return image
    cls = gt[:, 0].long().tolist()
    colours = [PALETTE[c % len(PALETTE)] for c in cls]
    side = max(image.shape[1:])
    return draw_bounding_boxes(image, gt[:, 1:5], labels=[str(names[c]) if c < len(names) else str(c) for c in cls],
                               colors=colours, width=max(1, round(side / 320)), font=_font(),
                               font_size=max(9, round(side / 36)), label_colors="white",
                               label_background_colors=colours, fill_labels=True)


def val_grids(folder: Path, images: list[torch.Tensor], ground_truths: list[torch.Tensor],
              detections: list[torch.Tensor], names: list[str], conf: float = CONF, per_grid: int = GRID_IMAGES,
              grids: int = GRIDS) -> list[Path]:
    """``val_batchN_labels.png`` (the objects) and ``val_batchN_pred.png`` (the detections
    over ``conf``, with their scores) for N = 0 … grids−1: ``per_grid`` letterboxed images
    (3, S, S) uint8 a grid, in order, their boxes in the same S-pixel canvas."""
    from torchvision.transforms.v2 import functional as TF

    from gelanc.inference.predict import draw, write_image

    written: list[Path] = []
    for g in range(grids):
        chunk = range(g * per_grid, min((g + 1) * per_grid, len(images)))
        if not len(chunk):
            break
        size = images[chunk[0]].shape[-1]
        cols, rows, tile = grid_size(len(chunk), size)
        scale = tile / size
        truth, pred = [], []
        for i in chunk:
            img = TF.resize(images[i], [tile, tile], antialias=True)
            gt = ground_truths[i].detach().cpu().float().reshape(-1, 5).clone()
            gt[:, 1:5] *= scale
            det = detections[i].detach().cpu().float().reshape(-1, 6)
            det = det[det[:, 4] > conf].clone()
            det[:, :4] *= scale
            truth.append(_draw_objects(img, gt, names))
            pred.append(draw(img, det, names))
        for kind, tiles in (("labels", truth), ("pred", pred)):
            path = Path(folder) / f"val_batch{g}_{kind}.png"
            write_image(path, _mosaic(tiles, cols, rows, tile))
            written.append(path)
    return written


def validation_plots(folder: Path, result: dict, names: list[str], conf: float = CONF, iou: float = IOU
                     ) -> list[Path]:
    """PR_curve.png, P/R/F1_curve.png and both confusion matrices from
    :func:`gelanc.train.val.evaluate`'s result with ``keep=True``."""
    from gelanc.train.metrics import confidence_curves, confusion_matrix

    folder = Path(folder)
    nc = len(names)
    written = [pr_curve(folder / "PR_curve.png", result["coco"], names)]
    curves = confidence_curves(result["coco"], nc)
    written += [confidence_curve(folder / f, curves, names, which) for which, f in CURVE_FILES.items()]
    m = confusion_matrix(result["detections"], result["ground_truths"], nc, conf=conf, iou=iou)
    written += [confusion(folder / "confusion_matrix.png", m, names, conf=conf, iou=iou),
                confusion(folder / "confusion_matrix_normalized.png", m, names, normalize=True, conf=conf, iou=iou)]
    return written


# ---- a run folder ---------------------------------------------------------------------


def _run_checkpoint(run: Path) -> Path:
    if not run.exists():
        raise PlotError(f"{run}: no such folder")
    if not run.is_dir():
        raise PlotError(f"{run} is not a folder (gelanc plot takes a run folder, the one holding best.pt)")
    for name in ("best.pt", "last.pt"):
        if (run / name).is_file():
            return run / name
    raise PlotError(f"{run} holds no best.pt or last.pt (not a training run's folder?)")


def _device(device) -> torch.device:
    from gelanc.train import ddp

    try:
        return device if isinstance(device, torch.device) else ddp.one_device(device)
    except ValueError as e:
        raise PlotError(str(e)) from None


def _imgsz(m, imgsz, where: Path) -> int:
    """The checkpoint's training size, checked as any foreign value before it is used."""
    from gelanc.backend.fx import ir_of
    from gelanc.diagnostics import GelError
    from gelanc.passes.budget import check_run_size

    try:
        return check_run_size(ir_of(m), imgsz)
    except GelError as e:
        raise PlotError(f"{where}: {e.message}") from None


def _rows(run: Path, settings: dict) -> list[dict[str, float]]:
    """results.csv's rows, else those the checkpoint keeps (numbers only)."""
    from gelanc.train.results import read_csv

    try:
        rows = read_csv(run / "results.csv")
    except (OSError, ValueError, UnicodeDecodeError):  # a damaged table: the checkpoint's rows
        rows = []
    if rows:
        return rows
    kept = settings.get("rows")
    if not isinstance(kept, list):
        return []
    return [{str(k): float(v) for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            for r in kept if isinstance(r, dict)]


def plot_run(run_dir, data=None, device=None, workers: int = 0, progress: bool = False) -> list[Path]:
    """Every plot of a finished (or interrupted) run, written into its folder; returns the
    files written.

    The run's best.pt (else last.pt) is validated once — its deploy graph, at the
    training size, on the val split of the data it was trained on (``data``: another
    data.yaml) — for the curves, confusion matrices and image grids; results.csv (else
    the checkpoint's rows) gives results.png; the train split's labels give labels.png.
    A folder that does not exist or holds no checkpoint is a :class:`PlotError`."""
    from torch.utils.data import DataLoader

    import gelanc
    from gelanc.backend.checkpoint import build, read, run_settings
    from gelanc.backend.fx import heads, ir_of
    from gelanc.data.config import DataError
    from gelanc.data.dataset import YoloDataset, collate
    from gelanc.train import ddp, results
    from gelanc.train.resume import CKPT_KEY
    from gelanc.train.setup import default_data, load_data
    from gelanc.train.val import evaluate

    run = Path(run_dir)
    path = _run_checkpoint(run)
    dev = _device(device)
    ckpt = read(path)
    m = build(ckpt, str(path))
    if not m.meta["gelanc"].get("deployed"):
        m = gelanc.deploy(m)
    args = run_settings(ckpt)
    w = ddp.World()
    data_path = Path(data) if data is not None else Path(args["data"]) if args.get("data") else default_data(w)
    imgsz = _imgsz(m, args.get("imgsz", 640), path)
    d = load_data(data_path, w)
    nc = heads(m)[0].nc
    if nc != len(d.names):
        raise DataError(f"{path} detects {nc} classes but {data_path} has {len(d.names)}")
    names = list(d.names)

    val = YoloDataset(d.val, imgsz)
    loader = DataLoader(val, batch_size=16, num_workers=workers, collate_fn=collate)
    r = evaluate(m, loader, names, dev, progress=progress, fast=True, compile=False, keep=True)

    written: list[Path] = []
    rows = _rows(run, ckpt.get(CKPT_KEY) if isinstance(ckpt.get(CKPT_KEY), dict) else {})
    if rows:
        title = f"{ir_of(m).graph.get('model', path.stem)} on {data_path.parent.name}"
        results.plot(run / "results.png", rows, title=title)
        written.append(run / "results.png")
    written += validation_plots(run, r, names)
    labels = [t.reshape(-1, 5) for t in d.train.labels]
    written.append(labels_plot(run / "labels.png", torch.cat(labels) if labels else torch.zeros(0, 5), names))

    index = {str(p): i for i, p in enumerate(d.val.images)}
    first = zip(r["paths"][:GRID_IMAGES * GRIDS], r["ground_truths"], r["detections"])
    shown = [(val[index[p]].image, g, det) for p, g, det in first if p in index]
    shown = [one for one in shown if one[0] is not None]  # one that decoded in validation but not now: left out
    if shown:
        images, gts, dets = zip(*shown)
        written += val_grids(run, list(images), list(gts), list(dets), names)
    return written
