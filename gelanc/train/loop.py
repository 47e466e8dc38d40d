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

This module is the run; its parts are modules of their own: ``args`` (the settings),
``setup`` (data, workers, image cache, precision), ``epoch`` (one epoch's steps),
``resume`` (what a checkpoint keeps to continue), ``run_folder`` (what each epoch
writes, and the repair of a killed run's folder) and ``results`` (a row of results.csv,
fitness).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from gelanc.train import ddp
from gelanc.train.args import TrainArgs, TrainError
from gelanc.train.ddp import log, unwrap
from gelanc.train.epoch import State, Trainee, train_epoch
from gelanc.train.hyp import Hyp
from gelanc.train.results import fitness, results_row, row_fitness
from gelanc.train.resume import CKPT_KEY, restore, resumable, save_checkpoint, saved_hyp
from gelanc.train.run_folder import open_run_dir, repair_run, write_epoch
from gelanc.train.setup import amp_dtype, default_data, default_workers, deterministic, image_cache, load_data, run_dir


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
    from gelanc.backend.checkpoint import read
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
        hyp = saved_hyp(ckpt[CKPT_KEY]["hyp"], resume)
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
    trainee = Trainee(model, ema, loss_fn, opt, scaler, device, amp, w)

    state = State(rows=[])
    title = f"{name} on {data_path.parent.name}"  # of results.png
    if ckpt is not None:
        state = restore(ckpt, ema, opt, scaler, resume)
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
            stats, failed = train_epoch(trainee, loader, state=state, args=args, hyp=hyp)
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


def validate(ema_module, graph: str, loader, names, device, amp, progress, loss_fn=None) -> dict:
    """mAP (and with ``loss_fn`` the losses) of the EMA weights: on their deploy graph, or
    on the train graph's main head."""
    from gelanc.backend.fx import deploy_module
    from gelanc.train.val import evaluate

    if graph == "deploy":  # a module of its own: the fast path may convert it
        return evaluate(deploy_module(ema_module), loader, names, device, progress=progress, fast=True, compile=False,
                        loss_fn=loss_fn)
    return evaluate(ema_module, loader, names, device, amp=amp, progress=progress, loss_fn=loss_fn)


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
