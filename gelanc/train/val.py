"""Validation: a model's mAP on a split, by pycocotools, after torchvision's NMS.

The images are letterboxed to a square, as in training, and the boxes are scored in
that canvas: scaling an image and its boxes alike changes no IoU, so mAP@0.5 and
mAP@0.5:0.95 are those of the original images (only COCO's small/medium/large
breakdown, which gelanc does not report, would move).

An image that cannot be decoded when its batch is loaded is left out of the score
and listed in the result's ``skipped``; it never stops the validation.
"""

from __future__ import annotations

import contextlib
import time

import torch
from torch.utils.data import DataLoader
from torchvision.ops import box_convert

# the reference's val.py settings for mAP: every box over 0.001, NMS IoU 0.7, 300 a picture
CONF, IOU, MAX_DET = 0.001, 0.7, 300


def ground_truths(targets: torch.Tensor, batch: int, size: int) -> list[torch.Tensor]:
    """Collated targets (N, 6: image, class, cx, cy, w, h normalised) → per image
    (m, 5): class, x1, y1, x2, y2 in pixels of the ``size`` canvas."""
    xyxy = box_convert(targets[:, 2:6] * size, "cxcywh", "xyxy")
    rows = torch.cat([targets[:, 1:2], xyxy], 1)
    index = targets[:, 0].long()
    return [rows[index == i] for i in range(batch)]


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Mixed precision on CUDA when a dtype is given; full precision otherwise."""
    if dtype is None or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=dtype)


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: DataLoader, names: list[str], device: torch.device,
             amp: torch.dtype | None = None, conf: float = CONF, iou: float = IOU, max_det: int = MAX_DET,
             progress: bool = False, fast: bool = False, compile: bool | None = None, keep: bool = False,
             loss_fn=None) -> dict:
    """mAP of ``model`` (a deploy graph, or a train graph: its main head) on ``loader``'s
    letterboxed batches. Returns :func:`gelanc.train.metrics.coco_map`'s dict with the
    inference speed beside it, ``how`` it ran, and ``skipped``: [path, why] of each image
    that could not be decoded (left out of the score).

    ``loss_fn`` (a :class:`gelanc.train.loss.DetectionLoss`) adds the validation losses
    ``val/box_loss``, ``val/cls_loss`` and ``val/dfl_loss``: the mean over batches of the
    terms it returns for the model's eval-mode maps (``out[1]``; both heads' for a train
    graph with PGI's branch), as training averages its own. ``keep`` adds what the plots
    need (:mod:`gelanc.train.plots`): ``detections`` (per image (n, 6): x1, y1, x2, y2,
    score, class) and ``ground_truths`` (per image (m, 5): class, x1, y1, x2, y2), both in
    the letterboxed canvas's pixels, ``paths`` (of those images, in order) and ``coco``
    (the COCOeval they were scored by).

    ``fast`` runs it in the device's fastest configuration (:mod:`gelanc.inference.fastpath`),
    which converts ``model`` in place — pass a module of its own; otherwise it runs as
    it is, under autocast to ``amp`` on CUDA."""
    from gelanc.inference.postprocess import nms
    from gelanc.train.metrics import coco_map

    was_training = model.training
    model.eval()
    convert, how = (lambda x: x), "as it is"
    if fast:
        from gelanc.inference.fastpath import prepare

        p = prepare(model, device, images=len(loader.dataset), compile=compile)
        model, convert, how, amp = p.module, p.convert, p.description, None
    dets: list[torch.Tensor] = []
    gts: list[torch.Tensor] = []
    paths: list[str] = []
    losses, loss_batches = torch.zeros(3), 0
    seconds, images = 0.0, 0
    skipped: dict[str, str] = {}
    batches = loader
    if progress:
        from tqdm import tqdm

        batches = tqdm(loader, desc="validating", leave=False, unit="batch", dynamic_ncols=True)
    for imgs, targets, batch_paths, failed in batches:
        for path, why in failed:
            skipped.setdefault(path, why)
        if not len(imgs):  # every image of the batch failed to decode
            continue
        x = convert(imgs.to(device, non_blocking=True).float() / 255)
        t = time.perf_counter()
        with autocast(device, amp):
            out = model(x)
        pred = out[0].float()  # eval mode: (decoded main-head predictions, raw maps)
        dets += [d.cpu() for d in nms(pred, conf=conf, iou=iou, max_det=max_det, multi_label=True)]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds += time.perf_counter() - t
        images += len(imgs)
        gts += ground_truths(targets, len(imgs), x.shape[-1])
        paths += list(batch_paths)
        if loss_fn is not None:  # out of the timing: the speed is inference's
            losses += loss_fn(out[1], targets.to(device))[1].detach().float().cpu()
            loss_batches += 1
    model.train(was_training)
    result = coco_map(dets, gts, names, keep=keep)
    if loss_fn is not None:
        mean = losses / max(loss_batches, 1)
        result.update({"val/box_loss": float(mean[0]), "val/cls_loss": float(mean[1]),
                       "val/dfl_loss": float(mean[2])})
    if keep:
        result.update(detections=dets, ground_truths=gts, paths=paths)
    result["ms_per_image"] = 1000 * seconds / max(images, 1)
    result["how"] = how
    result["skipped"] = [[path, why] for path, why in skipped.items()]
    return result
