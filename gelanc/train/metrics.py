"""mAP by pycocotools, from tensors held in memory.

COCO's evaluation is the yardstick every YOLO paper reports, so gelanc does not
reimplement it: the detections and ground truths are turned into pycocotools' own
objects (no temporary JSON file) and ``COCOeval`` scores them. Only the "all areas"
range is evaluated — gelanc reports no small/medium/large breakdown, and each area
range would cost a full extra matching pass.

Coordinates only need to be the same pixels for both sides (the letterboxed canvas in
validation): IoU, and so every number here, does not change when both are scaled.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import torch

# COCO's default: the 100 best detections of an image count (the reference's val.py uses it too)
MAX_DETS = 100


def _xywh(xyxy: torch.Tensor) -> torch.Tensor:
    return torch.cat([xyxy[:, :2], xyxy[:, 2:4] - xyxy[:, :2]], 1)


def coco_datasets(detections: list[torch.Tensor], ground_truths: list[torch.Tensor], nc: int
                  ) -> tuple[dict, list[dict]]:
    """The COCO ground-truth dataset dict and the result annotations, image ``i`` having id ``i``.

    Annotation ids start at 1: COCOeval stores the matched partner's id and reads 0
    as "unmatched", so an id 0 would make its first box never count."""
    images = [{"id": i} for i in range(len(ground_truths))]
    categories = [{"id": c, "name": str(c)} for c in range(nc)]
    gts: list[dict] = []
    for i, g in enumerate(ground_truths):
        g = g.detach().cpu().double().reshape(-1, 5)
        xywh = _xywh(g[:, 1:5])
        for c, box, area in zip(g[:, 0].long().tolist(), xywh.tolist(), (xywh[:, 2] * xywh[:, 3]).tolist()):
            gts.append({"id": len(gts) + 1, "image_id": i, "category_id": c, "bbox": box, "area": area,
                        "iscrowd": 0})
    dts: list[dict] = []
    for i, d in enumerate(detections):
        d = d.detach().cpu().double().reshape(-1, 6)
        xywh = _xywh(d[:, :4])
        for box, score, c, area in zip(xywh.tolist(), d[:, 4].tolist(), d[:, 5].long().tolist(),
                                       (xywh[:, 2] * xywh[:, 3]).tolist()):
            dts.append({"id": len(dts) + 1, "image_id": i, "category_id": c, "bbox": box, "score": score,
                        "area": area, "iscrowd": 0})
    return {"images": images, "annotations": gts, "categories": categories}, dts


def _coco(dataset: dict):
    """A pycocotools COCO object from a dict (its constructor only takes file names)."""
    from pycocotools.coco import COCO

    c = COCO()
    c.dataset = dataset
    c.createIndex()
    return c


def evaluate(detections: list[torch.Tensor], ground_truths: list[torch.Tensor], nc: int,
             max_dets: int = MAX_DETS):
    """A COCOeval for bbox after ``evaluate()`` and ``accumulate()`` (its prints not silenced here).

    The result object is built directly rather than by ``COCO.loadRes``, which fails on
    an empty list (no detections is a real outcome of an untrained model) and spends
    time making polygon segmentations that bbox evaluation never reads."""
    from pycocotools.cocoeval import COCOeval

    gt, dts = coco_datasets(detections, ground_truths, nc)
    dt = _coco({"images": gt["images"], "annotations": dts, "categories": gt["categories"]})
    e = COCOeval(_coco(gt), dt, "bbox")
    e.params.areaRng, e.params.areaRngLbl = [[0, 1e10]], ["all"]
    e.params.maxDets = [max_dets]
    e.evaluate()
    e.accumulate()
    return e


def _mean(p: np.ndarray) -> float:
    """COCO's mean of a precision slice: the -1 entries (no ground truth) are left out."""
    p = p[p > -1]
    return float(p.mean()) if p.size else 0.0


def precision_recall(e, nc: int, conf: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per class (precision, recall, instances) at IoU 0.5 of the detections scoring over ``conf``.

    COCO matches each class in an image greedily by decreasing score, so a detection's
    match depends only on those scoring higher: the matches COCOeval already made are
    exactly those of the detections over ``conf`` alone."""
    tp, fp, n = np.zeros(nc), np.zeros(nc), np.zeros(nc)
    for one in e.evalImgs:  # one (image, class) pair each; None where it has neither boxes nor objects
        if one is None or not 0 <= one["category_id"] < nc:
            continue
        k = one["category_id"]
        over = np.asarray(one["dtScores"]) > conf
        matched = np.asarray(one["dtMatches"][0]) > 0  # row 0: IoU 0.5
        counted = ~np.asarray(one["dtIgnore"][0], dtype=bool)
        tp[k] += (over & matched & counted).sum()
        fp[k] += (over & ~matched & counted).sum()
        n[k] += (~np.asarray(one["gtIgnore"], dtype=bool)).sum()
    precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
    recall = np.where(n > 0, tp / np.maximum(n, 1), 0.0)
    return precision, recall, n


def coco_map(detections: list[torch.Tensor], ground_truths: list[torch.Tensor], names: list[str],
             conf: float = 0.25, max_dets: int = MAX_DETS, verbose: bool = False) -> dict:
    """mAP of per-image detections (n, 6: x1, y1, x2, y2, score, class) against per-image
    ground truths (m, 5: class, x1, y1, x2, y2), both in the same pixels.

    Returns ``map50`` (AP at IoU 0.5), ``map`` (AP averaged over IoU 0.5 … 0.95),
    ``map75``, ``precision`` and ``recall`` (IoU 0.5, detections over ``conf``,
    averaged over classes), ``per_class`` ({name: {map50, map, precision, recall,
    instances}} for each class with ground truths — COCO leaves the others out of
    every mean, having nothing to recall), ``images`` and ``instances``. With no
    ground truth at all every number is 0. pycocotools' prints go away unless
    ``verbose``."""
    if len(detections) != len(ground_truths):
        raise ValueError(f"{len(detections)} images of detections but {len(ground_truths)} of ground truths")
    nc = len(names)
    instances = sum(int(g.reshape(-1, 5).shape[0]) for g in ground_truths)
    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with quiet:
        e = evaluate(detections, ground_truths, nc, max_dets)
    precision = e.eval["precision"][:, :, :, 0, -1]  # IoU thresholds × recall points × classes
    iou50, iou75 = (int(np.argmin(np.abs(e.params.iouThrs - t))) for t in (0.5, 0.75))
    p, r, n = precision_recall(e, nc, conf)
    has_gt = n > 0
    per_class = {names[k]: {"map50": _mean(precision[iou50, :, k]), "map": _mean(precision[:, :, k]),
                            "precision": float(p[k]), "recall": float(r[k]), "instances": int(n[k])}
                 for k in range(nc) if has_gt[k]}
    return {"map50": _mean(precision[iou50]), "map": _mean(precision), "map75": _mean(precision[iou75]),
            "precision": float(p[has_gt].mean()) if has_gt.any() else 0.0,
            "recall": float(r[has_gt].mean()) if has_gt.any() else 0.0,
            "per_class": per_class, "images": len(ground_truths), "instances": instances}
