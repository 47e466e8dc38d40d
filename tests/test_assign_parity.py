"""The assigner against the reference's semantics on crowded scenes.

``reference_assign`` below is a dense transcription, written for this test from the
reference's ``utils/tal/assigner.py`` (TaskAlignedAssigner.forward, get_pos_mask,
get_box_metrics, select_topk_candidates, select_highest_overlaps, get_targets): every
(object, anchor) pair is scored, the top-k are taken over the masked metric, and an
anchor several objects claim goes to the argmax of CIoU over all objects. gelanc's
assigner computes only what it needs (candidate pairs, contested anchors); on scenes
of 20+ overlapping objects a picture, the two must give the same loss and gradients.
"""

import pytest
import torch
import torch.nn.functional as F

from gelanc.train.assign import ciou
from gelanc.train.hyp import Hyp
from gelanc.train.loss import DetectionLoss

NC, REG_MAX, STRIDES, SIZE = 5, 16, [8.0, 16.0, 32.0], 128


def reference_assign(pd_scores, pd_bboxes, anc_points, gt_labels, gt_bboxes, mask_gt, topk=10, alpha=0.5,
                     beta=6.0, eps=1e-9):
    b, a, nc = pd_scores.shape
    m = gt_bboxes.shape[1]
    labels = gt_labels.long().squeeze(-1)  # (b, m)
    # every pair: the anchor's score for the object's class, and CIoU (clamped at 0)
    scores = torch.stack([pd_scores[i].T[labels[i]] for i in range(b)])  # (b, m, a)
    overlaps = ciou(gt_bboxes[:, :, None, :].expand(b, m, a, 4), pd_bboxes[:, None, :, :].expand(b, m, a, 4))
    overlaps = overlaps.clamp(0)
    align = scores.pow(alpha) * overlaps.pow(beta)
    # anchors whose centre lies inside the object's box by more than eps on every side
    x, y = anc_points[:, 0], anc_points[:, 1]
    deltas = torch.stack([x - gt_bboxes[..., 0:1], y - gt_bboxes[..., 1:2],
                          gt_bboxes[..., 2:3] - x, gt_bboxes[..., 3:4] - y], -1)
    inside = (deltas.amin(-1) > eps).float()
    # top-k of the masked metric; a padded object's indices all become 0, and an index
    # counted more than once is dropped
    idx = (align * inside).topk(topk, dim=-1).indices
    idx = torch.where(mask_gt.expand(b, m, topk).bool(), idx, torch.zeros_like(idx))
    counts = F.one_hot(idx, a).sum(-2)
    in_topk = torch.where(counts > 1, torch.zeros_like(counts), counts).float()
    mask_pos = in_topk * inside * mask_gt.float()
    # an anchor claimed by several objects: to the object of highest CIoU among all of them
    claims = mask_pos.sum(1)
    if claims.max() > 1:
        multi = (claims[:, None, :] > 1).expand(b, m, a)
        best = F.one_hot(overlaps.argmax(1), m).permute(0, 2, 1).float()
        mask_pos = torch.where(multi, best, mask_pos)
    fg = mask_pos.sum(1)
    gt_idx = mask_pos.argmax(1)
    t_labels = torch.stack([labels[i][gt_idx[i]] for i in range(b)])
    t_boxes = torch.stack([gt_bboxes[i][gt_idx[i]] for i in range(b)])
    t_scores = torch.where(fg[..., None] > 0, F.one_hot(t_labels, nc), 0)
    align = align * mask_pos
    pos_align = align.amax(-1, keepdim=True)
    pos_overlap = (overlaps * mask_pos).amax(-1, keepdim=True)
    norm = (align * pos_overlap / (pos_align + eps)).amax(-2).unsqueeze(-1)
    return t_labels, t_boxes, t_scores * norm, fg.bool(), gt_idx


class Reference:
    def __call__(self, *args):
        return reference_assign(*args)


