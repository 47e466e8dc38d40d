"""The training loop: the reference's train_dual.py for any compiled `.gel` model.

One function, :func:`train`, runs in every process of a run (one, or one per GPU
under torchrun). Each epoch: the augmented, shuffled split (a
``DistributedSampler``, also with one process, so the order depends on the seed and
the epoch alone), forward in mixed precision on CUDA, the TAL loss, gradients
accumulated to the nominal batch, clipped, an SGD step and an EMA update; then rank 0
validates the EMA's deploy graph and writes ``last.pt``, ``best.pt``, ``results.csv``
and ``results.png``.

Resuming is exact: augmentation draws from (seed, epoch, index), the sample order from
(seed, epoch), and every epoch ends on an optimizer step — no gradient is carried
across a checkpoint — so a run resumed from ``last.pt`` reaches the weights an
uninterrupted run reaches (in deterministic mode on the same device).
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from gelanc.train import ddp
from gelanc.train.hyp import Hyp

CKPT_KEY = "train"  # the checkpoint's extra entry holding what resuming needs


class TrainArgs(BaseModel):
    """A run's settings, as given on the command line; stored in every checkpoint."""

    model_config = ConfigDict(extra="forbid")
    spec: str
    data: str | None = None
    epochs: int = Field(100, ge=1)
    imgsz: int = Field(640, ge=32)
    batch: int = Field(16, ge=1)
    device: str | None = None
    workers: int = Field(8, ge=0)
    out: str | None = None
    seed: int = 0
    hyp: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    deterministic: bool = False
    sync_bn: bool = False
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    val: Literal["deploy", "train"] = "deploy"
    progress: bool = True


class TrainError(Exception):
    """A run that cannot start as asked (a user error: exit 2)."""


@dataclass
class Data:
    """A dataset ready to load: class names and the two scanned splits."""

    names: list[str]
    train: Any  # gelanc.data.dataset.Scan
    val: Any
    yaml: Path


# ---- setting up ---------------------------------------------------------------------


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


def log(w: ddp.World, msg: str) -> None:
    if w.main:
        print(msg, file=sys.stderr, flush=True)


@contextlib.contextmanager
def deterministic(on: bool):
    """Deterministic algorithms for the run (exact resume), as they were afterwards."""
    before = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.benchmark = before[1]


# ---- one epoch ----------------------------------------------------------------------


@dataclass
class State:
    """What changes while training, and what a checkpoint must keep to resume."""

    epoch: int = 0  # epochs finished
    iteration: int = 0  # batches seen, over the whole run (drives the warmup)
    best_fitness: float = -1.0
    rows: list[dict[str, float]] | None = None


def fitness(metrics: dict) -> float:
    """The reference's model selection: 0.1 · mAP@0.5 + 0.9 · mAP@0.5:0.95."""
    return 0.1 * metrics["map50"] + 0.9 * metrics["map"]


