"""The built-in synthetic dataset: coloured shapes on textured backgrounds.

Every image is drawn from a seed alone, so the same seed gives the same bytes, and
every label is exact: each object's box is computed from the pixels of its own mask,
and objects never overlap, so no box is hidden in part. The set is written in YOLO
format with its data.yaml (see :mod:`gelanc.data.config`), so it trains like any
user dataset.
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
    # triangle, apex up: half-width grows from 0 at the top to s at the base
    return (dy >= -s) & (dy <= s) & (dx.abs() <= (dy + s) / 2)


def _box(mask: torch.Tensor) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) in pixel edges of the mask's pixels."""
    ys, xs = mask.nonzero(as_tuple=True)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


Label = tuple[int, float, float, float, float]  # class, cx, cy, w, h — normalised to [0, 1]


def draw(seed: int, size: int = 320, max_objects: int = 6) -> tuple[torch.Tensor, list[Label]]:
    """One image (3, size, size) uint8 and its labels."""
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


def _near(a, b, margin: int) -> bool:
    return not (a[2] + margin <= b[0] or b[2] + margin <= a[0] or a[3] + margin <= b[1] or b[3] + margin <= a[1])


def write(out: str | Path, images: int = 512, val: int = 64, size: int = 320, seed: int = 0,
          progress: Callable[[int, int], None] | None = None) -> Path:
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
            img, labels = draw(seed * 1_000_003 + i, size)
            (tmp / "images" / split).mkdir(parents=True, exist_ok=True)
            (tmp / "labels" / split).mkdir(parents=True, exist_ok=True)
            # encoded here and written by Python: a full disk is an OSError, not a C++ writer's RuntimeError
            (tmp / "images" / split / f"{i:06d}.png").write_bytes(encode_png(img).numpy().tobytes())
            (tmp / "labels" / split / f"{i:06d}.txt").write_text(
                "".join(f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, x, y, w, h in labels))
            if progress:
                progress(i + 1, total)
        meta = {"train": "images/train", "val": "images/val", "names": list(CLASSES),
                "synthetic": {"images": images, "val": val, "imgsz": size, "seed": seed}}
        (tmp / "data.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / "data.yaml"
