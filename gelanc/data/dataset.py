"""YOLO-format datasets: find the images, check every label once, load letterboxed batches.

Bad data never stops an epoch: :func:`scan` reads every image header and label file
before training, counts each problem with its file name, and keeps only what is
usable — a corrupt or unreadable image, or a label file with any invalid row (class
id outside 0 … nc−1, coordinates outside [0, 1], a row that is not five numbers), is
skipped with a warning; a missing or empty label file makes a background image. The
result is cached next to the labels (``labels.cache``, keyed by the files' sizes and
times, read with ``weights_only=True``) so a second run does not parse text again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset

from gelanc.data.config import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
CACHE_VERSION = 1


def image_files(sources: list[Path]) -> list[Path]:
    """The images of a split: folders (searched recursively) and .txt lists of paths."""
    out: list[Path] = []
    for src in sources:
        if src.is_dir():
            out += sorted(p for p in src.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif src.suffix == ".txt" and src.is_file():
            for line in src.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    p = Path(line.strip())
                    out.append(p if p.is_absolute() else src.parent / p)
        else:
            raise DataError(f"{src}: neither a folder of images nor a .txt list of them")
    if not out:
        raise DataError(f"no images in {', '.join(map(str, sources))}")
    return out


def label_file(image: Path) -> Path:
    """``…/images/x/0001.jpg`` → ``…/labels/x/0001.txt`` (the last ``images`` part of the path)."""
    parts = list(image.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


@dataclass
class Scan:
    """What a split holds: usable images with their labels, and every problem found."""

    images: list[Path] = field(default_factory=list)
    labels: list[torch.Tensor] = field(default_factory=list)  # (n, 5): class, cx, cy, w, h
    problems: dict[str, list[str]] = field(default_factory=dict)  # kind → "file: detail"

    def note(self, kind: str, what: str) -> None:
        self.problems.setdefault(kind, []).append(what)

    def report(self, limit: int = 5) -> str:
        lines = [f"{len(self.images)} images, {sum(len(t) for t in self.labels)} objects"]
        for kind, items in self.problems.items():
            lines.append(f"  {len(items)} {kind}: " + "; ".join(items[:limit]) + (" …" if len(items) > limit else ""))
        return "\n".join(lines)


# the problems that make an image unusable (the others only mean "no objects")
SKIPPED = ("corrupt images", "bad label files")


def check_image(path: Path) -> str | None:
    """Why the image cannot be used, or None."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.verify()
            w, h = im.size
        if w < 2 or h < 2:
            return f"{w}×{h} pixels"
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same kind of problem
        return str(e).splitlines()[0] if str(e) else type(e).__name__
    return None


def _parse_labels(path: Path, nc: int) -> tuple[torch.Tensor | None, str | None]:
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            vals = [float(v) for v in parts]
        except ValueError:
            return None, f"line {i}: not numbers"
        if len(vals) != 5:
            return None, f"line {i}: {len(vals)} values, expected class cx cy w h"
        c, x, y, w, h = vals
        if c != int(c) or not 0 <= c < nc:
            return None, f"line {i}: class {parts[0]} is not in 0…{nc - 1}"
        if not all(0 <= v <= 1 for v in (x, y, w, h)) or w <= 0 or h <= 0:
            return None, f"line {i}: coordinates outside [0, 1]"
        rows.append(vals)
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 5).unique(dim=0), None


def fingerprint(files: list[Path], salt: str) -> str:
    """A key that changes when any of ``files`` changes (size, time, or presence)."""
    h = hashlib.sha256(f"{CACHE_VERSION}:{salt}".encode())
    for q in files:
        try:
            st = q.stat()
            h.update(f"{q}:{st.st_size}:{st.st_mtime_ns}".encode())
        except OSError:
            h.update(f"{q}:missing".encode())
    return h.hexdigest()


def cached(cache: Path | None, key: str, build: Callable[[], tuple[Scan, list[str]]]) -> tuple[Scan, list[str]]:
    """``build()``'s scan and class names, or the cache's when it was made for ``key``.

    The cache holds only strings and tensors (read with ``weights_only=True``); a stale,
    broken or unwritable one is simply rebuilt or skipped."""
    if cache is not None and cache.is_file():
        try:
            c = torch.load(cache, weights_only=True)
            if c.get("key") == key:
                return Scan([Path(p) for p in c["images"]], list(c["labels"]), dict(c["problems"])), list(c["names"])
        except Exception:  # noqa: BLE001 - a stale or broken cache is rebuilt
            pass
    out, names = build()
    if cache is not None:
        from gelanc.atomic import atomic_write

        entry = {"key": key, "images": [str(p) for p in out.images], "labels": out.labels, "problems": out.problems,
                 "names": list(names)}
        try:
            atomic_write(cache, lambda tmp: torch.save(entry, tmp))
        except OSError:
            pass  # a read-only dataset: no cache, scan again next time
    return out, names