def train_epoch(model, ema, loss_fn, opt, scaler, loader, state: State, args: TrainArgs, hyp: Hyp,
                device, amp, w: ddp.World) -> dict[str, float]:
    """One pass over the split; returns the mean loss terms, images/s and the learning rates."""
    from gelanc.train.optim import set_schedule, warmup_iterations
    from gelanc.train.val import autocast

    model.train()
    nb = len(loader)
    warmup = warmup_iterations(nb, hyp)
    sums = torch.zeros(3)
    seen, t0 = 0, time.perf_counter()
    pending = 0  # batches whose gradients are waiting for a step
    bar = loader
    if w.main and args.progress:
        from tqdm import tqdm

        bar = tqdm(loader, desc=f"epoch {state.epoch + 1}/{args.epochs}", unit="batch", dynamic_ncols=True,
                   file=sys.stderr, mininterval=0.5 if sys.stderr.isatty() else 30)
    opt.zero_grad(set_to_none=True)
    for i, (imgs, targets, _) in enumerate(bar):
        accumulate = set_schedule(opt, state.iteration, state.epoch, args.epochs, warmup, args.batch, hyp)
        x = imgs.to(device, non_blocking=True).float() / 255
        with autocast(device, amp):
            preds = model(x)
        loss, items = loss_fn(preds, targets.to(device))
        if w.distributed:
            loss = loss * w.size  # DDP averages gradients over processes; the loss is a sum over images
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the loss is {float(loss)} at epoch {state.epoch + 1}, batch {i + 1}")
        scaler.scale(loss).backward()
        pending += 1
        state.iteration += 1
        if pending >= accumulate or i == nb - 1:  # every epoch ends on a step: nothing carried over
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(model.parameters(), max_norm=hyp.clip_grad)
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            ema.update_parameters(unwrap(model))
            pending = 0
        sums += items.detach().float().cpu()
        seen += len(imgs)
        if bar is not loader:
            mean = sums / (i + 1)
            bar.set_postfix_str(f"box {mean[0]:.3f} cls {mean[1]:.3f} dfl {mean[2]:.3f} "
                                f"{seen * w.size / (time.perf_counter() - t0):.1f} img/s", refresh=False)
    mean = sums / max(nb, 1)
    out = {"train/box_loss": float(mean[0]), "train/cls_loss": float(mean[1]), "train/dfl_loss": float(mean[2]),
           "images_per_s": seen * w.size / (time.perf_counter() - t0)}
    out.update({f"lr/{name}": g["lr"] for name, g in zip(("bias", "bn", "weights"), opt.param_groups)})
    return out


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


# ---- checkpoints --------------------------------------------------------------------


def save_checkpoint(path: Path, model, ema, opt, scaler, state: State, args: TrainArgs, hyp: Hyp,
                    names: list[str], metrics: dict) -> None:
    """``state_dict`` holds the EMA's weights — the model a user deploys; ``train``
    holds what resuming needs besides."""
    from gelanc.checkpoint import save

    raw = unwrap(model)
    save(ema.module, path, names=list(names), metrics=metrics, **{CKPT_KEY: {
        "model": {k: v.detach().cpu() for k, v in raw.state_dict().items()},
        "ema_updates": int(ema.n_averaged),
        "optimizer": opt.state_dict(),
        "scaler": scaler.state_dict(),
        "epoch": state.epoch,
        "iteration": state.iteration,
        "best_fitness": state.best_fitness,
        "rows": state.rows or [],
        "args": args.model_dump(mode="json"),
        "hyp": hyp.model_dump(),
    }})


def resume_args(path: Path, **changes) -> TrainArgs:
    """The settings of the run ``path`` (a last.pt) was saved by, with ``changes``."""
    from gelanc.checkpoint import CheckpointError, read

    ckpt = read(path)
    if CKPT_KEY not in ckpt:
        raise CheckpointError(f"{path} holds no training state (a checkpoint from gelanc build or export?)")
    saved = dict(ckpt[CKPT_KEY]["args"])
    saved.update({k: v for k, v in changes.items() if v is not None})
    saved["out"] = saved.get("out") or str(path.parent)
    return TrainArgs.model_validate(saved)


# ---- the run ------------------------------------------------------------------------


@dataclass
class Run:
    """What a run leaves in this process: its summary, the trained model and its EMA."""

    summary: dict
    model: nn.Module
    ema: nn.Module


def train(args: TrainArgs, resume: Path | None = None) -> Run:
    """Train as ``args`` say (continuing ``resume``'s run if given).

    Runs in every process of a torchrun launch; rank 0 alone prints and writes."""
    try:
        w, device = ddp.setup(*ddp.parse_device(args.device))
    except ValueError as e:  # a device this machine does not have
        raise TrainError(str(e)) from None
    try:
        with deterministic(args.deterministic):
            run = _train(args, resume, w, device)
    except BaseException:
        ddp.teardown(finished=False)
        raise
    ddp.teardown(finished=True)
    return run


