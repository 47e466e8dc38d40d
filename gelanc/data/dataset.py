"""YOLO-format datasets: find the images, check every label once, load letterboxed batches.

Bad data never stops an epoch: :func:`scan` reads every image header and label file
before training, counts each problem with its file name, and keeps only what is
usable — a corrupt, truncated, unreadable or oversized image, or a label file with
any invalid row (class id outside 0 … nc−1, a number that is not finite, coordinates
outside [0, 1], a row that is neither a box ``class cx cy w h`` nor a polygon
``class x1 y1 x2 y2 x3 y3 …``), is skipped with a warning; a missing or empty label
file makes a background image; a label file no image claims is reported. A polygon
row becomes its box (the polygon's extent, clipped to the image), as ultralytics
reads segment labels. The result is cached next to the labels (``labels.cache``,
keyed by the files' sizes and times, read with ``weights_only=True``) so a second
run does not parse text again.

An image that passes the scan and still cannot be decoded when a batch is loaded
(changed or removed since) is skipped there: the dataset returns a :class:`Sample`
without an image, :func:`collate` leaves it out of the batch and lists it in the
batch's ``skipped``, and the training loop and :func:`gelanc.train.val.evaluate`
collect and report those files.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
from torch.utils.data import Dataset

from gelanc.data.config import DataError
from gelanc.data.image import ImageError, probe, read_rgb
from gelanc.files import TooLarge, read_bounded
from gelanc.limits import MAX_IMAGE_LIST_BYTES, MAX_LABEL_BYTES, MAX_SPLIT_IMAGES

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
CACHE_VERSION = 3  # 2: polygon rows read as boxes, truncated JPEGs refused; 3: problems counted past NOTES_KEPT
NOTES_KEPT = 1000  # problems of one kind named in a Scan; those after are only counted


def image_files(sources: list[Path]) -> list[Path]:
    """The images of a split: folders (searched recursively) and .txt lists of paths.

    A split may hold at most MAX_SPLIT_IMAGES images, and a list file MAX_IMAGE_LIST_BYTES
    bytes: past either, a DataError, raised before the images are checked."""
    out: list[Path] = []
    for src in sources:
        if src.is_dir():
            found = []
            for p in src.rglob("*"):
                if p.suffix.lower() in IMAGE_SUFFIXES:
                    found.append(p)
                    _count(len(out) + len(found), src)
            out += sorted(found)
        elif src.suffix == ".txt" and src.exists():
            out += _listed(src, len(out))
        else:
            raise DataError(f"{src}: neither a folder of images nor a .txt list of them")
    if not out:
        raise DataError(f"no images in {', '.join(map(str, sources))}")
    return out


def _count(n: int, src: Path) -> None:
    if n > MAX_SPLIT_IMAGES:
        raise DataError(f"{src}: the split has over {MAX_SPLIT_IMAGES:,} images (gelanc.limits.MAX_SPLIT_IMAGES)")


def _listed(src: Path, before: int) -> list[Path]:
    """The image paths a .txt list names, one a line (relative ones against its folder)."""
    try:
        data = read_bounded(src, MAX_IMAGE_LIST_BYTES, "gelanc.limits.MAX_IMAGE_LIST_BYTES")
    except TooLarge as e:
        raise DataError(f"{src}: {e}: not a list of images") from None
    except OSError as e:
        raise DataError(f"{src}: cannot read: {e.strerror or type(e).__name__}") from None
    if data.count(b"\n") + 1 > MAX_SPLIT_IMAGES - before:  # perhaps too many: count the lines that name a path
        _count(before + sum(1 for line in io.BytesIO(data) if line.strip()), src)
    out: list[Path] = []
    for i, raw in enumerate(io.BytesIO(data), 1):  # a line at a time: no second copy of the whole text
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise DataError(f"{src}: line {i}: not UTF-8 text") from None
        if not line:
            continue
        if "\0" in line:
            raise DataError(f"{src}: line {i}: a NUL character, which no path holds")
        p = Path(line)
        out.append(p if p.is_absolute() else src.parent / p)
        _count(before + len(out), src)
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
    problems: dict[str, list[str]] = field(default_factory=dict)  # kind → "file: detail", the first NOTES_KEPT
    counts: dict[str, int] = field(default_factory=dict)  # kind → how many, for a kind with more than NOTES_KEPT

    def note(self, kind: str, what: str) -> None:
        """One problem of a kind: named among the first NOTES_KEPT, counted after them (a
        hostile COCO file can hold millions of bad annotations, each of which would cost
        its note's memory)."""
        items = self.problems.setdefault(kind, [])
        if len(items) < NOTES_KEPT:
            items.append(what)
        else:
            self.counts[kind] = self.counts.get(kind, len(items)) + 1

    def count(self, kind: str) -> int:
        """How many problems of ``kind`` were found."""
        return self.counts.get(kind, len(self.problems.get(kind, ())))

    def report(self, limit: int = 5) -> str:
        lines = [f"{len(self.images)} images, {sum(len(t) for t in self.labels)} objects"]
        for kind, items in self.problems.items():
            n = self.count(kind)
            lines.append(f"  {n} {kind}: " + "; ".join(items[:limit]) + (" …" if n > limit else ""))
        return "\n".join(lines)


# the problems that make an image unusable (the others only mean "no objects", or nothing for training)
SKIPPED = ("corrupt images", "bad label files")
ORPHANS = "label files without an image (ignored)"


def measure_image(path: Path) -> tuple[tuple[int, int] | None, str | None]:
    """((width, height) as decoded, None), or (None, why the image cannot be used):
    the checks of :func:`gelanc.data.image.probe`, and at least 2×2 pixels."""
    try:
        w, h = probe(path)
    except ImageError as e:
        return None, str(e)
    if w < 2 or h < 2:
        return None, f"{w}×{h} pixels"
    return (w, h), None


def check_image(path: Path) -> str | None:
    """Why the image cannot be used, or None."""
    return measure_image(path)[1]


def read_label_text(path: Path) -> tuple[str | None, str | None]:
    """The label file's text, or why it cannot be had: at most MAX_LABEL_BYTES are read."""
    try:
        data = read_bounded(path, MAX_LABEL_BYTES, "gelanc.limits.MAX_LABEL_BYTES")
    except TooLarge as e:
        return None, str(e)
    except OSError as e:  # a FIFO or a device: "not a regular file"
        return None, f"cannot read: {e.strerror or type(e).__name__}"
    return data.decode("utf-8", errors="replace"), None


def polygon_box(coords: list[float]) -> list[float]:
    """A polygon's points x1 y1 x2 y2 … (normalised) → its extent cx cy w h, clipped to [0, 1]."""
    xs = [min(max(v, 0.0), 1.0) for v in coords[0::2]]
    ys = [min(max(v, 0.0), 1.0) for v in coords[1::2]]
    x1, x2, y1, y2 = min(xs), max(xs), min(ys), max(ys)
    return [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]


def label_row(parts: list[str], nc: int) -> list[float] | str:
    """One row as [class, cx, cy, w, h], or why it is not one (the row's text is not echoed:
    numbers are shown as parsed)."""
    try:
        vals = [float(v) for v in parts]
    except ValueError:
        return "not numbers"
    if not all(math.isfinite(v) for v in vals):
        return "a number that is not finite (nan or inf)"
    n = len(vals) - 1  # coordinates after the class
    if n < 4 or (n != 4 and (n % 2 or n < 6)):
        return (f"{n} coordinates: a polygon needs an even number, at least 6 (3 points)" if n > 4 else
                f"{len(vals)} value{'s' * (len(vals) != 1)}, expected class cx cy w h "
                "(or class x1 y1 x2 y2 x3 y3 … for a polygon)")
    c = vals[0]
    if c != int(c) or not 0 <= c < nc:
        return f"class {c:g} is not in 0…{nc - 1}"
    if n == 4:
        box = vals[1:]
        if not all(0 <= v <= 1 for v in box) or box[2] <= 0 or box[3] <= 0:
            return "coordinates outside [0, 1], or a box of no width or height"
    else:
        box = polygon_box(vals[1:])
        if box[2] <= 0 or box[3] <= 0:
            return "a polygon with no area inside the image"
    return [c, *box]


def _parse_labels(path: Path, nc: int) -> tuple[torch.Tensor | None, str | None]:
    text, why = read_label_text(path)
    if text is None:
        return None, why
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        row = label_row(line.split(), nc)
        if isinstance(row, str):
            return None, f"line {i}: {row}"
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 5).unique(dim=0), None


