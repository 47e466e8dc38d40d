"""The built-in synthetic dataset: coloured shapes on textured backgrounds.

Every image is drawn from a seed alone, so the same seed gives the same bytes, and
every label is exact: each object's box is computed from the pixels of its own mask,
and objects never overlap, so no box is hidden in part. The set is written in YOLO
format with its data.yaml (see :mod:`gelanc.data.config`), so it trains like any
user dataset.

``hard=True`` draws a harder set for benchmarks: a fifth class (a cross), up to 12
objects of 2–15 % of the image (small ones included), objects that overlap and hide
each other (each box is that of its *visible* pixels; an object less than 40 % visible
is left unlabelled and stays as clutter), shaded objects, clutter that belongs to no
class (bars, rings, blobs), and stronger noise.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

CLASSES = ("circle", "square", "triangle", "diamond")
HARD_CLASSES = (*CLASSES, "cross")
VISIBLE = 0.4  # the least visible fraction of an object that the hard set still labels


def _background(gen: torch.Generator, h: int, w: int) -> torch.Tensor:
    """A smooth random colour field, a gradient and grain: texture the detector must ignore."""
    low = torch.rand(1, 3, 5, 5, generator=gen)
    field = F.interpolate(low, size=(h, w), mode="bicubic", align_corners=False)[0]
    ramp = torch.linspace(0, 1, w).view(1, 1, w).expand(3, h, w) * torch.rand(3, 1, 1, generator=gen)
    grain = torch.rand(3, h, w, generator=gen) * 0.12
    return (0.65 * field + 0.25 * ramp + grain).clamp(0, 1)


def _mask(kind: str, cx: float, cy: float, s: float, h: int, w: int) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    dx, dy = xx - cx, yy - cy
    if kind == "circle":
        return dx * dx + dy * dy <= s * s
    if kind == "square":
        return (dx.abs() <= s) & (dy.abs() <= s)
    if kind == "diamond":
        return dx.abs() + dy.abs() <= s
    if kind == "cross":
        return ((dx.abs() <= s / 3) & (dy.abs() <= s)) | ((dy.abs() <= s / 3) & (dx.abs() <= s))
    if kind == "ring":  # clutter: no class
        r2 = dx * dx + dy * dy
        return (r2 <= s * s) & (r2 >= (0.6 * s) ** 2)
    if kind == "bar":  # clutter: a thin bar, across or down
        return (dx.abs() <= s) & (dy.abs() <= s / 6)
    # triangle, apex up: half-width grows from 0 at the top to s at the base
    return (dy >= -s) & (dy <= s) & (dx.abs() <= (dy + s) / 2)


def _box(mask: torch.Tensor) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) in pixel edges of the mask's pixels."""
    ys, xs = mask.nonzero(as_tuple=True)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


Label = tuple[int, float, float, float, float]  # class, cx, cy, w, h — normalised to [0, 1]


def draw(seed: int, size: int = 320, max_objects: int = 6, hard: bool = False) -> tuple[torch.Tensor, list[Label]]:
    """One image (3, size, size) uint8 and its labels (``hard``: the harder set's)."""
    if hard:
        return _draw_hard(seed, size)
    gen = torch.Generator().manual_seed(seed)
    img = _background(gen, size, size)
    boxes: list[tuple[int, int, int, int]] = []
    labels = []
    n = int(torch.randint(1, max_objects + 1, (1,), generator=gen))
    for _ in range(n):
        for _attempt in range(30):
            cls = int(torch.randint(len(CLASSES), (1,), generator=gen))
            s = float(size * (0.05 + 0.10 * torch.rand(1, generator=gen)))
            cx, cy = (float(v) for v in s + (size - 2 * s) * torch.rand(2, generator=gen))
            mask = _mask(CLASSES[cls], cx, cy, s, size, size)
            box = _box(mask)
            if box is None or any(_near(box, b, margin=3) for b in boxes):
                continue
            colour = torch.rand(3, generator=gen)
            colour = colour / colour.max().clamp_min(1e-6)  # saturated: one channel at full brightness
            img = torch.where(mask, colour.view(3, 1, 1) * (0.85 + 0.15 * torch.rand(1, generator=gen)), img)
            boxes.append(box)
            x0, y0, x1, y1 = box
            labels.append((cls, (x0 + x1) / 2 / size, (y0 + y1) / 2 / size, (x1 - x0) / size, (y1 - y0) / size))
            break
    return (img * 255).round().to(torch.uint8), labels


