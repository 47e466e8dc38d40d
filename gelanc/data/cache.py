"""Training images decoded once, kept in memory at the training size.

Decoding is about a third of the CPU time of an augmented sample — a mosaic decodes
four images, a mixup eight — and it is the same work every epoch. The cache decodes
each training image once, resized as the augmentation loads it (its longer side the
training size), into one buffer. The data-loading processes are forked from the
trainer, so they read that buffer without a copy; where workers would be started
otherwise (spawn, forkserver), each would receive a copy of its own, so the cache is
not made there.

``--cache auto`` (the default) caches when the buffer takes under a quarter of the
memory available (for each process of the run: under DDP each holds its own);
``ram`` whenever it takes under a half; ``off`` never.
An image that cannot be decoded is not cached: the augmentation decodes it again when
it is drawn, and reports it as it would without the cache.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from gelanc.data.image import ImageError, open_file, open_header

# the share of the available memory a cache may take: ``auto`` a quarter; ``ram`` (asked for)
# a half — the rest is the run's own (activations, the workers' batches) and the machine's
SHARE = {"auto": 4, "ram": 2}


def resized_shape(h: int, w: int, size: int) -> tuple[int, int]:
    """(h, w) of an image whose longer side is scaled to ``size`` (as the augmentation loads it)."""
    r = size / max(h, w)
    return max(1, round(h * r)), max(1, round(w * r))


def header_bytes(path: Path, size: int) -> int:
    """Bytes of the image at ``path`` decoded and resized to ``size``, from its header alone
    (0 for an image whose header cannot be read: it will not be cached)."""
    try:
        f, n = open_file(path)
        with f:
            w, h = open_header(f, n).size
    except (ImageError, OSError, ValueError):
        return 0
    rh, rw = resized_shape(h, w, size)  # an EXIF turn swaps h and w, not their product
    return 3 * rh * rw


def available_memory() -> int:
    """Bytes of memory available to a new allocation (Linux's MemAvailable; else free pages)."""
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


class ImageCache:
    """Each image's pixels — (3, h, w) uint8 — in one buffer; ``None`` for one not cached."""

    def __init__(self, buffer: torch.Tensor, slots: list[tuple[int, int, int] | None]):
        self.buffer = buffer
        self.slots = slots  # per image: (offset, h, w), or None

    @property
    def nbytes(self) -> int:
        return self.buffer.numel()

    def get(self, i: int) -> torch.Tensor | None:
        """Image i's pixels (a view: do not write to it), or None when it is not cached."""
        slot = self.slots[i]
        if slot is None:
            return None
        offset, h, w = slot
        return self.buffer[offset:offset + 3 * h * w].view(3, h, w)

    @classmethod
    def fill(cls, images: list[Path], sizes: list[int], decode: Callable[[int], torch.Tensor],
             progress: Callable[[Iterable[int]], Iterable[int]] = iter) -> ImageCache:
        """Decode every image (``decode(i)``: (3, h, w) uint8 at the training size, or an
        ImageError) into slots of the ``sizes`` bytes its header announced."""
        buffer = torch.empty(sum(sizes), dtype=torch.uint8)
        slots: list[tuple[int, int, int] | None] = []
        offset = 0
        for i in progress(range(len(images))):
            slot = None
            if sizes[i]:
                try:
                    image = decode(i)
                except ImageError:
                    image = None
                # a file changed since its header was read: left to the augmentation
                if image is not None and image.numel() == sizes[i]:
                    _, h, w = image.shape
                    buffer[offset:offset + sizes[i]] = image.reshape(-1)
                    slot = (offset, h, w)
            slots.append(slot)
            offset += sizes[i]
        return cls(buffer, slots)


def plan(mode: str, images: list[Path], size: int, processes: int, workers: int) -> tuple[list[int] | None, str]:
    """Whether to cache: each image's bytes when it does (None when not), and a line that says
    what it decided and why."""
    if mode == "off":
        return None, "image cache: off"
    method = multiprocessing.get_start_method(allow_none=True) or multiprocessing.get_start_method()
    if workers and method != "fork":
        return None, f"image cache: off (data workers start by {method}, each would hold a copy)"
    have = available_memory()
    budget = have // SHARE[mode] // max(1, processes)
    sizes: list[int] = []
    total = 0
    for p in images:  # headers only, and no further than the budget: a large dataset stops early
        sizes.append(header_bytes(p, size))
        total += sizes[-1]
        if total > budget:
            return None, (f"image cache: off (the images at {size} px take over {budget / 2**30:.1f} GB, "
                          f"1/{SHARE[mode]} of the {have / 2**30:.1f} GB available"
                          + (f" over {processes} processes)" if processes > 1 else ")"))
    return sizes, f"image cache: {len(images)} images, {total / 2**20:.0f} MB in memory"
