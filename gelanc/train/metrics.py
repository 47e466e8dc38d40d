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


def matches(e, nc: int, iou: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The matches COCOeval made at the IoU threshold nearest ``iou``: every counted
    detection's score, class and whether it found an object (a true positive), and per
    class the number of objects.

    Detections COCO ignores (out of the area range, or matched to an ignored object) are
    left out, as they are of its AP; only the ``max_dets`` best of an image were matched."""
    t = int(np.argmin(np.abs(e.params.iouThrs - iou)))
    scores, classes, tp = [], [], []
    n = np.zeros(nc, dtype=np.int64)
    for one in e.evalImgs:  # one (image, class) pair each; None where it has neither boxes nor objects
        if one is None or not 0 <= one["category_id"] < nc:
            continue
        counted = ~np.asarray(one["dtIgnore"][t], dtype=bool).reshape(-1)
        scores.append(np.asarray(one["dtScores"], dtype=np.float64).reshape(-1)[counted])
        tp.append((np.asarray(one["dtMatches"][t]).reshape(-1) > 0)[counted])
        classes.append(np.full(int(counted.sum()), one["category_id"], dtype=np.int64))
        n[one["category_id"]] += int((~np.asarray(one["gtIgnore"], dtype=bool)).sum())
    if not scores:
        return np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool), n
    return np.concatenate(scores), np.concatenate(classes), np.concatenate(tp), n


def precision_recall(e, nc: int, conf: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per class (precision, recall, instances) at IoU 0.5 of the detections scoring over ``conf``.

    COCO matches each class in an image greedily by decreasing score, so a detection's
    match depends only on those scoring higher: the matches COCOeval already made are
    exactly those of the detections over ``conf`` alone."""
    scores, classes, tp, n = matches(e, nc)
    over = scores > conf
    tps = np.bincount(classes[over & tp], minlength=nc).astype(np.float64)
    fps = np.bincount(classes[over & ~tp], minlength=nc).astype(np.float64)
    precision = np.where(tps + fps > 0, tps / np.maximum(tps + fps, 1), 0.0)
    recall = np.where(n > 0, tps / np.maximum(n, 1), 0.0)
    return precision, recall, n.astype(np.float64)


def confidence_curves(e, nc: int, points: int = 1001) -> dict[str, np.ndarray]:
    """Precision, recall and F1 at IoU 0.5 of the detections scoring over each confidence
    ``conf`` of 0, 1/(points−1) … 1, per class: arrays (nc, points), from COCOeval's matches
    (the reason :func:`precision_recall` may use them holds at every threshold).

    Where no detection of a class scores over ``conf`` its precision is 1 (nothing is
    wrong), as ultralytics draws it, but a class never detected at all has precision 0;
    recall is 0 for a class without objects (``instances`` says which those are)."""
    grid = np.linspace(0.0, 1.0, points)
    scores, classes, tp, n = matches(e, nc)
    precision, recall = np.zeros((nc, points)), np.zeros((nc, points))
    for k in range(nc):
        mine = classes == k
        s, t = scores[mine], tp[mine]
        order = np.argsort(-s, kind="stable")
        s, t = s[order], t[order]
        over = np.searchsorted(-s, -grid, side="left")  # how many score over each threshold
        tps = np.concatenate([[0], np.cumsum(t)])[over]
        empty = 1.0 if len(s) else 0.0
        precision[k] = np.where(over > 0, tps / np.maximum(over, 1), empty)
        recall[k] = tps / n[k] if n[k] else 0.0
    total = precision + recall
    f1 = np.where(total > 0, 2 * precision * recall / np.where(total > 0, total, 1), 0.0)
    return {"conf": grid, "precision": precision, "recall": recall, "f1": f1, "instances": n}


def pr_curves(e, nc: int, iou: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """COCO's precision-recall curve per class at the IoU threshold nearest ``iou``: the
    101 recall points 0, 0.01 … 1, and the precision (made monotone from the right, 0
    beyond the highest recall reached) at each, (nc, 101) — NaN for a class without
    objects. Each row's mean is the class's AP there (``per_class[…]["map50"]``)."""
    t = int(np.argmin(np.abs(e.params.iouThrs - iou)))
    p = np.asarray(e.eval["precision"][t, :, :nc, 0, -1], dtype=np.float64).T.copy()
    p[(p < 0).any(1)] = np.nan
    return np.asarray(e.params.recThrs, dtype=np.float64), p


def confusion_matrix(detections: list[torch.Tensor], ground_truths: list[torch.Tensor], nc: int,
                     conf: float = 0.25, iou: float = 0.45) -> np.ndarray:
    """The detection confusion matrix (nc + 1, nc + 1) as ultralytics counts it: rows the
    predicted class, columns the true class, index ``nc`` the background.

    Per image, the detections scoring over ``conf`` are matched to the objects whatever
    their classes, at IoU over ``iou``: each detection keeps the object it overlaps most,
    then each object the detection that overlaps it most. A matched pair counts at
    (predicted, true); an object left unmatched at (background, true) — a miss; a
    detection left unmatched at (predicted, background) — a false positive. So column
    ``c`` sums to the number of objects of class ``c``; the background corner stays 0."""
    from torchvision.ops import box_iou

    m = np.zeros((nc + 1, nc + 1), dtype=np.int64)
    for d, g in zip(detections, ground_truths):
        d = d.detach().cpu().float().reshape(-1, 6)
        g = g.detach().cpu().float().reshape(-1, 5)
        d = d[(d[:, 4] > conf) & (d[:, 5] >= 0) & (d[:, 5] < nc)]
        g = g[(g[:, 0] >= 0) & (g[:, 0] < nc)]
        dc, gc = d[:, 5].long().numpy(), g[:, 0].long().numpy()
        partner = np.full(len(g), -1)  # each object's detection
        if len(d) and len(g):
            overlap = box_iou(g[:, 1:5], d[:, :4])
            gi, di = torch.nonzero(overlap > iou, as_tuple=True)
            order = torch.argsort(overlap[gi, di], descending=True, stable=True)
            gi, di = gi[order].numpy(), di[order].numpy()
            keep = np.sort(np.unique(di, return_index=True)[1])  # each detection: its best object
            gi, di = gi[keep], di[keep]
            keep = np.unique(gi, return_index=True)[1]  # each object: its best detection among those
            partner[gi[keep]] = di[keep]
        hit = partner >= 0
        np.add.at(m, (dc[partner[hit]], gc[hit]), 1)
        np.add.at(m, (nc, gc[~hit]), 1)
        used = np.zeros(len(d), dtype=bool)
        used[partner[hit]] = True
        np.add.at(m, (dc[~used], nc), 1)
    return m


def coco_map(detections: list[torch.Tensor], ground_truths: list[torch.Tensor], names: list[str],
             conf: float = 0.25, max_dets: int = MAX_DETS, verbose: bool = False, keep: bool = False) -> dict:
    """mAP of per-image detections (n, 6: x1, y1, x2, y2, score, class) against per-image
    ground truths (m, 5: class, x1, y1, x2, y2), both in the same pixels.

    Returns ``map50`` (AP at IoU 0.5), ``map`` (AP averaged over IoU 0.5 … 0.95),
    ``map75``, ``precision`` and ``recall`` (IoU 0.5, detections over ``conf``,
    averaged over classes), ``per_class`` ({name: {map50, map, precision, recall,
    instances}} for each class with ground truths — COCO leaves the others out of
    every mean, having nothing to recall), ``images`` and ``instances``. With no
    ground truth at all every number is 0. pycocotools' prints go away unless
    ``verbose``. ``keep`` adds ``coco``: the COCOeval, for the curves of
    :func:`confidence_curves` and :func:`pr_curves`."""
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
    result = {"map50": _mean(precision[iou50]), "map": _mean(precision), "map75": _mean(precision[iou75]),
              "precision": float(p[has_gt].mean()) if has_gt.any() else 0.0,
              "recall": float(r[has_gt].mean()) if has_gt.any() else 0.0,
              "per_class": per_class, "images": len(ground_truths), "instances": instances}
    if keep:
        result["coco"] = e
    return result