def _colour(gen: torch.Generator) -> torch.Tensor:
    c = torch.rand(3, generator=gen)
    return c / c.max().clamp_min(1e-6)  # saturated: one channel at full brightness


def _draw_hard(seed: int, size: int, max_objects: int = 12) -> tuple[torch.Tensor, list[Label]]:
    """The harder set's image and labels: objects painted in order, each hiding what is under
    it; labels from what stays visible."""
    gen = torch.Generator().manual_seed(seed)
    img = _background(gen, size, size)
    yy = torch.linspace(0, 1, size).view(1, size, 1)
    owner = torch.full((size, size), -1, dtype=torch.long)  # which painted shape each pixel shows
    painted: list[tuple[int, torch.Tensor]] = []  # (class or -1 for clutter, full mask)
    n = int(torch.randint(2, max_objects + 1, (1,), generator=gen))
    clutter = int(torch.randint(1, 5, (1,), generator=gen))
    order = torch.randperm(n + clutter, generator=gen).tolist()
    for k in order:
        is_clutter = k >= n
        kind = ["ring", "bar", "circle"][int(torch.randint(3, (1,), generator=gen))] if is_clutter else None
        cls = -1 if is_clutter else int(torch.randint(len(HARD_CLASSES), (1,), generator=gen))
        s = float(size * (0.02 + 0.13 * torch.rand(1, generator=gen) ** 1.5))  # small objects are common
        cx, cy = (float(v) for v in s + (size - 2 * s) * torch.rand(2, generator=gen))
        mask = _mask(kind or HARD_CLASSES[cls], cx, cy, s, size, size)
        if is_clutter and kind == "circle":  # a blob: a soft-edged disc of a dull colour, no class
            colour = torch.rand(3, generator=gen) * 0.6
        else:
            colour = _colour(gen)
        shade = 0.7 + 0.3 * (yy if torch.rand(1, generator=gen) < 0.5 else 1 - yy)  # lit from above or below
        img = torch.where(mask, (colour.view(3, 1, 1) * shade).expand(3, size, size), img)
        owner[mask] = len(painted)
        painted.append((cls, mask))
    noise = torch.randn(3, size, size, generator=gen) * 0.06
    img = (img + noise).clamp(0, 1)
    labels = []
    for i, (cls, mask) in enumerate(painted):
        if cls < 0:
            continue
        visible = owner == i
        if int(visible.sum()) < VISIBLE * int(mask.sum()) or int(visible.sum()) < 4:
            continue  # mostly hidden: clutter now, as a person labelling the picture would leave it
        x0, y0, x1, y1 = _box(visible)
        labels.append((cls, (x0 + x1) / 2 / size, (y0 + y1) / 2 / size, (x1 - x0) / size, (y1 - y0) / size))
    return (img * 255).round().to(torch.uint8), labels


def _near(a, b, margin: int) -> bool:
    return not (a[2] + margin <= b[0] or b[2] + margin <= a[0] or a[3] + margin <= b[1] or b[3] + margin <= a[1])


def write(out: str | Path, images: int = 512, val: int = 64, size: int = 320, seed: int = 0,
          progress: Callable[[int, int], None] | None = None, hard: bool = False) -> Path:
    """Write the dataset to ``out`` (which must not exist or be empty); returns its data.yaml.

    It is built in a temporary folder beside ``out`` and renamed into place at the end,
    so an interrupted run leaves nothing half-written."""
    from torchvision.io import encode_png

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        total = images + val
        for i in range(total):
            split = "train" if i < images else "val"
            img, labels = draw(seed * 1_000_003 + i, size, hard=hard)
            (tmp / "images" / split).mkdir(parents=True, exist_ok=True)
            (tmp / "labels" / split).mkdir(parents=True, exist_ok=True)
            # encoded here and written by Python: a full disk is an OSError, not a C++ writer's RuntimeError
            (tmp / "images" / split / f"{i:06d}.png").write_bytes(encode_png(img).numpy().tobytes())
            (tmp / "labels" / split / f"{i:06d}.txt").write_text(
                "".join(f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, x, y, w, h in labels))
            if progress:
                progress(i + 1, total)
        meta = {"train": "images/train", "val": "images/val", "names": list(HARD_CLASSES if hard else CLASSES),
                "synthetic": {"images": images, "val": val, "imgsz": size, "seed": seed, "hard": hard}}
        (tmp / "data.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / "data.yaml"