def crowded(seed: int, images: int = 3, objects: int = 24):
    """Targets (N, 6) of ``objects`` overlapping boxes a picture, clustered so that many
    anchors lie inside several boxes."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(images):
        centre = torch.rand(2, generator=g) * 0.4 + 0.3
        for _ in range(objects):
            c = centre + (torch.rand(2, generator=g) - 0.5) * 0.35
            wh = torch.rand(2, generator=g) * 0.35 + 0.08
            rows.append([i, int(torch.randint(NC, (1,), generator=g)), *c.clamp(0.1, 0.9).tolist(), *wh.tolist()])
    return torch.tensor(rows)


def head_maps(seed: int, images: int = 3) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(images, 4 * REG_MAX + NC, SIZE // int(s), SIZE // int(s), generator=g) * 2).requires_grad_()
            for s in STRIDES]


def loss_and_grads(preds, targets, assigner=None, ties="reference"):
    fn = DetectionLoss(NC, REG_MAX, STRIDES, Hyp(assign_ties=ties, assign_min_side=0.0))  # the reference's rule
    if assigner is not None:
        fn.assigner = assigner
    loss, terms = fn(preds, targets)
    leaves = [t for t in (preds if not isinstance(preds[0], list) else preds[0] + preds[1])]
    grads = torch.autograd.grad(loss, leaves)
    return loss.detach(), terms, grads


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("dual", [False, True])
def test_crowded_scenes_match_the_reference(seed, dual):
    targets = crowded(seed)
    preds = (head_maps(seed), head_maps(seed + 100)) if dual else head_maps(seed)
    ours = loss_and_grads(preds, targets)
    ref = loss_and_grads(preds, targets, Reference())
    assert torch.allclose(ours[0], ref[0], rtol=1e-5, atol=0)
    assert torch.allclose(ours[1], ref[1], rtol=1e-5, atol=1e-8)
    for a, b in zip(ours[2], ref[2]):
        assert (a - b).abs().max() <= 1e-5 * b.abs().max()


def test_the_scenes_are_contested_and_the_selecting_rule_differs():
    """Without contested anchors the test above would prove nothing of the rule."""
    from gelanc.train.assign import TaskAlignedAssigner, centres_inside

    targets = crowded(0)
    fn = DetectionLoss(NC, REG_MAX, STRIDES)
    from gelanc.train.loss import anchor_grid, targets_per_image

    maps = head_maps(0)
    anchors, stride = anchor_grid(maps, STRIDES)
    gt = targets_per_image(targets, 3, torch.tensor([SIZE] * 4))
    inside = centres_inside(anchors * stride, gt[..., 1:]).sum(1)
    assert int((inside > 1).sum()) > 100  # hundreds of anchors inside several boxes
    assert isinstance(fn.assigner, TaskAlignedAssigner) and fn.assigner.ties == "reference"
    ref = loss_and_grads(maps, targets)[0]
    selecting = loss_and_grads(head_maps(0), targets, ties="selecting")[0]
    assert abs(float(selecting - ref)) > 1e-4 * abs(float(ref))


# ---- PGI's aux head assigned by the lead head (aux_assign: lead) ---------------------------


def test_lead_guided_aux_targets_come_from_the_main_head_and_are_coarser():
    from gelanc.train.loss import objects_mask, targets_per_image

    targets = crowded(1)
    main, aux = head_maps(1), head_maps(7)
    lead = DetectionLoss(NC, REG_MAX, STRIDES, Hyp(aux_assign="lead", aux_topk=20))
    own = DetectionLoss(NC, REG_MAX, STRIDES, Hyp())
    gt = targets_per_image(targets, 3, torch.tensor([SIZE] * 4))
    mask = objects_mask(targets, 3, gt.shape[1])
    dm, da = lead.decode(main), lead.decode(aux)
    # the loss is the main head's own terms plus 0.25 × the aux head's against the lead's coarse targets
    coarse = lead.assign(dm, gt, mask, lead.coarse)
    want = lead.terms(dm, lead.assign(dm, gt, mask, lead.assigner)) + 0.25 * lead.terms(da, coarse)
    want = want * torch.tensor([7.5, 0.5, 1.5])
    _, got = lead((main, aux), targets)
    assert torch.allclose(got, want, rtol=1e-6)
    # coarser: more positives than the lead's own top-10; and not the aux head's own assignment
    fine = lead.assign(dm, gt, mask, lead.assigner)
    assert int(coarse.fg.sum()) > int(fine.fg.sum())
    _, independent = own((main, aux), targets)
    assert not torch.allclose(got, independent, rtol=1e-3)

