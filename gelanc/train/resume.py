"""What a checkpoint keeps for a run to continue from it (its ``train`` entry), checked
as any foreign file is, and the run's state restored from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from gelanc.train.args import TrainArgs
from gelanc.train.ddp import unwrap
from gelanc.train.epoch import State
from gelanc.train.hyp import Hyp

CKPT_KEY = "train"  # the checkpoint's extra entry holding what resuming needs


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


def check_optimizer_state(opt: torch.optim.Optimizer) -> None:
    """Each parameter's saved state (momentum, Adam's moments) of the parameter's shape and
    a float type: load_state_dict takes whatever the file says, and a wrong one would
    surface only at the first step, an epoch of training later."""
    for group in opt.param_groups:
        for p in group["params"]:
            for k, v in opt.state.get(p, {}).items():
                if isinstance(v, torch.Tensor) and v.dim() and (v.shape != p.shape or not v.is_floating_point()):
                    raise ValueError(f"state {k} of shape {tuple(v.shape)} for a parameter of {tuple(p.shape)}")


def saved_hyp(raw: dict, path: Path) -> Hyp:
    from pydantic import ValidationError

    from gelanc.backend.checkpoint import CheckpointError

    try:
        return Hyp.model_validate(raw)
    except ValidationError as e:
        raise CheckpointError(f"{path}: its recipe is damaged ({e.errors()[0]['msg']})") from None


def restore(ckpt: dict, ema, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler, path: Path) -> State:
    """The EMA, the optimizer and the scaler as ``ckpt`` (read from ``path``, its ``train``
    entry already checked by :func:`resumable`) left them, and the run's state."""
    from gelanc.backend.checkpoint import CheckpointError

    t = ckpt[CKPT_KEY]
    ema.module.load_state_dict(ckpt["state_dict"])
    ema.n_averaged.fill_(t["ema_updates"])
    try:
        opt.load_state_dict(t["optimizer"])
        scaler.load_state_dict(t["scaler"])
        check_optimizer_state(opt)
    except (ValueError, KeyError, TypeError, RuntimeError, IndexError, OverflowError) as e:
        raise CheckpointError(f"{path}: its optimizer state does not fit the model ({type(e).__name__})") from None
    rows = [dict(r) for r in t["rows"]]
    seconds = t.get("seconds")
    return State(t["epoch"], t["iteration"], t["best_fitness"], rows,
                 seconds if seconds is not None else sum(r.get("time_s", 0.0) for r in rows))
