"""The TaskAlignedAssigner (TOOD; the reference's ``utils/tal/assigner.py``): which anchors
learn which object, and how strongly.

For each object the candidates are the anchors whose centre lies strictly inside its box
— a box grown about its centre to ``min_side`` pixels where it is narrower or lower (0:
the reference, which leaves a box smaller than the finest stride with one candidate or
none; ultralytics grows it to its middle stride, 16).
Among them the ``topk`` with the highest alignment ``score^α · CIoU^β`` are positive
(score: the predicted probability of the object's class; CIoU of the predicted box with
the object's, clamped at 0). An anchor claimed by several objects goes to the object its
predicted box overlaps most — of *all* the image's objects, as the reference's
``select_highest_overlaps`` takes it (``ties="reference"``, the default), or of those that
claimed it (``ties="selecting"``). A positive's target score is the one-hot class times
its alignment, normalised per object so that the object's best-aligned anchor gets the
object's best IoU: a badly predicted object asks for a low score, not for 1.

The reference's rule can hand an anchor to an object that did not pick it — even one
whose box the anchor lies outside — when the anchor's predicted box happens to overlap
that object more; the pair then counts in that object's normalisation too. It is the
rule the paper's models were trained with. The ``selecting`` rule keeps every anchor
with an object that chose it among its top-k, which some find cleaner in crowded scenes,
and needs no dense IoU and no host sync on GPU.

Everything is batched over images and objects (objects padded to the most an image has,
with a mask); the CIoU is computed only for (object, anchor) candidate pairs, since only
those can be positive.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

CIOU_EPS = 1e-7  # the reference's bbox_iou default


def ciou(box1: torch.Tensor, box2: torch.Tensor, eps: float = CIOU_EPS) -> torch.Tensor:
    """Complete IoU of xyxy boxes, elementwise over broadcast leading dims → (...).

    Written as the reference's ``bbox_iou(xywh=False, CIoU=True)`` rather than taken from
    ``torchvision.ops.complete_box_iou_loss``: the two agree to ~1e-7 on ordinary boxes
    (same IoU/ε, same ``c² + ε``, same ``α = v / (v − IoU + 1 + ε)`` without gradient), but
    the reference adds ε to both heights, and torchvision does not. A DFL decode can give
    a zero-height box (all mass on bin 0 top and bottom); torchvision's ``atan(w / h)`` is
    then NaN (w = 0) or has a NaN gradient (w > 0), which would poison the whole step.
    """
    b1x1, b1y1, b1x2, b1y2 = box1.unbind(-1)
    b2x1, b2y1, b2x2, b2y2 = box2.unbind(-1)
    w1, h1 = b1x2 - b1x1, b1y2 - b1y1 + eps
    w2, h2 = b2x2 - b2x1, b2y2 - b2y1 + eps
    inter = (torch.minimum(b1x2, b2x2) - torch.maximum(b1x1, b2x1)).clamp(min=0) * \
            (torch.minimum(b1y2, b2y2) - torch.maximum(b1y1, b2y1)).clamp(min=0)
    iou = inter / (w1 * h1 + w2 * h2 - inter + eps)
    cw = torch.maximum(b1x2, b2x2) - torch.minimum(b1x1, b2x1)  # enclosing box
    ch = torch.maximum(b1y2, b2y2) - torch.minimum(b1y1, b2y1)
    c2 = cw ** 2 + ch ** 2 + eps
    rho2 = ((b2x1 + b2x2 - b1x1 - b1x2) ** 2 + (b2y1 + b2y2 - b1y1 - b1y2) ** 2) / 4  # centre distance²
    v = (4 / math.pi ** 2) * (torch.atan(w2 / h2) - torch.atan(w1 / h1)) ** 2
    with torch.no_grad():  # as the reference (and the CIoU paper): α is a weight, not a path
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)


def centres_inside(anchors: torch.Tensor, gt: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """(B, M, A) bool: anchor centre (A, 2) strictly inside box (B, M, 4), by more than ``eps``.

    Four (B, M, A) comparisons rather than the reference's (B, M, A, 4) stack of distances:
    the same test without a 215 MB float stack at batch 16, 640 px, 100 objects."""
    x, y = anchors[:, 0], anchors[:, 1]
    x1, y1, x2, y2 = (gt[..., i, None] for i in range(4))
    return (x - x1 > eps) & (y - y1 > eps) & (x2 - x > eps) & (y2 - y > eps)


def grown(gt: torch.Tensor, min_side: float) -> torch.Tensor:
    """xyxy boxes (…, 4) with each side under ``min_side`` widened to it about the box's centre."""
    if not min_side:
        return gt
    centre, size = (gt[..., :2] + gt[..., 2:]) / 2, gt[..., 2:] - gt[..., :2]
    size = size.clamp(min=min_side)
    return torch.cat([centre - size / 2, centre + size / 2], -1)


