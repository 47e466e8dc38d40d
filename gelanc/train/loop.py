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
import functools
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from gelanc.errors import UserError
from gelanc.limits import MAX_BATCH, MAX_IMGSZ, MAX_WORKERS
from gelanc.train import ddp
from gelanc.train.hyp import Hyp

CKPT_KEY = "train"  # the checkpoint's extra entry holding what resuming needs


class TrainArgs(BaseModel):
    """A run's settings, as given on the command line; stored in every checkpoint."""

    model_config = ConfigDict(extra="forbid")
    spec: str
    data: str | None = None
    epochs: int = Field(100, ge=1, le=1_000_000)
    imgsz: int = Field(640, ge=32, le=MAX_IMGSZ)
    batch: int = Field(16, ge=1, le=MAX_BATCH)
    device: str | None = None
    workers: int | None = Field(None, ge=0, le=MAX_WORKERS)  # None: min(8, usable CPUs per process, batch)
    patience: int = Field(100, ge=1, le=1_000_000)  # stop after this many epochs without a better fitness
    out: str | None = None
    seed: int = Field(0, ge=0, lt=2**63)  # what torch.manual_seed and the samplers take
    hyp: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    deterministic: bool = False
    sync_bn: bool = False
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    val: Literal["deploy", "train"] = "deploy"
    progress: bool = True
    plots: bool = True  # the curves, confusion matrix, labels and validation images at the end of the run
    cache: Literal["auto", "ram", "off"] = "auto"  # decoded training images in memory (gelanc.data.cache)

    @field_validator("params")
    @classmethod
    def _plain(cls, params: dict[str, Any]) -> dict[str, Any]:
        """Model parameters within the language's bounds: a checkpoint's are foreign (a list that
        shares itself sixty times over is 2^60 values to anything that walks it)."""
        from gelanc.diagnostics import GelError
        from gelanc.ir.lower import check_value

        for k, v in params.items():
            try:
                check_value(v)
            except GelError as e:
                raise ValueError(f"model parameter '{str(k)[:40]}': {e.message}") from None
        return params


class TrainError(UserError):
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


# ---- one epoch ----------------------------------------------------------------------


@dataclass
class State:
    """What changes while training, and what a checkpoint must keep to resume."""

    epoch: int = 0  # epochs finished
    iteration: int = 0  # batches seen, over the whole run (drives the warmup)
    best_fitness: float = -1.0
    rows: list[dict[str, float]] | None = None
    seconds: float = 0.0  # wall time of the run so far, over every process that ran it (resumes included)
    saved: int | None = None  # the epoch the run folder's last.pt holds, when this process knows it (not saved)

    def epochs_since_best(self) -> int:
        """Epochs finished after the one best.pt holds (0 when the last is the best)."""
        return int(self.rows[-1]["epoch"]) - best_epoch(self.rows) if self.rows else 0


def default_workers(batch_per_rank: int, ranks: int) -> int:
    """Data-loading processes per rank: min(8, the CPUs this process may use ÷ ranks, the
    batch). More processes than cores only take turns (8 on 2 cores made an epoch 3×
    slower than 2), and more than the batch have nothing to load."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity on macOS and Windows
        cpus = os.cpu_count() or 1
    return max(0, min(8, cpus // max(ranks, 1), batch_per_rank))


def fitness(metrics: dict) -> float:
    """The reference's model selection: 0.1 · mAP@0.5 + 0.9 · mAP@0.5:0.95."""
    return 0.1 * metrics["map50"] + 0.9 * metrics["map"]


