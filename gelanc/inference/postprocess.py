"""From a model's decoded predictions to boxes: confidence filter, NMS, letterbox undone.

A compiled model in eval mode returns ``(y, maps)`` where ``y`` is (B, 4 + nc, A):
per anchor cx, cy, w, h in pixels of the (letterboxed) input, then the nc class
probabilities (already sigmoid). :func:`nms` turns that into a list of (n, 6) boxes
``x1, y1, x2, y2, score, class`` per image, as the reference's
``non_max_suppression`` does (its defaults, its class-offset trick, its candidate
cap); :func:`unletterbox` maps such boxes back to the original image, the exact
inverse of :func:`gelanc.data.dataset.letterbox`.
"""

from __future__ import annotations

import torch
from torchvision.ops import batched_nms, box_convert


def candidates(x: torch.Tensor, conf: float, multi_label: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One image's (A, 4 + nc) predictions → the boxes over ``conf``: xyxy (n, 4), score (n,), class (n,).

    Single-label keeps each anchor's best class only (what a user wants to see);
    multi-label makes a box of every class over ``conf`` (what mAP wants: a second
    guess can still be a true positive, so recall is higher at the same precision)."""
    x = x[x[:, 4:].amax(1) > conf]  # cheap first cut: most anchors score nothing
    box = box_convert(x[:, :4], "cxcywh", "xyxy")
    probs = x[:, 4:]
    if multi_label:
        i, j = (probs > conf).nonzero(as_tuple=True)
        return box[i], probs[i, j], j
    score, cls = probs.max(1)
    return box, score, cls


def nms(pred: torch.Tensor | tuple | list, conf: float = 0.25, iou: float = 0.45, max_det: int = 300,
        multi_label: bool = False, agnostic: bool = False, max_nms: int = 30000) -> list[torch.Tensor]:
    """Non-maximum suppression of (B, 4 + nc, A) predictions → per image (n, 6) x1, y1, x2, y2, score, class.

    Boxes of different classes never suppress each other (torchvision's
    ``batched_nms``), unless ``agnostic``. At most ``max_nms`` best-scored
    candidates enter NMS (an untrained model scores everything, and NMS is quadratic);
    at most ``max_det`` boxes come out, best first. ``pred`` may also be the model's
    whole eval output ``(y, maps)``."""
    if isinstance(pred, (tuple, list)):
        pred = pred[0]
    out = []
    for x in pred.transpose(1, 2):  # per image: (A, 4 + nc)
        box, score, cls = candidates(x, conf, multi_label)
        if len(score) > max_nms:
            top = score.topk(max_nms).indices
            box, score, cls = box[top], score[top], cls[top]
        keep = batched_nms(box, score, torch.zeros_like(cls) if agnostic else cls, iou)[:max_det]  # best first
        out.append(torch.cat([box[keep], score[keep, None], cls[keep, None].to(box.dtype)], 1))
    return out


def unletterbox(boxes: torch.Tensor, letterboxed_size: int, original_hw: tuple[int, int]) -> torch.Tensor:
    """(n, 4) xyxy boxes in the ``letterboxed_size`` square canvas → the original image's pixels, clipped.

    Undoes :func:`gelanc.data.dataset.letterbox` step for step: it scaled each axis by
    its own ratio new/old (the rounded sizes ``nh``, ``nw`` make the two ratios differ
    slightly) and then shifted by the centred padding, so the inverse removes the shift
    and divides by those same ratios — not by one common scale, which would be off by
    up to a pixel on the long side of a large image."""
    h, w = original_hw
    r = letterboxed_size / max(h, w)
    nh, nw = max(1, round(h * r)), max(1, round(w * r))
    top, left = (letterboxed_size - nh) // 2, (letterboxed_size - nw) // 2
    shift = boxes.new_tensor([left, top, left, top])
    scale = boxes.new_tensor([w / nw, h / nh, w / nw, h / nh])
    out = (boxes - shift) * scale
    return torch.minimum(out.clamp(min=0), boxes.new_tensor([w, h, w, h]))