def orphan_labels(sources: list[Path], images: list[Path]) -> list[Path]:
    """Label files that no image of the split claims, in the label folders of its image
    folders (a .txt list may name part of a folder, so its folders are not searched; nor
    is a folder where labels sit beside their images, whose other .txt files may be anything)."""
    folders = [s for s in sources if s.is_dir()]
    claimed = {label_file(p) for p in images}
    beside = {p.parent for p in images}
    dirs = {label_file(p).parent for p in images if any(p.is_relative_to(f) for f in folders)} - beside
    return sorted(q for d in dirs if d.is_dir() for q in d.glob("*.txt") if q not in claimed)


def fingerprint(files: Iterable[Path], salt: str) -> str:
    """A key that changes when any of ``files`` changes (size, time, or presence)."""
    h = hashlib.sha256(f"{CACHE_VERSION}:{salt}".encode())
    for q in files:
        try:
            st = q.stat()
            h.update(f"{q}:{st.st_size}:{st.st_mtime_ns}".encode())
        except OSError:
            h.update(f"{q}:missing".encode())
    return h.hexdigest()


def cached(cache: Path | None, key: str, build: Callable[[], tuple[Scan, list[str]]],
           nc: int | None = None) -> tuple[Scan, list[str]]:
    """``build()``'s scan and class names, or the cache's when it was made for ``key``.

    The cache holds only strings, integers and tensors. It came with the dataset, so it is read as
    any foreign checkpoint is (:func:`gelanc.safeload.read`) and used only when its
    structure is exactly what :func:`cached` writes; a stale, broken, hostile or
    unwritable one is simply rebuilt or skipped."""
    if cache is not None and cache.is_file():
        found = _read_cache(cache, key, nc)
        if found is not None:
            return found
    out, names = build()
    if cache is not None:
        from gelanc.atomic import atomic_save

        entry = {"key": key, "images": [str(p) for p in out.images], "labels": out.labels, "problems": out.problems,
                 "counts": out.counts, "names": list(names)}
        try:
            atomic_save(entry, cache)
        except OSError:
            pass  # a read-only dataset: no cache, scan again next time
    return out, names