def train_epoch(model, ema, loss_fn, opt, scaler, loader, state: State, args: TrainArgs, hyp: Hyp,
                device, amp, w: ddp.World) -> tuple[dict[str, float], list[tuple[str, str]]]:
    """One pass over the split; returns the mean loss terms, images/s and the learning
    rates, and (path, why) of the images that could not be decoded (every process's, on
    rank 0): their samples were left out of their batches."""
    from gelanc.train.optim import set_schedule, warmup_iterations
    from gelanc.train.val import autocast

    model.train()
    nb = len(loader)
    warmup = warmup_iterations(nb, hyp)
    sums = torch.zeros(3)
    seen, steps, t0 = 0, 0, time.perf_counter()
    pending = 0  # batches whose gradients are waiting for a step
    skipped: list[tuple[str, str]] = []
    bar = loader
    if w.main and args.progress:
        from tqdm import tqdm

        bar = tqdm(loader, desc=f"epoch {state.epoch + 1}/{args.epochs}", unit="batch", dynamic_ncols=True,
                   file=sys.stderr, mininterval=0.5 if sys.stderr.isatty() else 30)
    opt.zero_grad(set_to_none=True)
    for i, (imgs, targets, _, failed) in enumerate(bar):
        skipped += failed
        if every_process_has_images(len(imgs), w, device):
            accumulate = set_schedule(opt, state.iteration, state.epoch, args.epochs, warmup, args.batch, hyp)
            x = (imgs.to(device, non_blocking=True).float() / 255).contiguous(memory_format=torch.channels_last)
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
            sums += items.detach().float().cpu()
            seen += len(imgs)
            steps += 1
        if pending and (pending >= accumulate or i == nb - 1):  # every epoch ends on a step: nothing carried over
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(model.parameters(), max_norm=hyp.clip_grad)
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            ema.update_parameters(unwrap(model))
            pending = 0
        if bar is not loader and steps:
            mean = sums / steps
            bar.set_postfix_str(f"box {mean[0]:.3f} cls {mean[1]:.3f} dfl {mean[2]:.3f} "
                                f"{seen * w.size / (time.perf_counter() - t0):.1f} img/s", refresh=False)
    mean = sums / max(steps, 1)
    out = {"train/box_loss": float(mean[0]), "train/cls_loss": float(mean[1]), "train/dfl_loss": float(mean[2]),
           "images_per_s": seen * w.size / (time.perf_counter() - t0)}
    out.update({f"lr/{name}": g["lr"] for name, g in zip(("bias", "bn", "weights"), opt.param_groups)})
    return out, gathered(skipped, w)


def every_process_has_images(n: int, w: ddp.World, device: torch.device) -> bool:
    """Whether this batch is trained on: it has images here and, under DDP, in every
    process (each must run the same backward passes, or the gradient all-reduce waits
    forever; a batch whose images all failed to decode in one process is skipped by all)."""
    if not w.distributed:
        return n > 0
    import torch.distributed as dist

    flag = torch.tensor([float(n > 0)], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def gathered(items: list, w: ddp.World) -> list:
    """Every process's ``items``, concatenated (on every rank; one process: ``items``)."""
    if not w.distributed:
        return items
    import torch.distributed as dist

    lists: list = [None] * w.size
    dist.all_gather_object(lists, items)
    return [x for one in lists for x in one]


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


# ---- checkpoints --------------------------------------------------------------------


def save_checkpoint(path: Path, model, ema, opt, scaler, state: State, args: TrainArgs, hyp: Hyp,
                    names: list[str], metrics: dict) -> None:
    """``state_dict`` holds the EMA's weights — the model a user deploys; ``train``
    holds what resuming needs besides."""
    from gelanc.backend.checkpoint import save

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
        "seconds": state.seconds,
        "args": args.model_dump(mode="json"),
        "hyp": hyp.model_dump(),
    }})


class Resumable(BaseModel):
    """What a checkpoint's ``train`` entry must hold for a run to continue from it."""

    model_config = ConfigDict(extra="allow", arbitrary_types_allowed=True)
    model: dict[str, torch.Tensor]
    ema_updates: int = Field(ge=0, lt=2**62)
    optimizer: dict[str, Any]
    scaler: dict[str, Any]
    epoch: int = Field(ge=0, le=1_000_000)
    iteration: int = Field(ge=0, lt=2**62)
    best_fitness: float = Field(allow_inf_nan=False)
    rows: list[dict[str, float]]
    args: dict[str, Any]
    seconds: float | None = Field(None, ge=0, allow_inf_nan=False)  # absent in checkpoints of gelanc before 0.2

    @field_validator("rows")
    @classmethod
    def _rows(cls, rows: list[dict[str, float]]) -> list[dict[str, float]]:
        for r in rows:
            missing = {"epoch", "metrics/mAP50", "metrics/mAP50-95"} - set(r)
            if missing:
                raise ValueError(f"a results row lacks {', '.join(sorted(missing))}")
        return rows


