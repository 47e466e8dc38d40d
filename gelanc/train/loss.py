"""The YOLOv9 loss (the reference's ``utils/loss_tal_dual.py``): TAL assignment, then
CIoU + DFL on the positives and BCE on every anchor, per head.

Each head's terms are normalised by the sum of its own target scores; PGI's auxiliary
head adds its terms × ``aux_weight`` (0.25) to the main head's; then the gains box 7.5,
cls 0.5, dfl 1.5 apply.

With ``aux_assign: lead`` the auxiliary head is not assigned from its own predictions
but from the main (lead) head's, as YOLOv7's lead-guided assigner does, and coarser:
``aux_topk`` candidates an object instead of ``topk``, so the aux head learns from more
anchors, with soft targets shaped by the lead's predictions. The YOLOv9 paper reports
that this "achieved much better performance" for its auxiliary supervision; the
reference's code does not offer it. As in the reference the returned loss is the sum of the three
terms × the batch size (the gradient of a sum over images, which the nominal-batch
accumulation then adds up), beside the three terms detached for logging.

Everything is computed in float32, whatever the maps' dtype (bf16/fp16 under AMP): the
softmax-expectation decode, the CIoU and the normalisation by a sum over all anchors all
lose too much in 8 or 11 bits of mantissa.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torchvision.ops import box_convert

from gelanc.train.assign import TaskAlignedAssigner, ciou
from gelanc.train.hyp import Hyp


def anchor_grid(maps: list[torch.Tensor], strides: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor centres (A, 2) in grid units (cell centres) and each one's stride (A, 1), float32:
    the model's own ``make_anchors``, so that the loss decodes exactly as inference does."""
    from gelanc.backend.fx import make_anchors

    return make_anchors(maps, strides, 0.5, dtype=torch.float32)


def targets_per_image(targets: torch.Tensor, batch: int, size: torch.Tensor) -> torch.Tensor:
    """Collated targets (N, 6: image, class, cx, cy, w, h normalised) → (B, M, 5): class,
    x1, y1, x2, y2 in pixels (``size`` = [w, h, w, h]), padded with zero rows to M, the
    most objects one image has.

    Vectorised (the reference loops over images): each target's slot is its rank among
    its image's targets, from a stable sort by image index."""
    if len(targets) == 0:
        return torch.zeros(batch, 0, 5, device=targets.device)
    image = targets[:, 0].long()
    order = torch.argsort(image, stable=True)
    image, rows = image[order], targets[order].float()
    counts = torch.bincount(image, minlength=batch)
    first = counts.cumsum(0) - counts  # where each image's targets start in sorted order
    slot = torch.arange(len(image), device=targets.device) - first[image]
    out = torch.zeros(batch, int(counts.max()), 5, device=targets.device)
    out[image, slot, 0] = rows[:, 1]
    out[image, slot, 1:] = box_convert(rows[:, 2:6] * size.to(rows.device), "cxcywh", "xyxy")
    return out


def objects_mask(targets: torch.Tensor, batch: int, m: int) -> torch.Tensor:
    """(B, M, 1) bool: which padded slots hold an object — counted, not inferred from a
    non-zero box as the reference does (``gt_bboxes.sum() > 0``)."""
    counts = torch.bincount(targets[:, 0].long(), minlength=batch) if len(targets) else \
        torch.zeros(batch, dtype=torch.long, device=targets.device)
    return (torch.arange(m, device=targets.device) < counts[:, None])[..., None]