def _read_cache(cache: Path, key: str, nc: int | None) -> tuple[Scan, list[str]] | None:
    """The cache's scan if it is exactly what :func:`cached` writes, its labels valid
    for ``nc`` classes (or as many as it names); else None."""
    from gelanc.safeload import CheckpointError
    from gelanc.safeload import read as safe_read

    try:
        c = safe_read(cache)
    except CheckpointError:
        return None
    if not (isinstance(c, dict) and c.get("key") == key):
        return None
    images, labels, problems, names = c.get("images"), c.get("labels"), c.get("problems"), c.get("names")
    counts = c.get("counts")
    ok = (isinstance(images, list) and all(isinstance(p, str) for p in images)
          and isinstance(labels, list) and len(labels) == len(images)
          and all(isinstance(t, torch.Tensor) and t.dtype == torch.float32 and t.dim() == 2 and t.shape[1] == 5
                  and bool(torch.isfinite(t).all()) for t in labels)
          and isinstance(problems, dict) and all(isinstance(k, str) and isinstance(v, list)
                                                 and all(isinstance(i, str) for i in v) for k, v in problems.items())
          and isinstance(counts, dict) and all(isinstance(k, str) and type(v) is int for k, v in counts.items())
          and isinstance(names, list) and all(isinstance(n, str) for n in names))
    if not ok or not all(_labels_valid(t, nc if nc is not None else len(names)) for t in labels):
        return None
    return Scan([Path(p) for p in images], list(labels), dict(problems), dict(counts)), list(names)


def _labels_valid(t: torch.Tensor, nc: int) -> bool:
    c, box = t[:, 0], t[:, 1:]
    return bool((c == c.round()).all() and (c >= 0).all() and (c < nc).all()
                and (box >= 0).all() and (box <= 1).all())


def scan(images: list[Path], nc: int, cache: Path | None = None) -> Scan:
    """Check every image and label file (or reuse the cache when nothing changed)."""
    key = fingerprint((q for p in images for q in (p, label_file(p))), str(nc))  # no list of 2 paths an image
    return cached(cache, key, lambda: (_scan(images, nc), []), nc)[0]