def _build_model(args: TrainArgs, nc: int, resume_ckpt: dict | None):
    import gelanc
    from gelanc.checkpoint import load
    from gelanc.torch_fx import heads

    if resume_ckpt is not None:
        model = load(resume_ckpt["path"])  # rebuilt from the embedded source
        model.load_state_dict(resume_ckpt[CKPT_KEY]["model"])
    else:
        torch.manual_seed(args.seed)
        model = gelanc.compile(args.spec, **{"nc": nc, **args.params})
    hs = heads(model)
    if not hs:
        raise TrainError(f"{args.spec}: the model has no detection head to train")
    if hs[0].nc != nc:
        raise TrainError(f"{args.spec}: the model detects {hs[0].nc} classes but the data has {nc} "
                         f"(its nc parameter must follow the data; drop --set nc=…)")
    return model, hs


def _train(args: TrainArgs, resume: Path | None, w: ddp.World, device: torch.device) -> Run:
    from gelanc.atomic import atomic_write
    from gelanc.checkpoint import read
    from gelanc.data.augment import AugmentedDataset
    from gelanc.data.dataset import YoloDataset, collate
    from gelanc.passes.shapes import check_size
    from gelanc.train import results
    from gelanc.train.loss import DetectionLoss
    from gelanc.train.optim import make_ema, make_optimizer

    hyp = Hyp.model_validate(args.hyp)
    if args.batch % w.size:
        raise TrainError(f"--batch {args.batch} does not split evenly over {w.size} processes")
    if args.sync_bn and device.type != "cuda":
        raise TrainError("--sync-bn needs CUDA (torch's SyncBatchNorm does not run on CPU)")

    data_path = Path(args.data) if args.data else default_data(w)
    data = load_data(data_path, w)
    ckpt = None
    if resume is not None:
        ckpt = read(resume)
        ckpt["path"] = resume
    model, hs = _build_model(args, len(data.names), ckpt)
    ir = model.meta["gelanc"]["ir"]
    check_size(ir, (args.imgsz, args.imgsz))  # a size the network is not built for: a located error
    name = ir.graph["model"]
    out = Path(args.out) if args.out else run_dir(args, name)
    out = Path(ddp.broadcast(str(out), w))

    model.to(device)
    ema = make_ema(model, hyp)
    if args.sync_bn and w.distributed:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if w.distributed:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = make_optimizer(unwrap(model), args.batch, hyp)
    amp = amp_dtype(device, args.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=amp is torch.float16)
    loss_fn = DetectionLoss(hs[0].nc, hs[0].reg_max, hs[0].strides, hyp)

    state = State(rows=[])
    if ckpt is not None:
        t = ckpt[CKPT_KEY]
        ema.module.load_state_dict(ckpt["state_dict"])
        ema.n_averaged.fill_(t["ema_updates"])
        opt.load_state_dict(t["optimizer"])
        scaler.load_state_dict(t["scaler"])
        state = State(t["epoch"], t["iteration"], t["best_fitness"], [dict(r) for r in t["rows"]])
        log(w, f"resuming {resume} after epoch {state.epoch} of {args.epochs}")
        if state.epoch >= args.epochs:
            raise TrainError(f"{resume} already finished its {args.epochs} epochs (give --epochs more to go on)")

    per_rank = args.batch // w.size
    workers = min(args.workers, os.cpu_count() or 1)
    train_set = AugmentedDataset(data.train, args.imgsz, hyp, seed=args.seed)
    sampler = DistributedSampler(train_set, num_replicas=w.size, rank=w.rank, shuffle=True, seed=args.seed)
    loader = DataLoader(train_set, batch_size=per_rank, sampler=sampler, num_workers=workers,
                        collate_fn=collate, pin_memory=device.type == "cuda", drop_last=False)
    val_loader = DataLoader(YoloDataset(data.val, args.imgsz), batch_size=per_rank * 2, shuffle=False,
                            num_workers=workers, collate_fn=collate, pin_memory=device.type == "cuda")
    mosaic_epochs = hyp.mosaic_epochs(args.epochs)

    if w.main:
        out.mkdir(parents=True, exist_ok=True)
        n_params = sum(p.numel() for p in unwrap(model).parameters())
        precision = f" ({str(amp).removeprefix('torch.')})" if amp else ""
        log(w, f"training {name} ({n_params:,} parameters) on {data_path} — {len(data.names)} classes, "
               f"{len(train_set)} train / {len(data.val.images)} val images — {args.epochs} epochs at "
               f"{args.imgsz} px, batch {args.batch} on {w.size}× {device.type}"
               f"{precision}, saving to {out}")
    started, first_epoch = time.perf_counter(), state.epoch
    metrics: dict = {}
    try:
        while state.epoch < args.epochs:
            epoch_start = time.perf_counter()
            sampler.set_epoch(state.epoch)
            train_set.set_epoch(state.epoch)
            train_set.use_mosaic = state.epoch < mosaic_epochs
            row = {"epoch": state.epoch + 1}
            row.update(train_epoch(model, ema, loss_fn, opt, scaler, loader, state, args, hyp, device, amp, w))
            state.epoch += 1
            if w.main:
                metrics = validate(ema.module, args.val, val_loader, data.names, device, amp, args.progress)
                row.update({"metrics/mAP50": metrics["map50"], "metrics/mAP50-95": metrics["map"]})
                row["time_s"] = time.perf_counter() - epoch_start
                state.rows.append(row)
                f = fitness(metrics)
                best = f > state.best_fitness
                state.best_fitness = max(f, state.best_fitness)
                save_checkpoint(out / "last.pt", model, ema, opt, scaler, state, args, hyp, data.names, metrics)
                if best:
                    atomic_write(out / "best.pt", lambda tmp: shutil.copyfile(out / "last.pt", tmp))
                results.write_csv(out / "results.csv", state.rows)
                results.plot(out / "results.png", state.rows, title=f"{name} on {data_path.parent.name}")
                left = (time.perf_counter() - started) / (state.epoch - first_epoch) * (args.epochs - state.epoch)
                log(w, f"epoch {state.epoch}/{args.epochs}: mAP50 {metrics['map50']:.3f}  "
                       f"mAP50-95 {metrics['map']:.3f}  loss: box {row['train/box_loss']:.3f} "
                       f"cls {row['train/cls_loss']:.3f} dfl {row['train/dfl_loss']:.3f}  "
                       f"{row['images_per_s']:.1f} img/s  {row['time_s']:.0f} s{'  (best)' if best else ''}"
                       + (f"  ETA {_duration(left)}" if state.epoch < args.epochs else ""))
            ddp.barrier(w)
    except KeyboardInterrupt:
        if w.main and (out / "last.pt").is_file():
            log(w, f"interrupted; continue with: gelanc train --resume {out / 'last.pt'}")
        raise
    agree = ddp.replicas_agree(unwrap(model), w)
    if not agree:
        log(w, "gelanc: warning: the processes' weights differ at the end of the run (DDP replicas diverged)")
    summary = {"model": name, "out": str(out), "epochs": state.epoch, "imgsz": args.imgsz, "processes": w.size,
               "replicas_agree": agree,
               "seconds": time.perf_counter() - started, "last": str(out / "last.pt"), "best": str(out / "best.pt"),
               "best_fitness": state.best_fitness, "map50": metrics.get("map50"), "map": metrics.get("map")}
    if state.rows:
        best_row = max(state.rows, key=lambda r: fitness({"map50": r["metrics/mAP50"], "map": r["metrics/mAP50-95"]}))
        summary.update(best_epoch=int(best_row["epoch"]), best_map50=best_row["metrics/mAP50"],
                       best_map=best_row["metrics/mAP50-95"])
    return Run(summary, unwrap(model), ema.module)


def validate(ema_module, graph: str, loader, names, device, amp, progress) -> dict:
    """mAP of the EMA weights: on their deploy graph, or on the train graph's main head."""
    from gelanc.torch_fx import deploy_module
    from gelanc.train.val import evaluate

    if graph == "deploy":  # a module of its own: the fast path may convert it
        return evaluate(deploy_module(ema_module), loader, names, device, progress=progress, fast=True, compile=False)
    return evaluate(ema_module, loader, names, device, amp=amp, progress=progress)


def _duration(seconds: float) -> str:
    seconds = int(math.ceil(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
