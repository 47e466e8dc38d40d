"""The training recipe: gelanc's default, the reference's ``hyp.scratch-high``, or a file.

The default is the reference's recipe with ultralytics' choices where those learn faster
on small data and short runs (docs/train.md, "Why this default", and the measurements in
docs/benchmarks.md): ``optimizer: auto`` — AdamW fitted to the class count for a run of
under 10,000 optimizer steps, the reference's SGD beyond — ultralytics' augmentation
strength (scale ±0.5, no mixup) and mosaic closed for the last 10 epochs. The reference's own
recipe is one flag away: ``--hyp scratch-high`` (:data:`RECIPES`), or the reference's
own ``hyp.scratch-high.yaml``, which is recognised by its anchor-era keys and starts
from that recipe, as the reference's trainer would run it.

A ``--hyp FILE`` YAML overrides any subset of the fields. Unknown keys are an error (a
misspelt ``mixup`` must not be silently ignored), except the reference's anchor-era
keys, which are accepted and ignored so that its own hyp files load unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gelanc.errors import UserError

# keys of the reference's hyp files that this loss (anchor-free, no objectness) has no use for;
# copy_paste needs segment labels, which a box dataset has not (the reference skips it for them too)
IGNORED = ("obj", "obj_pw", "cls_pw", "iou_t", "anchor_t", "fl_gamma", "label_smoothing", "copy_paste", "anchors")

# The reference's recipe as changes to gelanc's default: data/hyps/hyp.scratch-high.yaml with
# the reference trainer's own defaults for what the file does not say (--optimizer SGD) and
# the --close-mosaic 15 of its README's training commands.
SCRATCH_HIGH = {"optimizer": "SGD", "scale": 0.9, "mixup": 0.15, "close_mosaic": 15}

# what --hyp NAME means
RECIPES: dict[str, dict] = {"default": {}, "scratch-high": SCRATCH_HIGH}


class Hyp(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # optimisation
    optimizer: Literal["SGD", "AdamW", "auto"] = Field(
        "auto", description="SGD (nesterov, the reference's), AdamW, or auto: AdamW with a learning rate fitted "
                           "to the class count for runs of under 10,000 optimizer steps, SGD for longer ones "
                           "(ultralytics' rule)")
    lr0: float = Field(0.01, gt=0, description="initial learning rate (SGD and AdamW; auto sets its own)")
    lrf: float = Field(0.01, gt=0, le=1, description="final learning rate, as a fraction of lr0 (linear decay)")
    momentum: float = Field(0.937, ge=0, lt=1, description="SGD momentum")
    weight_decay: float = Field(0.0005, ge=0, description="on conv weights only, scaled to the nominal batch")
    warmup_epochs: float = Field(3.0, ge=0, description="linear warmup (at least 100 iterations)")
    warmup_momentum: float = Field(0.8, ge=0, lt=1, description="momentum at the start of warmup")
    warmup_bias_lr: float = Field(0.1, ge=0, description="bias learning rate at the start of warmup")
    nbs: int = Field(64, ge=1, description="nominal batch size: gradients accumulate to it")
    clip_grad: float = Field(10.0, gt=0, description="gradient norm clip")
    ema_decay: float = Field(0.9999, ge=0, lt=1, description="EMA decay, ramped up as 1 - exp(-updates / ema_tau)")
    ema_tau: float = Field(2000.0, gt=0, description="EMA ramp-up, in optimizer steps")

    # loss (loss_tal_dual)
    box: float = Field(7.5, ge=0, description="CIoU gain")
    cls: float = Field(0.5, ge=0, description="BCE gain")
    dfl: float = Field(1.5, ge=0, description="distribution focal loss gain")
    aux_weight: float = Field(0.25, ge=0, description="weight of PGI's auxiliary head's terms")
    topk: int = Field(10, ge=1, description="TaskAlignedAssigner: candidates per object")
    alpha: float = Field(0.5, ge=0, description="TaskAlignedAssigner: class-score exponent")
    beta: float = Field(6.0, ge=0, description="TaskAlignedAssigner: IoU exponent")
    aux_assign: Literal["independent", "lead"] = Field(
        "independent", description="PGI's auxiliary head assigned from its own predictions (the reference), or "
                                   "from the main (lead) head's, coarse-to-fine as YOLOv7's lead-guided assigner")
    aux_topk: int = Field(20, ge=1, description="with aux_assign: lead, the aux head's candidates per object "
                                               "(coarser than the lead's topk)")
    assign_min_side: float = Field(
        0.0, ge=0, le=4096, description="an object narrower or lower than this many pixels takes its candidate "
                                         "anchors from a box of this side about its centre (ultralytics' rule: "
                                         "small objects get candidates); 0: the reference, its own box only")
    assign_ties: Literal["reference", "selecting"] = Field(
        "reference", description="an anchor several objects claim goes to the object its predicted box overlaps "
                                 "most: of all the image's objects (reference), or of those that claimed it")

    # augmentation
    hsv_h: float = Field(0.015, ge=0, le=0.5, description="hue gain (fraction of the colour wheel)")
    hsv_s: float = Field(0.7, ge=0, le=1, description="saturation gain")
    hsv_v: float = Field(0.4, ge=0, le=1, description="value gain")
    degrees: float = Field(0.0, ge=0, le=180, description="rotation, ± degrees")
    translate: float = Field(0.1, ge=0, le=0.5, description="translation, ± fraction of the image")
    scale: float = Field(0.5, ge=0, lt=1, description="scale gain: zoom in 1 ± scale")
    shear: float = Field(0.0, ge=0, le=90, description="shear, ± degrees")
    perspective: float = Field(0.0, ge=0, le=0, description="perspective warp: not supported (the reference's "
                                                            "own files say 0)")
    flipud: float = Field(0.0, ge=0, le=1, description="probability of a vertical flip")
    fliplr: float = Field(0.5, ge=0, le=1, description="probability of a horizontal flip")
    mosaic: float = Field(1.0, ge=0, le=1, description="probability of a 4-image mosaic")
    mixup: float = Field(0.0, ge=0, le=1, description="probability of mixing in a second mosaic")
    close_mosaic: int = Field(10, ge=0, description="epochs at the end without mosaic or mixup")

    @model_validator(mode="before")
    @classmethod
    def _drop_reference_keys(cls, data):
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if k not in IGNORED}
        return data

    def mosaic_epochs(self, epochs: int) -> int:
        """The epochs that use mosaic: all but the last ``close_mosaic`` (as the reference's
        ``--close-mosaic`` and ultralytics close it)."""
        return max(0, epochs - self.close_mosaic)


class HypError(UserError):
    """An invalid hyper-parameter file: a user error (exit 2)."""


def load_hyp(path: str | Path | None = None, **overrides) -> Hyp:
    """The recipe named ``path`` (:data:`RECIPES`), or the default changed by a YAML file's
    fields (any subset of :class:`Hyp`'s), then by ``overrides``.

    A file with the reference's anchor-era keys (``obj``, ``anchor_t`` …) was written for
    the reference's trainer: it starts from the reference's recipe, not gelanc's default."""
    from gelanc.yamlfile import read_mapping, validate

    base: dict = {}
    raw: dict = {}
    if path is not None and str(path) in RECIPES and not Path(path).exists():
        base = RECIPES[str(path)]
    elif path is not None:
        if not Path(path).exists() and not str(path).endswith((".yaml", ".yml")):
            raise HypError(f"no such hyper-parameter file or recipe: {path} (recipes: {', '.join(RECIPES)})")
        raw = read_mapping(path, HypError, "hyper-parameter")
        if any(k in raw for k in IGNORED if k != "copy_paste"):
            base = SCRATCH_HIGH
    return validate(Hyp, {**base, **raw, **overrides}, HypError, str(path or "hyper-parameters"))