def scan(images: list[Path], nc: int, cache: Path | None = None) -> Scan:
    """Check every image and label file (or reuse the cache when nothing changed)."""
    key = fingerprint([q for p in images for q in (p, label_file(p))], str(nc))
    return cached(cache, key, lambda: (_scan(images, nc), []))[0]


def _scan(images: list[Path], nc: int) -> Scan:
    out = Scan()
    for img in images:
        bad = check_image(img)
        if bad:
            out.note("corrupt images", f"{img.name}: {bad}")
            continue
        lf = label_file(img)
        if not lf.is_file():
            out.note("images without a label file (kept as background)", img.name)
            labels = torch.zeros(0, 5)
        else:
            labels, why = _parse_labels(lf, nc)
            if labels is None:
                out.note("bad label files", f"{lf.name}: {why}")
                continue
            if len(labels) == 0:
                out.note("empty images (kept as background)", img.name)
        out.images.append(img)
        out.labels.append(labels)
    return out


def cache_file(images: list[Path]) -> Path:
    """Where a split's scan is cached: ``labels/<split>.cache`` beside its label folder."""
    return label_file(images[0]).parent.with_suffix(".cache")


def load_split(cfg, which: str, root: Path) -> tuple[Scan, list[str]]:
    """One split of a data.yaml (``cfg``, read from the folder ``root``), scanned, and
    the class names: YOLO folders and lists (from the cache when nothing changed), or a
    COCO file."""
    from gelanc.data.config import CocoSplit

    src = getattr(cfg, which)
    if isinstance(src, CocoSplit):
        from gelanc.data.coco import scan_coco

        ann, folder = cfg.resolve(src.annotations, root), cfg.resolve(src.images, root)
        key = fingerprint([ann, *sorted(p for p in folder.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)], "coco")
        found, names = cached(ann.with_suffix(".cache"), key, lambda: scan_coco(ann, folder))
        if cfg.names is not None and len(cfg.names) != len(names):
            raise DataError(f"{src.annotations}: {len(names)} categories, but names lists {len(cfg.names)}")
        return found, list(cfg.names or names)
    images = image_files(cfg.split(which, root))
    return scan(images, cfg.nc, cache=cache_file(images)), list(cfg.names)


def letterbox(image: torch.Tensor, boxes: torch.Tensor, size: int, fill: int = 114):
    """Resize (3, H, W) uint8 so its longer side is ``size``, pad to a square with grey.

    ``boxes`` are (n, 4) cx, cy, w, h normalised to the input; they come back normalised
    to the output. torchvision's box-aware functional transforms move them."""
    from torchvision import tv_tensors
    from torchvision.transforms.v2 import functional as TF

    _, h, w = image.shape
    r = size / max(h, w)
    nh, nw = max(1, round(h * r)), max(1, round(w * r))
    bb = tv_tensors.BoundingBoxes(boxes * torch.tensor([w, h, w, h]), format="CXCYWH", canvas_size=(h, w))
    img, bb = TF.resize(tv_tensors.Image(image), [nh, nw], antialias=True), TF.resize(bb, [nh, nw])
    top, left = (size - nh) // 2, (size - nw) // 2
    padding = [left, top, size - nw - left, size - nh - top]
    img, bb = TF.pad(img, padding, fill=fill), TF.pad(bb, padding)
    return img.as_subclass(torch.Tensor), bb.as_subclass(torch.Tensor) / size


class YoloDataset(Dataset):
    """Letterboxed images and their labels, from a scanned split."""

    def __init__(self, split: Scan, size: int):
        self.split, self.size = split, size

    def __len__(self) -> int:
        return len(self.split.images)

    def __getitem__(self, i: int):
        from torchvision.io import ImageReadMode, read_image

        path, labels = self.split.images[i], self.split.labels[i]
        image = read_image(str(path), mode=ImageReadMode.RGB)
        image, boxes = letterbox(image, labels[:, 1:], self.size)
        return image, torch.cat([labels[:, :1], boxes], 1), str(path)


def collate(batch):
    """Images (B, 3, S, S) uint8 and targets (N, 6): image index, class, cx, cy, w, h."""
    images, labels, paths = zip(*batch)
    targets = [torch.cat([torch.full((len(t), 1), float(i)), t], 1) for i, t in enumerate(labels)]
    return torch.stack(images), torch.cat(targets) if targets else torch.zeros(0, 6), list(paths)