def resumable(ckpt: dict, path: Path) -> Resumable:
    """The checkpoint's training state, checked (a foreign file's as any other)."""
    from pydantic import ValidationError

    from gelanc.backend.checkpoint import CheckpointError

    if not isinstance(ckpt.get(CKPT_KEY), dict):
        raise CheckpointError(f"{path} holds no training state (a checkpoint from gelanc build or export?)")
    try:
        return Resumable.model_validate(ckpt[CKPT_KEY])
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x)[:40] for x in err["loc"])
        raise CheckpointError(f"{path}: its training state is damaged ({CKPT_KEY}.{where}: {err['msg']})") from None


def resume_args(path: Path, **changes) -> TrainArgs:
    """The settings of the run ``path`` (a last.pt) was saved by, with ``changes``."""
    from gelanc.backend.checkpoint import read

    saved = dict(resumable(read(path), path).args)
    saved.update({k: v for k, v in changes.items() if v is not None})
    # the run goes on in the folder of the checkpoint it resumes (the one it was saved to
    # may be elsewhere now, or relative to another working folder)
    saved["out"] = str(path.parent)
    return TrainArgs.model_validate(saved)


# ---- the run folder -------------------------------------------------------------------

RUN_FILES = ("last.pt", "best.pt", "results.csv", "results.png")  # what every epoch writes in the run folder


def open_run_dir(out: Path, w: ddp.World) -> None:
    """Create the run folder and remove what killed writes of an earlier run left in it:
    gelanc's own temporary files of the run's files (:func:`gelanc.atomic.stale_temps`)."""
    from gelanc.atomic import remove_stale_temps

    try:
        out.mkdir(parents=True, exist_ok=True)
        from gelanc.train.plots import PLOT_FILES

        removed = remove_stale_temps(out, dict.fromkeys((*RUN_FILES, *PLOT_FILES)))
    except OSError as e:
        raise TrainError(f"cannot use the run folder {out}: {e.strerror or e}") from None
    if removed:
        log(w, f"removed {len(removed)} temporary file{'s' * (len(removed) != 1)} a killed run left in {out}")


def row_fitness(row: dict[str, float]) -> float:
    return fitness({"map50": row["metrics/mAP50"], "map": row["metrics/mAP50-95"]})


def best_epoch(rows: list[dict[str, float]]) -> int | None:
    """The epoch best.pt holds: the first with the highest fitness (a later epoch replaces
    best.pt only by beating it)."""
    return int(max(rows, key=row_fitness)["epoch"]) if rows else None


def _same_bytes(a: Path, b: Path) -> bool:
    import filecmp

    return a.is_file() and (os.path.samefile(a, b) or filecmp.cmp(a, b, shallow=False))


def repair_run(out: Path, last: Path, state: State, title: str) -> None:
    """Put the run folder in agreement with ``last``, its last.pt, after a kill between an
    epoch's writes: best.pt re-created when its epoch is last.pt's own and it is missing or
    holds another; results.csv and results.png rewritten from last.pt's rows."""
    from gelanc.atomic import atomic_copy
    from gelanc.train import results

    if not state.rows:
        return
    try:
        epoch = best_epoch(state.rows)
    except (KeyError, TypeError, ValueError):  # rows that are not what gelanc writes: nothing to go by
        epoch = None
    best = out / "best.pt"
    if epoch == state.epoch and not _same_bytes(best, last):
        atomic_copy(last, best)
    results.write_csv(out / "results.csv", state.rows)
    results.plot(out / "results.png", state.rows, title=title)


