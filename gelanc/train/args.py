"""A training run's settings (``TrainArgs``: the command line's, stored in every
checkpoint) and the error of a run that cannot start as asked."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gelanc.errors import UserError
from gelanc.limits import MAX_BATCH, MAX_IMGSZ, MAX_WORKERS


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
        from gelanc.ir.values import check_value

        for k, v in params.items():
            try:
                check_value(v)
            except GelError as e:
                raise ValueError(f"model parameter '{str(k)[:40]}': {e.message}") from None
        return params


class TrainError(UserError):
    """A run that cannot start as asked (a user error: exit 2)."""
