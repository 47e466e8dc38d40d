"""The reference's optimisation recipe (train_dual.py), as plain functions.

SGD with nesterov momentum over three parameter groups — biases, BatchNorm weights,
conv weights, only the last with weight decay; a learning rate that decays linearly
from ``lr0`` to ``lr0 · lrf``; a warmup that ramps the learning rate (biases down from
``warmup_bias_lr``), the momentum and the gradient accumulation; and an exponential
moving average of the weights and BatchNorm statistics, built on
``torch.optim.swa_utils.AveragedModel``.

``optimizer: AdamW`` uses the same groups, schedule and warmup with AdamW (β1 the
momentum); ``optimizer: auto`` chooses as ultralytics does: AdamW at a learning rate
fitted to the class count, ``0.002 · 5 / (4 + nc)``, with no raised bias rate in warmup,
for a run of under 10,000 optimizer steps — where SGD's momentum has too few steps to
build up — and the reference's SGD for a longer one.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from gelanc.train.hyp import Hyp

GROUPS = ("bias", "bn", "decay")  # the order of the optimizer's parameter groups


def param_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Trainable parameters by kind. Fixed ones (the DFL projection) are left out."""
    groups: dict[str, list[nn.Parameter]] = {g: [] for g in GROUPS}
    for m in model.modules():
        for name, p in m.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if name == "bias":
                groups["bias"].append(p)
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                groups["bn"].append(p)
            else:
                groups["decay"].append(p)
    return groups


def accumulation(batch: int, hyp: Hyp) -> int:
    """Batches whose gradients add up to one optimizer step of the nominal batch."""
    return max(round(hyp.nbs / batch), 1)


AUTO_STEPS = 10_000  # optimizer steps under which `auto` picks AdamW (ultralytics' threshold)


def optimizer_steps(images: int, epochs: int, hyp: Hyp) -> int:
    """Optimizer steps of a run, counted as ultralytics counts them for its choice: a
    step per nominal batch (or per batch, when that is larger) of every epoch."""
    return math.ceil(images / hyp.nbs) * epochs


def resolve(hyp: Hyp, steps: int, nc: int) -> Hyp:
    """``hyp`` with ``optimizer: auto`` made concrete for a run of ``steps`` optimizer steps
    and ``nc`` classes; other choices as they are."""
    if hyp.optimizer != "auto":
        return hyp
    if steps > AUTO_STEPS:
        return hyp.model_copy(update={"optimizer": "SGD", "lr0": 0.01, "momentum": 0.937})
    return hyp.model_copy(update={"optimizer": "AdamW", "lr0": round(0.002 * 5 / (4 + nc), 6), "momentum": 0.9,
                                  "warmup_bias_lr": 0.0})


def make_optimizer(model: nn.Module, batch: int, hyp: Hyp) -> torch.optim.Optimizer:
    """SGD (or AdamW) over the three groups; weight decay scaled to the nominal batch, as
    the reference. ``hyp.optimizer`` must be concrete (see :func:`resolve`)."""
    g = param_groups(model)
    decay = hyp.weight_decay * batch * accumulation(batch, hyp) / hyp.nbs
    groups = [
        {"params": g["bias"], "weight_decay": 0.0},
        {"params": g["bn"], "weight_decay": 0.0},
        {"params": g["decay"], "weight_decay": decay},
    ]
    if hyp.optimizer == "AdamW":
        return torch.optim.AdamW(groups, lr=hyp.lr0, betas=(hyp.momentum, 0.999))
    if hyp.optimizer != "SGD":
        raise ValueError(f"optimizer '{hyp.optimizer}' is not concrete: resolve() it for the run first")
    return torch.optim.SGD(groups, lr=hyp.lr0, momentum=hyp.momentum, nesterov=True)


def lr_factor(epoch: float, epochs: int, hyp: Hyp) -> float:
    """The linear decay: 1 at the first epoch, ``lrf`` after the last."""
    return (1 - epoch / epochs) * (1.0 - hyp.lrf) + hyp.lrf


def warmup_iterations(batches_per_epoch: int, hyp: Hyp) -> int:
    """Warmup length in iterations: ``warmup_epochs``, but at least 100 (none if 0)."""
    return max(round(hyp.warmup_epochs * batches_per_epoch), 100) if hyp.warmup_epochs > 0 else 0


def _interp(x: float, x1: float, y0: float, y1: float) -> float:
    return y0 + (y1 - y0) * min(max(x / x1, 0.0), 1.0)


def set_schedule(opt: torch.optim.Optimizer, it: int, epoch: int, epochs: int, warmup: int,
                 batch: int, hyp: Hyp) -> int:
    """Set each group's learning rate and momentum for iteration ``it`` (counted from the
    start of training) and return the gradient accumulation to use.

    After warmup the rate is ``lr0 · lr_factor(epoch)`` for the whole epoch. During
    warmup it ramps linearly to that value — from ``warmup_bias_lr`` for biases, from 0
    for the rest — the momentum from ``warmup_momentum``, and the accumulation from 1
    to the nominal batch's."""
    target = hyp.lr0 * lr_factor(epoch, epochs, hyp)
    full = accumulation(batch, hyp)
    if it >= warmup:
        for group in opt.param_groups:
            group["lr"] = target
            _set_momentum(group, hyp.momentum)
        return full
    for j, group in enumerate(opt.param_groups):
        group["lr"] = _interp(it, warmup, hyp.warmup_bias_lr if j == 0 else 0.0, target)
        _set_momentum(group, _interp(it, warmup, hyp.warmup_momentum, hyp.momentum))
    return max(1, round(_interp(it, warmup, 1, hyp.nbs / batch)))


def _set_momentum(group: dict, momentum: float) -> None:
    """SGD's momentum, or AdamW's β1 (which the warmup ramps alike)."""
    if "betas" in group:
        group["betas"] = (momentum, group["betas"][1])
    else:
        group["momentum"] = momentum


def ema_decay(updates: int, hyp: Hyp) -> float:
    """The EMA's decay after ``updates`` optimizer steps: ramped up so early weights fade."""
    return hyp.ema_decay * (1 - math.exp(-updates / hyp.ema_tau))


def make_ema(model: nn.Module, hyp: Hyp) -> AveragedModel:
    """An EMA of ``model``'s floating-point parameters and buffers (BatchNorm statistics
    included, as the reference's ModelEMA); integer buffers are copied."""

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n: torch.Tensor) -> None:
        if not averaged[0].is_floating_point():
            torch._foreach_copy_(averaged, current)
            return
        d = ema_decay(int(n), hyp)
        torch._foreach_lerp_(averaged, [c.to(a.dtype) for a, c in zip(averaged, current)], 1 - d)

    ema = AveragedModel(model, multi_avg_fn=update, use_buffers=True)
    ema.requires_grad_(False)
    return ema.eval()