def write_epoch(out: Path, state: State, best: bool, title: str, save_last: Callable[[Path], Any]) -> None:
    """An epoch's files: last.pt, then best.pt (a copy, when the epoch is the best so far),
    results.csv and results.png; ``state.saved`` follows what last.pt holds (a Ctrl-C
    during the later files then still names the epoch saved). A write that fails (a full
    disk, a refused target) stops the run with a :class:`TrainError` saying what is on
    disk and how to go on; nothing is half-written."""
    saved = state.saved
    from gelanc.atomic import atomic_copy
    from gelanc.train import results

    last = out / "last.pt"
    try:
        save_last(last)
    except OSError as e:
        if saved:
            raise TrainError(f"{e}; the run stopped after training epoch {state.epoch} without saving it: {last} "
                             f"still holds epoch {saved}, intact; make room, then continue with: "
                             f"gelanc train --resume {last}") from None
        held = f"{last} is as it was" if last.exists() else "nothing was saved"
        raise TrainError(f"{e}; the run stopped after training epoch {state.epoch} without saving it ({held}); "
                         f"make room, then run it again") from None
    state.saved = state.epoch
    try:
        if best:
            atomic_copy(last, out / "best.pt")
        results.write_csv(out / "results.csv", state.rows)
        results.plot(out / "results.png", state.rows, title=title)
    except OSError as e:
        raise TrainError(f"{e}; {last} holds epoch {state.epoch}, saved; make room, then continue with: "
                         f"gelanc train --resume {last} (which also writes best.pt and the results it "
                         f"could not)") from None


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
    from gelanc.backend.checkpoint import build, fit_weights
    from gelanc.backend.fx import heads

    if resume_ckpt is not None:
        model = build(resume_ckpt, str(resume_ckpt["path"]))  # rebuilt from the embedded source
        fit_weights(model, resume_ckpt[CKPT_KEY]["model"], str(resume_ckpt["path"]))
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
    from gelanc.backend.checkpoint import CheckpointError, read
    from gelanc.data.augment import AugmentedDataset
    from gelanc.data.dataset import YoloDataset, check_out_folder, collate, skipped_note
    from gelanc.passes.budget import check_input, check_training_memory, device_memory
    from gelanc.passes.shapes import check_size
    from gelanc.train.loss import DetectionLoss
    from gelanc.train.optim import make_ema, make_optimizer, optimizer_steps, resolve

    hyp = Hyp.model_validate(args.hyp)
    if args.batch % w.size:
        raise TrainError(f"--batch {args.batch} does not split evenly over {w.size} processes")
    if args.sync_bn and device.type != "cuda":
        raise TrainError("--sync-bn needs CUDA (torch's SyncBatchNorm does not run on CPU)")

    data_path = Path(args.data) if args.data else default_data(w)
    data = load_data(data_path, w)
    if args.out:  # a run folder that is one of the dataset's would write its plots over the images
        check_out_folder(Path(args.out), [data.train, data.val])
    ckpt = None
    if resume is not None:
        ckpt = read(resume)
        resumable(ckpt, resume)
        ckpt["path"] = resume
    if ckpt is not None and isinstance(ckpt[CKPT_KEY].get("hyp"), dict):
        # the recipe the run started with, `auto` already decided: a longer --epochs must not
        # switch the optimizer under its saved state
        hyp = _saved_hyp(ckpt[CKPT_KEY]["hyp"], resume)
    else:
        hyp = resolve(hyp, optimizer_steps(len(data.train.images), args.epochs, hyp), len(data.names))
    model, hs = _build_model(args, len(data.names), ckpt)
    ir = model.meta["gelanc"]["ir"]
    check_size(ir, (args.imgsz, args.imgsz))  # a size the network is not built for: a located error
    check_input(ir, (args.imgsz, args.imgsz))  # nor one whose feature maps would not fit gelanc's bound
    amp = amp_dtype(device, args.amp)
    check_training_memory(ir, (args.imgsz, args.imgsz), args.batch // w.size, 2 if amp else 4,
                          device_memory(device))
    name = ir.graph["model"]
    out = Path(args.out) if args.out else run_dir(args, name)
    out = Path(ddp.broadcast(str(out), w))

    # channels-last: oneDNN's and cuDNN's (tensor cores') fast layout for convolutions; about
    # a quarter off a CPU training step here (benchmarks/train_pipeline_speed.py)
    model.to(device, memory_format=torch.channels_last)
    ema = make_ema(model, hyp)
    if args.sync_bn and w.distributed:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if w.distributed:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = make_optimizer(unwrap(model), args.batch, hyp)
    scaler = torch.amp.GradScaler(device.type, enabled=amp is torch.float16)
    loss_fn = DetectionLoss(hs[0].nc, hs[0].reg_max, hs[0].strides, hyp)

    state = State(rows=[])
    title = f"{name} on {data_path.parent.name}"  # of results.png
    if ckpt is not None:
        t = ckpt[CKPT_KEY]
        ema.module.load_state_dict(ckpt["state_dict"])
        ema.n_averaged.fill_(t["ema_updates"])
        try:
            opt.load_state_dict(t["optimizer"])
            scaler.load_state_dict(t["scaler"])
            _check_optimizer_state(opt)
        except (ValueError, KeyError, TypeError, RuntimeError, IndexError, OverflowError) as e:
            raise CheckpointError(f"{resume}: its optimizer state does not fit the model "
                                  f"({type(e).__name__})") from None
        rows = [dict(r) for r in t["rows"]]
        seconds = t.get("seconds")
        state = State(t["epoch"], t["iteration"], t["best_fitness"], rows,
                      seconds if seconds is not None else sum(r.get("time_s", 0.0) for r in rows))
        log(w, f"resuming {resume} after epoch {state.epoch} of {args.epochs}")
        if w.main:
            open_run_dir(out, w)
            if (out / "last.pt").is_file() and os.path.samefile(resume, out / "last.pt"):
                state.saved = state.epoch  # the folder's own last.pt: what it says is what the folder must hold
                try:
                    repair_run(out, resume, state, title)
                except OSError as e:
                    raise TrainError(f"{e}; make room, then resume again") from None
        if state.epoch >= args.epochs:
            raise TrainError(f"{resume} already finished its {args.epochs} epochs (give --epochs more to go on)")

    per_rank = args.batch // w.size
    workers = args.workers if args.workers is not None else default_workers(per_rank, w.size)
    train_set = AugmentedDataset(data.train, args.imgsz, hyp, seed=args.seed)
    train_set.cache = image_cache(train_set, args, w, workers)
    sampler = DistributedSampler(train_set, num_replicas=w.size, rank=w.rank, shuffle=True, seed=args.seed)
    loader = DataLoader(train_set, batch_size=per_rank, sampler=sampler, num_workers=workers,
                        collate_fn=collate, pin_memory=device.type == "cuda", drop_last=False)
    val_loader = DataLoader(YoloDataset(data.val, args.imgsz), batch_size=per_rank * 2, shuffle=False,
                            num_workers=workers, collate_fn=collate, pin_memory=device.type == "cuda")
    mosaic_epochs = hyp.mosaic_epochs(args.epochs)

    fresh = not out.exists()  # a folder this run makes: removed again if the run ends before saving anything
    if w.main:
        open_run_dir(out, w)
        n_params = sum(p.numel() for p in unwrap(model).parameters())
        precision = f" ({str(amp).removeprefix('torch.')})" if amp else ""
        chose = " (auto)" if Hyp.model_validate(args.hyp).optimizer == "auto" else ""
        log(w, f"optimizer: {hyp.optimizer}{chose}, lr0 {hyp.lr0:g}, momentum {hyp.momentum:g}, "
               f"{optimizer_steps(len(data.train.images), args.epochs, hyp):,} optimizer steps")
        log(w, f"training {name} ({n_params:,} parameters) on {data_path} — {len(data.names)} classes, "
               f"{len(train_set)} train / {len(data.val.images)} val images — {args.epochs} epochs at "
               f"{args.imgsz} px, batch {args.batch} on {w.size}× {device.type}"
               f"{precision}, {workers} data worker{'s' * (workers != 1)}, saving to {out}")
    started, first_epoch, seconds_before = time.perf_counter(), state.epoch, state.seconds
    metrics: dict = {}
    skipped: dict[str, str] = {}  # path → why, of every image that could not be decoded during the run
    try:
        while state.epoch < args.epochs:
            epoch_start = time.perf_counter()
            sampler.set_epoch(state.epoch)
            train_set.set_epoch(state.epoch)
            train_set.use_mosaic = state.epoch < mosaic_epochs
            stats, failed = train_epoch(model, ema, loss_fn, opt, scaler, loader, state, args, hyp, device, amp, w)
            state.epoch += 1
            if w.main:
                metrics = validate(ema.module, args.val, val_loader, data.names, device, amp, args.progress,
                                   loss_fn)
                failed += [(p, why) for p, why in metrics.pop("skipped", [])]  # not kept in the checkpoint
                for p, why in failed:
                    skipped.setdefault(p, why)
                row = results_row(state.epoch, stats, metrics, time.perf_counter() - epoch_start)
                state.rows.append(row)
                state.seconds = seconds_before + time.perf_counter() - started
                f = fitness(metrics)
                best = f > state.best_fitness
                state.best_fitness = max(f, state.best_fitness)
                save_last = functools.partial(save_checkpoint, model=model, ema=ema, opt=opt, scaler=scaler,
                                              state=state, args=args, hyp=hyp, names=data.names, metrics=metrics)
                write_epoch(out, state, best, title, save_last)
                left = (time.perf_counter() - started) / (state.epoch - first_epoch) * (args.epochs - state.epoch)
                log(w, f"epoch {state.epoch}/{args.epochs}: mAP50 {metrics['map50']:.3f}  "
                       f"mAP50-95 {metrics['map']:.3f}  loss: box {row['train/box_loss']:.3f} "
                       f"cls {row['train/cls_loss']:.3f} dfl {row['train/dfl_loss']:.3f}  "
                       f"{row['images_per_s']:.1f} img/s  {row['time_s']:.0f} s{'  (best)' if best else ''}"
                       + (f"  ETA {_duration(left)}" if state.epoch < args.epochs else "")
                       + (f"\n  {note}" if (note := skipped_note(failed)) else ""))
            stale = ddp.broadcast(state.epochs_since_best() if w.main else 0, w)
            if stale >= args.patience and state.epoch < args.epochs:
                log(w, f"stopping early: no better fitness in the {stale} epochs after epoch "
                       f"{state.epoch - stale} (--patience {args.patience}); best.pt holds that epoch")
                break
            ddp.barrier(w)
    except BaseException as e:
        if w.main and fresh and state.saved is None:
            with contextlib.suppress(OSError):
                out.rmdir()  # only if empty: an interrupted or failed first epoch leaves no empty run folder
        if isinstance(e, KeyboardInterrupt) and w.main:
            log(w, f"interrupted; continue with: gelanc train --resume {out / 'last.pt'} (epoch {state.saved} is "
                   f"saved)" if state.saved is not None else "interrupted before the first epoch was saved")
        raise
    agree = ddp.replicas_agree(unwrap(model), w)
    if not agree:
        log(w, "gelanc: warning: the processes' weights differ at the end of the run (DDP replicas diverged)")
    if w.main and args.plots and state.rows:
        _plots(out, data_path, device, workers, args.progress, w)
    state.seconds = seconds_before + time.perf_counter() - started
    summary = {"model": name, "out": str(out), "epochs": state.epoch, "imgsz": args.imgsz, "processes": w.size,
               "replicas_agree": agree, "stopped_early": state.epoch < args.epochs,
               "seconds": state.seconds, "last": str(out / "last.pt"),
               "best": str(out / "best.pt") if (out / "best.pt").is_file() else None,  # named only if it is there
               "best_fitness": state.best_fitness, "map50": metrics.get("map50"), "map": metrics.get("map"),
               # images that passed the scan but could not be decoded when loaded: the first few, and how many
               "skipped": {"images": len(skipped), "first": list(skipped)[:5]}}
    if state.rows:
        best_row = max(state.rows, key=row_fitness)
        summary.update(best_epoch=int(best_row["epoch"]), best_map50=best_row["metrics/mAP50"],
                       best_map=best_row["metrics/mAP50-95"])
    return Run(summary, unwrap(model), ema.module)