def _scan(images: list[Path], nc: int) -> Scan:
    out = Scan()
    for img in images:
        bad = check_image(img)
        if bad:
            out.note("corrupt images", f"{img.name}: {bad}")
            continue
        lf = label_file(img)
        if not lf.exists():  # a FIFO or a folder exists, and is a bad label file
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
    sources = cfg.split(which, root)
    images = image_files(sources)
    found = scan(images, cfg.nc, cache=cache_file(images))
    for q in orphan_labels(sources, images):  # not cached: a label file added later is no key of the cache
        found.note(ORPHANS, q.name)
    return found, list(cfg.names)


def check_out_folder(out: Path, scans: Iterable[Scan]) -> None:
    """A DataError when the run folder ``out`` (resolved) is a folder that holds the
    dataset's images or label files: every epoch writes its files (results.png, …) there,
    and one of them could replace an image or a label file of the same name.

    Cheap: only the distinct folders of the scanned images are resolved, not each image."""
    target = Path(out).resolve()
    folders = {p.parent for s in scans for p in s.images}
    for folder in folders:
        labels = label_file(folder / "image.png").parent  # where label_file puts this folder's labels
        for kind, f in (("images", folder), ("label files", labels)):
            if f.resolve() == target:
                raise DataError(f"--out {out}: that is the folder of the dataset's {kind} {f}, and a run "
                                "writes its own files there (last.pt, results.png, …); choose another --out")


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


class Sample(NamedTuple):
    """One sample of :class:`YoloDataset` or :class:`gelanc.data.augment.AugmentedDataset`.

    ``image`` is None when the sample's own image could not be decoded; ``skipped``
    holds (path, why) of every image the sample needed and could not decode."""

    image: torch.Tensor | None  # (3, S, S) uint8
    labels: torch.Tensor | None  # (n, 5) class cx cy w h, normalised to the canvas
    path: str
    skipped: tuple[tuple[str, str], ...] = ()


def unreadable(path: Path | str, why: ImageError | str, also: Iterable[tuple[str, str]] = ()) -> Sample:
    """The sample of an image that could not be decoded."""
    return Sample(None, None, str(path), ((str(path), str(why)), *also))


class YoloDataset(Dataset):
    """Letterboxed images and their labels, from a scanned split."""

    def __init__(self, split: Scan, size: int):
        self.split, self.size = split, size

    def __len__(self) -> int:
        return len(self.split.images)

    def __getitem__(self, i: int) -> Sample:
        path, labels = self.split.images[i], self.split.labels[i]
        try:
            image = read_rgb(path)
        except ImageError as e:
            return unreadable(path, e)
        image, boxes = letterbox(image, labels[:, 1:], self.size)
        return Sample(image, torch.cat([labels[:, :1], boxes], 1), str(path))


class Batch(NamedTuple):
    """Images (B, 3, S, S) uint8, targets (N, 6): image index, class, cx, cy, w, h; the
    images' paths; and (path, why) of the images its samples could not decode."""

    images: torch.Tensor
    targets: torch.Tensor
    paths: list[str]
    skipped: list[tuple[str, str]]


def collate(batch: list[Sample]) -> Batch:
    """The batch of the samples that have an image (B may be 0: every image failed)."""
    kept = [s for s in batch if s.image is not None]
    targets = [torch.cat([torch.full((len(s.labels), 1), float(i)), s.labels], 1) for i, s in enumerate(kept)]
    images = torch.stack([s.image for s in kept]) if kept else torch.zeros(0, 3, 0, 0, dtype=torch.uint8)
    return Batch(images, torch.cat(targets) if targets else torch.zeros(0, 6), [s.path for s in kept],
                 [f for s in batch for f in s.skipped])


def skipped_note(failures: Iterable[tuple[str, str]], limit: int = 3) -> str:
    """'' when nothing was skipped; else a line naming the first ``limit`` files (and why),
    then how many more."""
    first: dict[str, str] = {}
    for path, why in failures:
        first.setdefault(path, why)
    if not first:
        return ""
    named = [f"{Path(p).name} ({why})" for p, why in list(first.items())[:limit]]
    more = f" and {len(first) - limit} more" if len(first) > limit else ""
    n = len(first)
    return f"{n} image{'s' * (n != 1)} could not be decoded and {'were' if n != 1 else 'was'} skipped: " \
           + ", ".join(named) + more
