"""Setting a run up: its data (the built-in synthetic set by default, scanned and
checked before training), its run folder's name, data-loading workers, the image
cache, mixed precision and deterministic mode."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gelanc.train import ddp
from gelanc.train.args import TrainArgs
from gelanc.train.ddp import log


@dataclass
class Data:
    """A dataset ready to load: class names and the two scanned splits."""

    names: list[str]
    train: Any  # gelanc.data.dataset.Scan
    val: Any
    yaml: Path


def default_data(w: ddp.World) -> Path:
    """The built-in synthetic set (drawn once, then reused from the cache folder)."""
    from gelanc.data.synth import write

    root = Path(os.environ.get("GELANC_HOME", Path.home() / ".cache" / "gelanc"))
    folder = root / "synth-512-64-320-seed0"
    if w.main and not (folder / "data.yaml").is_file():
        log(w, f"drawing the built-in synthetic dataset into {folder} (once)…")
        write(folder, images=512, val=64, size=320, seed=0)
    ddp.barrier(w)
    return folder / "data.yaml"


def load_data(path: Path, w: ddp.World) -> Data:
    """Read data.yaml, find and check every image and label (rank 0 scans and caches,
    the others read the cache); report the problems found before training."""
    from gelanc.data.config import DataError, load_data_config
    from gelanc.data.dataset import load_split

    cfg = load_data_config(path)
    root = path.resolve().parent
    splits, names = {}, {}
    for which in ("train", "val"):
        if w.main:
            splits[which], names[which] = load_split(cfg, which, root)
            log(w, f"{which}: {splits[which].report()}")
        ddp.barrier(w)
        if not w.main:
            splits[which], names[which] = load_split(cfg, which, root)
        if not splits[which].images:
            raise DataError(f"{path}: the {which} split has no usable images")
    if names["train"] != names["val"]:
        raise DataError(f"{path}: the train and val splits name different classes")
    return Data(names["train"], splits["train"], splits["val"], path)


def amp_dtype(device: torch.device, amp: str) -> torch.dtype | None:
    """bf16 where the GPU has it, fp16 otherwise; no autocast on CPU."""
    if device.type != "cuda" or amp == "off":
        return None
    if amp == "fp16" or (amp == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16


def run_dir(args: TrainArgs, model: str) -> Path:
    """``--out``, or runs/train/MODEL, MODEL2, … — never another run's folder."""
    if args.out:
        return Path(args.out)
    base = Path("runs") / "train" / model
    out, n = base, 2
    while out.exists():
        out, n = base.with_name(f"{model}{n}"), n + 1
    return out


@contextlib.contextmanager
def deterministic(on: bool):
    """Deterministic algorithms for the run (exact resume), as they were afterwards.

    Off, it touches nothing: ``use_deterministic_algorithms`` imports torch's compiler
    stack on first call (a second of imports), which a Ctrl-C in a ``finally`` would cut
    short and leave half-imported."""
    if not on:
        yield
        return
    before = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.benchmark = before[1]


def default_workers(batch_per_rank: int, ranks: int) -> int:
    """Data-loading processes per rank: min(8, the CPUs this process may use ÷ ranks, the
    batch). More processes than cores only take turns (8 on 2 cores made an epoch 3×
    slower than 2), and more than the batch have nothing to load."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity on macOS and Windows
        cpus = os.cpu_count() or 1
    return max(0, min(8, cpus // max(ranks, 1), batch_per_rank))


def image_cache(train_set, args: TrainArgs, w: ddp.World, workers: int):
    """The training images decoded once (:mod:`gelanc.data.cache`), or None; the decision is logged."""
    from gelanc.data.cache import ImageCache, plan

    images = train_set.split.images
    sizes, note = plan(args.cache, images, args.imgsz, w.size, workers)
    cache = None
    if sizes is not None:
        progress = iter
        if w.main and args.progress:
            from tqdm import tqdm

            progress = functools.partial(tqdm, desc="caching images", unit="image", leave=False, file=sys.stderr,
                                         dynamic_ncols=True)
        cache = ImageCache.fill(images, sizes, train_set.resized, progress)
    log(w, note)
    return cache