def _check_optimizer_state(opt: torch.optim.Optimizer) -> None:
    """Each parameter's saved state (momentum, Adam's moments) of the parameter's shape and
    a float type: load_state_dict takes whatever the file says, and a wrong one would
    surface only at the first step, an epoch of training later."""
    for group in opt.param_groups:
        for p in group["params"]:
            for k, v in opt.state.get(p, {}).items():
                if isinstance(v, torch.Tensor) and v.dim() and (v.shape != p.shape or not v.is_floating_point()):
                    raise ValueError(f"state {k} of shape {tuple(v.shape)} for a parameter of {tuple(p.shape)}")


def _saved_hyp(raw: dict, path: Path) -> Hyp:
    from pydantic import ValidationError

    from gelanc.backend.checkpoint import CheckpointError

    try:
        return Hyp.model_validate(raw)
    except ValidationError as e:
        raise CheckpointError(f"{path}: its recipe is damaged ({e.errors()[0]['msg']})") from None


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


def validate(ema_module, graph: str, loader, names, device, amp, progress, loss_fn=None) -> dict:
    """mAP (and with ``loss_fn`` the losses) of the EMA weights: on their deploy graph, or
    on the train graph's main head."""
    from gelanc.backend.fx import deploy_module
    from gelanc.train.val import evaluate

    if graph == "deploy":  # a module of its own: the fast path may convert it
        return evaluate(deploy_module(ema_module), loader, names, device, progress=progress, fast=True, compile=False,
                        loss_fn=loss_fn)
    return evaluate(ema_module, loader, names, device, amp=amp, progress=progress, loss_fn=loss_fn)


