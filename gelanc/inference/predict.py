"""Detection on images: letterbox, the deploy graph, torchvision's NMS, boxes drawn.

Boxes come back in the original image's pixels (the letterbox undone), as
``{"image", "width", "height", "detections": [{"box": [x1, y1, x2, y2], "score",
"class", "name"}]}`` per image — the shape ``gelanc predict --json`` prints and
writes to ``predictions.json``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from gelanc.data.dataset import IMAGE_SUFFIXES, letterbox
from gelanc.errors import UserError
from gelanc.inference.fastpath import Prepared

# 20 distinct colours (the tab20 palette's strong half, then its light half), one a class
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7",
           "#dbdb8d", "#9edae5"]


class SourceError(UserError):
    """A source that is not an image, a folder of images or a pattern matching some (exit 2)."""


def find_images(sources: list[str]) -> list[Path]:
    """Files, folders (searched recursively) and glob patterns → image paths, in order."""
    out: list[Path] = []
    for s in sources:
        p = Path(s)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES)
        elif p.exists():  # a file; or a FIFO or a device, which read_rgb refuses by name, without waiting on it
            found = [p]
        elif any(c in s for c in "*?["):
            found = sorted(q for q in Path().glob(s) if q.suffix.lower() in IMAGE_SUFFIXES)
        else:
            raise SourceError(f"no such file or folder: {s}")
        if not found:
            raise SourceError(f"{s}: no images ({', '.join(IMAGE_SUFFIXES)})")
        out += found
    return out


def read_rgb(path: Path) -> torch.Tensor:
    """(3, H, W) uint8 as training reads it (:func:`gelanc.data.image.read_rgb`), or a
    SourceError naming the file."""
    from gelanc.data.image import ImageError
    from gelanc.data.image import read_rgb as decode

    try:
        return decode(path)
    except ImageError as e:
        raise SourceError(f"cannot read {path}: {e}") from None


@torch.no_grad()
def detect(model: Prepared, image: torch.Tensor, size: int, conf: float, iou: float, max_det: int = 300
           ) -> torch.Tensor:
    """(n, 6) x1, y1, x2, y2, score, class in ``image``'s pixels."""
    from gelanc.inference.postprocess import nms, unletterbox

    boxed, _ = letterbox(image, torch.zeros(0, 4), size)
    out = model.module(model.convert(boxed.unsqueeze(0).float() / 255))
    det = nms(out[0].float(), conf=conf, iou=iou, max_det=max_det)[0].cpu()
    det[:, :4] = unletterbox(det[:, :4], size, tuple(image.shape[1:]))
    return det


def as_json(path: Path, image: torch.Tensor, det: torch.Tensor, names: list[str]) -> dict:
    return {"image": str(path), "width": int(image.shape[2]), "height": int(image.shape[1]),
            "detections": [{"box": [round(float(v), 2) for v in d[:4]], "score": round(float(d[4]), 4),
                            "class": int(d[5]), "name": names[int(d[5])] if int(d[5]) < len(names) else str(int(d[5]))}
                           for d in det]}


def draw(image: torch.Tensor, det: torch.Tensor, names: list[str]) -> torch.Tensor:
    """The image with each detection's box and "name score" label (torchvision's drawing)."""
    from torchvision.utils import draw_bounding_boxes

    if len(det) == 0:
        return image
    cls = det[:, 5].long().tolist()
    labels = [f"{names[c] if c < len(names) else c} {s:.2f}" for c, s in zip(cls, det[:, 4].tolist())]
    side = max(image.shape[1:])
    colours = [PALETTE[c % len(PALETTE)] for c in cls]
    # white text on a box-coloured tab, readable on any background
    return draw_bounding_boxes(image, det[:, :4], labels=labels, colors=colours, width=max(1, round(side / 320)),
                               font=_font(), font_size=max(9, round(side / 36)), label_colors="white",
                               label_background_colors=colours, fill_labels=True)


def _font() -> str | None:
    """A TrueType font for the labels: matplotlib's DejaVu Sans, which it always ships."""
    from matplotlib import font_manager

    try:
        return font_manager.findfont("DejaVu Sans", fallback_to_default=True)
    except Exception:  # noqa: BLE001 - no font: torchvision's small bitmap one
        return None


def run(model: Prepared, paths: list[Path], size: int, conf: float, iou: float, max_det: int = 300
        ) -> Iterator[tuple[Path, torch.Tensor, torch.Tensor]]:
    """(path, image, detections) for each image in turn, ``model`` from :func:`gelanc.inference.fastpath.prepare`."""
    for p in paths:
        image = read_rgb(p)
        yield p, image, detect(model, image, size, conf, iou, max_det)


def output_names(paths: list[Path]) -> dict[Path, str]:
    """The drawn image's file name for each input: its own name (PNG unless it is a JPEG
    or PNG), numbered when two inputs from different folders share one."""
    used: set[str] = set()
    names: dict[Path, str] = {}
    for path in paths:
        if path in names:  # the same file given twice
            continue
        suffix = path.suffix.lower() if path.suffix.lower() in (".jpg", ".jpeg", ".png") else ".png"
        name, k = path.stem + suffix, 2
        while name in used:
            name, k = f"{path.stem}_{k}{suffix}", k + 1
        used.add(name)
        names[path] = name
    return names


def check_out(out: Path, sources: list[str], paths: list[Path], files: list[str]) -> None:
    """Refuse, before any work, to write into a source folder (or a folder inside one) or
    over an input, saying which; and refuse output files that are not regular files
    (:func:`gelanc.atomic.check_target`). Raises :class:`gelanc.atomic.UnsafeTarget`."""
    import errno

    from gelanc.atomic import UnsafeTarget, check_not_input, check_target, input_ids

    target = out.resolve()
    for s in sources:
        folder = Path(s)
        if folder.is_dir():
            src = folder.resolve()
            if target == src or src in target.parents:
                where = "the source folder" if target == src else "inside the source folder"
                raise UnsafeTarget(errno.EEXIST, f"it is {where} {s} (gelanc never writes into its inputs; "
                                                 f"choose another -o)", str(out))
    inputs = input_ids(paths)
    for f in files:
        check_target(out / f)
        check_not_input(out / f, inputs)


def write_image(path: Path, image: torch.Tensor) -> None:
    """PNG or JPEG by the suffix, written whole (torchvision's encoders)."""
    from torchvision.io import encode_jpeg, encode_png

    from gelanc.atomic import write_bytes

    data = encode_jpeg(image, quality=95) if path.suffix.lower() in (".jpg", ".jpeg") else encode_png(image)
    write_bytes(path, data.numpy().tobytes())