def ltrb_to_xyxy(dist: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Distances (…, 4) from each anchor to the box's left, top, right, bottom → xyxy."""
    lt, rb = dist.chunk(2, -1)
    return torch.cat([anchors - lt, anchors + rb], -1)


def xyxy_to_ltrb(boxes: torch.Tensor, anchors: torch.Tensor, reg_max: int) -> torch.Tensor:
    """Distances from each anchor to the box's sides, in grid units, clamped to the DFL's
    range [0, reg_max − 1 − 0.01] so that both bins around a distance exist."""
    lt, rb = boxes.chunk(2, -1)
    return torch.cat([anchors - lt, rb - anchors], -1).clamp(0, reg_max - 1 - 0.01)


def dfl(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Distribution focal loss: cross-entropy towards the two bins around each target
    distance, weighted by closeness (a target of 2.3 asks for 70% on bin 2, 30% on bin 3).
    logits (n, 4, reg_max), target (n, 4) in [0, reg_max − 1) → (n, 1), the mean of the sides."""
    left = target.long()
    w_right = target - left
    flat = logits.reshape(-1, logits.shape[-1])

    def ce(idx: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(flat, idx.reshape(-1), reduction="none").view(left.shape)

    return (ce(left) * (1 - w_right) + ce(left + 1) * w_right).mean(-1, keepdim=True)


class Decoded(NamedTuple):
    """One head's predictions: (B, A, 4, reg_max) distance logits, (B, A, nc) class
    logits, (B, A, 4) xyxy boxes in grid units, anchors (A, 2) and strides (A, 1)."""

    dist_logits: torch.Tensor
    cls_logits: torch.Tensor
    pred_boxes: torch.Tensor
    anchors: torch.Tensor
    stride: torch.Tensor


class Targets(NamedTuple):
    """An assignment: target boxes (B, A, 4) in pixels, scores (B, A, nc), positives (B, A)."""

    boxes: torch.Tensor
    scores: torch.Tensor
    fg: torch.Tensor


def is_dual(preds) -> bool:
    """A PGI model's train output is (main maps, aux maps); a single head's is its maps."""
    return isinstance(preds, (tuple, list)) and len(preds) == 2 and all(isinstance(p, (list, tuple)) for p in preds)


class DetectionLoss:
    """The loss of a model's train-mode output: its per-level maps (B, 4·reg_max + nc, H, W),
    or PGI's (main maps, aux maps). Each head gets its own assignment."""

    def __init__(self, nc: int, reg_max: int, strides: list[float], hyp: Hyp | None = None):
        hyp = hyp or Hyp()
        self.nc, self.reg_max, self.strides, self.hyp = nc, reg_max, [float(s) for s in strides], hyp
        rule = dict(alpha=hyp.alpha, beta=hyp.beta, ties=hyp.assign_ties, min_side=hyp.assign_min_side)
        self.assigner = TaskAlignedAssigner(nc, topk=hyp.topk, **rule)
        self.coarse = TaskAlignedAssigner(nc, topk=hyp.aux_topk, **rule)

    def __call__(self, preds, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """preds: the model's train output; targets (N, 6): image, class, cx, cy, w, h
        (normalised) → (loss, [box, cls, dfl] detached). loss = their sum × batch size."""
        heads = [(list(preds[0]), 1.0), (list(preds[1]), self.hyp.aux_weight)] if is_dual(preds) \
            else [(list(preds), 1.0)]
        first = heads[0][0][0]
        with torch.autocast(first.device.type, enabled=False):
            batch = first.shape[0]
            h, w = first.shape[2] * self.strides[0], first.shape[3] * self.strides[0]  # input image size
            targets = targets.to(first.device).float()
            gt = targets_per_image(targets, batch, torch.tensor([w, h, w, h], device=first.device))
            mask = objects_mask(targets, batch, gt.shape[1])
            decoded = [self.decode(maps) for maps, _ in heads]
            lead = decoded[0]
            terms = 0
            for i, (d, (_, weight)) in enumerate(zip(decoded, heads)):
                if i and self.hyp.aux_assign == "lead":  # the aux head learns the lead's coarse assignment
                    t = self.assign(lead, gt, mask, self.coarse)
                else:
                    t = self.assign(d, gt, mask, self.assigner)
                terms = terms + weight * self.terms(d, t)
            terms = terms * torch.tensor([self.hyp.box, self.hyp.cls, self.hyp.dfl], device=terms.device)
        return terms.sum() * batch, terms.detach()

    def decode(self, maps: list[torch.Tensor]) -> Decoded:
        """A head's maps as distance logits, class logits and boxes, in float32."""
        b, no = maps[0].shape[0], 4 * self.reg_max + self.nc
        x = torch.cat([m.float().reshape(b, no, -1) for m in maps], 2).transpose(1, 2)  # (B, A, no)
        dist_logits, cls_logits = x.split((4 * self.reg_max, self.nc), -1)
        dist_logits = dist_logits.reshape(b, -1, 4, self.reg_max)
        anchors, stride = anchor_grid(maps, self.strides)
        bins = torch.arange(self.reg_max, device=x.device, dtype=torch.float32)
        pred_boxes = ltrb_to_xyxy(dist_logits.softmax(-1) @ bins, anchors)  # (B, A, 4), grid units
        return Decoded(dist_logits, cls_logits, pred_boxes, anchors, stride)

    @staticmethod
    def assign(d: Decoded, gt: torch.Tensor, mask: torch.Tensor, assigner: TaskAlignedAssigner) -> Targets:
        """The targets ``assigner`` gives from ``d``'s predictions (detached)."""
        _, t_boxes, t_scores, fg, _ = assigner(
            d.cls_logits.detach().sigmoid(), d.pred_boxes.detach() * d.stride, d.anchors * d.stride,
            gt[..., :1], gt[..., 1:], mask)
        return Targets(t_boxes, t_scores, fg)

    def terms(self, d: Decoded, t: Targets) -> torch.Tensor:
        """[1 − CIoU, BCE, DFL] of ``d``'s predictions against targets ``t``, each ÷ the
        target-score sum (at least 1)."""
        b = d.cls_logits.shape[0]
        dist_logits, cls_logits, pred_boxes, anchors, stride = d
        t_boxes, t_scores, fg = t
        norm = t_scores.sum().clamp(min=1)
        bce = F.binary_cross_entropy_with_logits(cls_logits, t_scores, reduction="none").sum() / norm
        # no branch on "any positives" (a host sync): with none, the sums below are 0 and
        # still part of the graph, which DDP wants
        t_boxes = t_boxes / stride
        weight = t_scores.sum(-1)[fg].unsqueeze(-1)  # (n, 1)
        box = ((1 - ciou(pred_boxes[fg], t_boxes[fg])).unsqueeze(-1) * weight).sum() / norm
        t_ltrb = xyxy_to_ltrb(t_boxes[fg], anchors.expand(b, -1, -1)[fg], self.reg_max)
        dist = (dfl(dist_logits[fg], t_ltrb) * weight).sum() / norm
        return torch.stack([box, bce, dist])