def ciou_where(mask: torch.Tensor, gt: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """(B, M, A): CIoU clamped at 0 of the (object, anchor) pairs ``mask`` selects — gt
    (B, M, 4) and pred (B, A, 4) xyxy — and 0 elsewhere. Only those pairs are computed:
    the dense (B, M, A, 4) product of the reference is what the assigner's memory goes on."""
    bi, mi, ai = mask.nonzero(as_tuple=True)
    out = torch.zeros(mask.shape, dtype=pred.dtype, device=pred.device)
    out[bi, mi, ai] = ciou(gt[bi, mi], pred[bi, ai]).clamp(min=0).to(pred.dtype)
    return out


class TaskAlignedAssigner:
    """Task-aligned label assignment, one call per head (no state between calls).

    ``num_classes`` comes first so that ``TaskAlignedAssigner(nc)`` reads naturally; the
    reference's keywords (``topk=…, num_classes=…``) work too. Its defaults here are the
    ones YOLOv9 trains with (topk 10, α 0.5, β 6; the reference class's own are 13, 1.0, 6).
    """

    def __init__(self, num_classes: int, topk: int = 10, alpha: float = 0.5, beta: float = 6.0,
                 eps: float = 1e-9, ties: str = "reference", min_side: float = 0.0):
        if ties not in ("reference", "selecting"):
            raise ValueError(f"ties must be 'reference' or 'selecting', not {ties!r}")
        self.num_classes, self.topk, self.alpha, self.beta, self.eps = num_classes, topk, alpha, beta, eps
        self.ties, self.min_side = ties, min_side

    @torch.no_grad()
    def __call__(self, pd_scores: torch.Tensor, pd_bboxes: torch.Tensor, anc_points: torch.Tensor,
                 gt_labels: torch.Tensor, gt_bboxes: torch.Tensor, mask_gt: torch.Tensor):
        """Assign anchors to objects.

        pd_scores (B, A, nc) probabilities, pd_bboxes (B, A, 4) xyxy pixels, anc_points
        (A, 2) pixels, gt_labels (B, M, 1), gt_bboxes (B, M, 4) xyxy pixels, mask_gt
        (B, M, 1) real (not padding) objects → target_labels (B, A) long, target_bboxes
        (B, A, 4), target_scores (B, A, nc) float32, fg_mask (B, A) bool, target_gt_idx
        (B, A) long. Background anchors get object 0's label and box (as the reference),
        zero scores and fg False; with M = 0 their label is ``num_classes``.
        """
        b, a, _ = pd_scores.shape
        m = gt_bboxes.shape[1]
        if m == 0:
            return self._empty(b, a, pd_scores.device)
        scores, boxes = pd_scores.float(), pd_bboxes.float()
        anchors, gt_boxes = anc_points.float(), gt_bboxes.float()
        labels = gt_labels.long().view(b, m)

        # only the candidates come from the grown box; the overlaps are the object's own box's
        candidate = centres_inside(anchors, grown(gt_boxes, self.min_side)) & mask_gt.view(b, m, 1).bool()
        iou = ciou_where(candidate, gt_boxes, boxes)  # (B, M, A), 0 off the candidates
        metric = self._alignment(scores, labels, iou, candidate)
        pos = self._topk(metric, candidate)
        if self.ties == "reference":
            pos, iou, metric = self._against_all(pos, iou, metric, scores, labels, gt_boxes, boxes)
        fg, gt_idx, pos = self._resolve(pos, iou)
        target_labels = labels.gather(1, gt_idx)  # (B, A)
        target_bboxes = gt_boxes.gather(1, gt_idx[..., None].expand(b, a, 4))
        target_scores = F.one_hot(target_labels, self.num_classes).float() * fg[..., None]
        target_scores = target_scores * self._normalised(metric, iou, pos)[..., None]
        return target_labels, target_bboxes, target_scores, fg, gt_idx

    def _empty(self, b: int, a: int, device: torch.device):
        """No object in the whole batch: everything is background."""
        return (torch.full((b, a), self.num_classes, dtype=torch.long, device=device),
                torch.zeros(b, a, 4, device=device), torch.zeros(b, a, self.num_classes, device=device),
                torch.zeros(b, a, dtype=torch.bool, device=device), torch.zeros(b, a, dtype=torch.long, device=device))

    def _alignment(self, scores: torch.Tensor, labels: torch.Tensor, iou: torch.Tensor,
                   candidate: torch.Tensor) -> torch.Tensor:
        """(B, M, A) score^α · IoU^β, where the score is each anchor's probability of the
        object's class; 0 off the candidates (their IoU is 0)."""
        b, m = labels.shape
        class_score = scores.gather(2, labels[:, None, :].expand(b, scores.shape[1], m)).transpose(1, 2)
        return class_score.pow(self.alpha) * iou.pow(self.beta) * candidate

    def _topk(self, metric: torch.Tensor, candidate: torch.Tensor) -> torch.Tensor:
        """(B, M, A) bool: each object's ``topk`` best-aligned candidates.

        Ranked as the reference ranks them: non-candidates at 0, tied with zero-metric
        candidates, then masked out. Which of a tie ``topk`` keeps carries no weight in the
        loss, but it decides which anchors count as claimed twice, and so which go through
        the reference's resolution: the same ranking gives the same anchors."""
        k = min(self.topk, metric.shape[-1])
        top = metric.topk(k, dim=-1).indices  # (B, M, k); metric is 0 off the candidates
        in_top = torch.zeros_like(candidate).scatter_(-1, top, True)
        return in_top & candidate

    def _against_all(self, pos: torch.Tensor, iou: torch.Tensor, metric: torch.Tensor, scores: torch.Tensor,
                     labels: torch.Tensor, gt_boxes: torch.Tensor, boxes: torch.Tensor):
        """The reference's resolution of anchors several objects claim: each goes to the
        object of highest CIoU with its predicted box among *all* the image's objects
        (padding included, as the reference's dense argmax; a padded box's CIoU is 0), and
        that pair's IoU and alignment — computed as for a candidate — then count in the
        object's normalisation. → (pos, iou, metric), each anchor claimed at most once.

        Only the contested anchors get the dense row of CIoUs, (n, M): the reference
        computes the whole (B, M, A) block for them."""
        bi, ai = (pos.sum(1) > 1).nonzero(as_tuple=True)  # a host sync on GPU, as the reference's
        if len(bi) == 0:
            return pos, iou, metric
        over = ciou(gt_boxes[bi], boxes[bi, ai][:, None, :]).clamp(min=0)  # (n, M)
        win = over.argmax(1)  # the first of equal maxima, as torch's argmax in the reference
        best = over.gather(1, win[:, None]).squeeze(1)
        score = scores[bi, ai, labels[bi, win]]
        pos, iou, metric = pos.clone(), iou.clone(), metric.clone()
        pos[bi, :, ai] = False
        pos[bi, win, ai] = True
        iou[bi, win, ai] = best
        metric[bi, win, ai] = score.pow(self.alpha) * best.pow(self.beta)
        return pos, iou, metric

    @staticmethod
    def _resolve(pos: torch.Tensor, iou: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One object per anchor: among the objects that claim it, the one of highest IoU
        (after :meth:`_against_all` there is one claimant at most, which this keeps).

        → fg (B, A), target_gt_idx (B, A), the resolved (B, M, A) mask. For an anchor with
        a single claimant the argmax is that claimant, so no branch on "any multiple
        claims" (a host sync on GPU) is needed."""
        fg = pos.any(1)
        gt_idx = iou.masked_fill(~pos, -1.0).argmax(1)  # background: all −1 → object 0, as the reference
        resolved = torch.zeros_like(pos).scatter_(1, gt_idx[:, None, :], True) & fg[:, None, :]
        return fg, gt_idx, resolved

    def _normalised(self, metric: torch.Tensor, iou: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """(B, A): each positive's alignment × its object's best positive IoU ÷ its object's
        best positive alignment; 0 for background."""
        metric = metric * pos
        best_metric = metric.amax(-1, keepdim=True)  # (B, M, 1)
        best_iou = (iou * pos).amax(-1, keepdim=True)
        return (metric * best_iou / (best_metric + self.eps)).amax(1)
