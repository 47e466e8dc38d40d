"""One epoch of training: the split once, forward and loss, gradients accumulated to
the nominal batch, clipped, an optimizer step and an EMA update — every epoch ending on
a step, so that nothing is carried across a checkpoint."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gelanc.train import ddp
from gelanc.train.args import TrainArgs
from gelanc.train.ddp import every_process_has_images, gathered, unwrap
from gelanc.train.hyp import Hyp
from gelanc.train.results import best_epoch


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


@dataclass
class Trainee:
    """What an epoch steps: the model (under DDP, wrapped), its EMA, the loss, the optimizer
    and its gradient scaler, the device and the autocast type (None: full precision)."""

    model: nn.Module
    ema: Any  # torch.optim.swa_utils.AveragedModel of the unwrapped model
    loss_fn: Callable
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    device: torch.device
    amp: torch.dtype | None
    world: ddp.World


def train_epoch(t: Trainee, loader, state: State, args: TrainArgs,
                hyp: Hyp) -> tuple[dict[str, float], list[tuple[str, str]]]:
    """One pass over the split; returns the mean loss terms, images/s and the learning
    rates, and (path, why) of the images that could not be decoded (every process's, on
    rank 0): their samples were left out of their batches."""
    from gelanc.train.optim import set_schedule, warmup_iterations
    from gelanc.train.val import autocast

    model, ema, loss_fn, opt, scaler = t.model, t.ema, t.loss_fn, t.opt, t.scaler
    device, amp, w = t.device, t.amp, t.world

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