RESULT_COLUMNS = ("epoch", "train/box_loss", "train/cls_loss", "train/dfl_loss", "val/box_loss", "val/cls_loss",
                  "val/dfl_loss", "metrics/precision", "metrics/recall", "metrics/mAP50", "metrics/mAP50-95",
                  "lr/bias", "lr/bn", "lr/weights", "images_per_s", "time_s")


def results_row(epoch: int, stats: dict, metrics: dict, seconds: float) -> dict[str, float]:
    """One epoch's row of results.csv, its columns in :data:`RESULT_COLUMNS` order
    (docs/train.md says what each is)."""
    values = {**stats, **{k: v for k, v in metrics.items() if k.startswith("val/")},
              "metrics/precision": metrics["precision"], "metrics/recall": metrics["recall"],
              "metrics/mAP50": metrics["map50"], "metrics/mAP50-95": metrics["map"], "epoch": epoch,
              "time_s": seconds}
    return {k: float(values[k]) if k != "epoch" else epoch for k in RESULT_COLUMNS if k in values}


def _plots(out: Path, data: Path, device: torch.device, workers: int, progress: bool, w: ddp.World) -> None:
    """The run's plots (``gelanc plot``'s): best.pt validated once more. A plot that fails
    costs the run nothing it trained: a warning, and ``gelanc plot`` to try again."""
    from gelanc.train.plots import plot_run

    try:
        written = plot_run(out, data=data, device=device, workers=workers, progress=progress)
    except Exception as e:  # noqa: BLE001 - the checkpoints are saved; the plots are a report on them
        from gelanc.safeload import printable

        log(w, f"gelanc: warning: the plots failed ({type(e).__name__}: {printable(str(e), 200)}); "
               f"try again with: gelanc plot {out}")
        return
    log(w, f"plots: {len(written)} files in {out}")


def _duration(seconds: float) -> str:
    seconds = int(math.ceil(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
