"""The TaskAlignedAssigner and the YOLOv9 loss: hand-worked assignments, CIoU and DFL against
formulas written out here, and the loss's behaviour (perfect vs random, gradients, PGI's
dual head, mixed precision, empty images, overfitting)."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import complete_box_iou_loss

import gelanc
from gelanc.train.assign import TaskAlignedAssigner, centres_inside, ciou
from gelanc.train.hyp import Hyp
from gelanc.train.loss import DetectionLoss, dfl, targets_per_image, xyxy_to_ltrb

NC, REG_MAX, STRIDES = 3, 16, [8.0, 16.0, 32.0]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tensors are tiny: intra-op threads buy nothing, and on a busy 2-core machine
    their spin-waits made the file ~40× slower (70 s instead of 2 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---- helpers -------------------------------------------------------------------------

def grid(w: int, h: int | None = None, stride: float = 1.0) -> torch.Tensor:
    """Anchor centres (h·w, 2) of a grid, row-major as the model flattens its maps."""
    xs, ys = torch.arange(w) + 0.5, torch.arange(h or w) + 0.5
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx, yy], -1).view(-1, 2) * stride


def assign(anchors, gt_boxes, pred_boxes, scores, labels=None, mask=None, topk=10, nc=2):
    """One image: gt_boxes (M, 4), pred_boxes (A, 4), scores (A, nc) → the assigner's outputs
    for that image (batch dim dropped)."""
    m = gt_boxes.shape[0]
    labels = torch.zeros(m, 1) if labels is None else labels.view(m, 1).float()
    mask = torch.ones(m, 1) if mask is None else mask.view(m, 1).float()
    out = TaskAlignedAssigner(nc, topk=topk)(scores[None], pred_boxes[None], anchors, labels[None],
                                            gt_boxes[None], mask[None])
    return [o[0] for o in out]


def random_maps(b: int = 2, size: int = 64, nc: int = NC, seed: int = 0, grad: bool = True, scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    return [(scale * torch.randn(b, 4 * REG_MAX + nc, size // int(s), size // int(s), generator=g))
            .requires_grad_(grad) for s in STRIDES]


TARGETS = torch.tensor([[0, 0, 0.50, 0.50, 0.40, 0.30],
                        [1, 2, 0.30, 0.60, 0.20, 0.40],
                        [1, 1, 0.70, 0.30, 0.30, 0.25]])


def ciou_formula(a: tuple, b: tuple) -> float:
    """CIoU of two xyxy boxes from the definition (Zheng et al. 2020), in plain floats."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    wa, ha, wb, hb = a[2] - a[0], a[3] - a[1], b[2] - b[0], b[3] - b[1]
    iou = iw * ih / (wa * ha + wb * hb - iw * ih)
    diag2 = (max(a[2], b[2]) - min(a[0], b[0])) ** 2 + (max(a[3], b[3]) - min(a[1], b[1])) ** 2
    centre2 = ((a[0] + a[2] - b[0] - b[2]) / 2) ** 2 + ((a[1] + a[3] - b[1] - b[3]) / 2) ** 2
    v = 4 / math.pi ** 2 * (math.atan(wb / hb) - math.atan(wa / ha)) ** 2
    alpha = v / (1 - iou + v) if v else 0.0
    return iou - centre2 / diag2 - alpha * v


# ---- the assigner, by hand ---------------------------------------------------------------

def test_candidates_are_centres_strictly_inside():
    anchors = grid(8)  # centres at 0.5 … 7.5
    # the box's left and top edges run through centres 1.5, its right edge through 4.5
    inside = centres_inside(anchors, torch.tensor([[[1.5, 1.5, 4.5, 3.2]]]))[0, 0]
    assert {tuple(p) for p in anchors[inside].tolist()} == {(2.5, 2.5), (3.5, 2.5)}


def test_one_object_every_candidate_positive_with_normalised_scores():
    """Exact predicted boxes (IoU 1): the alignment is √score, and the normalised target
    score is √score / √(best score) × 1."""
    anchors = grid(8)
    gt = torch.tensor([[2.0, 2.0, 6.0, 5.0]])  # centres x 2.5…5.5, y 2.5…4.5: 12 candidates
    scores = torch.full((64, 2), 0.1)
    scores[:, 0] = 0.25
    best, good = 3 * 8 + 4, 2 * 8 + 2  # the anchors at (4.5, 3.5) and (2.5, 2.5)
    scores[best, 0], scores[good, 0] = 0.64, 0.49
    labels, boxes, tscores, fg, idx = assign(anchors, gt, gt.expand(64, 4), scores, topk=20)
    expected = {y * 8 + x for y in (2, 3, 4) for x in (2, 3, 4, 5)}
    assert set(fg.nonzero().flatten().tolist()) == expected
    assert tscores[best].tolist() == pytest.approx([1.0, 0.0], abs=1e-5)
    assert float(tscores[good, 0]) == pytest.approx(0.7 / 0.8, rel=1e-5)
    assert float(tscores[0 * 8 + 0].sum()) == 0  # background
    others = sorted(expected - {best, good})
    assert tscores[others, 0].tolist() == pytest.approx([0.5 / 0.8] * 10, rel=1e-5)
    assert torch.equal(boxes[fg], gt.expand(12, 4)) and bool((labels[fg] == 0).all())


def test_topk_keeps_the_best_aligned_candidates():
    anchors = grid(4)
    gt = torch.tensor([[0.0, 0.0, 4.0, 4.0]])  # every anchor is a candidate
    scores = torch.full((16, 2), 0.2)
    scores[[5, 9, 14], 1] = torch.tensor([0.9, 0.7, 0.8])
    *_, fg, _ = assign(anchors, gt, gt.expand(16, 4), scores, labels=torch.tensor([1.0]), topk=3)
    assert fg.nonzero().flatten().tolist() == [5, 9, 14]


def test_topk_ranks_by_iou_too():
    """Same scores everywhere: the predicted boxes' overlap decides (β = 6 makes it steep)."""
    anchors = grid(4)
    gt = torch.tensor([[0.0, 0.0, 4.0, 4.0]])
    pred = torch.tensor([[0.5, 0.5, 3.5, 3.5]]).repeat(16, 1)  # IoU 9/16
    pred[[2, 7]] = torch.tensor([[0.0, 0.0, 4.0, 3.9], [0.1, 0.0, 4.0, 4.0]])  # nearly exact
    *_, fg, _ = assign(anchors, gt, pred, torch.full((16, 2), 0.5), topk=2)
    assert fg.nonzero().flatten().tolist() == [2, 7]


def test_an_anchor_claimed_twice_goes_to_the_object_its_box_overlaps_most():
    anchors = torch.tensor([[1.0, 1.0], [2.5, 2.5], [5.0, 5.0]])  # in A only, in both, in B only
    gts = torch.tensor([[0.0, 0.0, 4.0, 4.0], [2.0, 2.0, 6.0, 6.0]])  # A (class 0), B (class 1)
    classes = torch.tensor([0.0, 1.0])
    scores = torch.full((3, 2), 0.5)
    for shared_box, winner in [([2.0, 2.0, 5.5, 5.5], 1),  # IoU with A 4/24.25, with B 12.25/16
                               ([0.0, 0.0, 3.8, 3.8], 0)]:
        pred = torch.stack([gts[0], torch.tensor(shared_box), gts[1]])
        labels, boxes, tscores, fg, idx = assign(anchors, gts, pred, scores, labels=classes)
        assert fg.tolist() == [True, True, True]
        assert idx.tolist() == [0, winner, 1] and labels.tolist() == [0, winner, 1]
        assert torch.equal(boxes[1], gts[winner])
        assert float(tscores[1, 1 - winner]) == 0 and float(tscores[1, winner]) > 0


def test_fg_anchors_lie_inside_their_object_and_padding_is_ignored():
    g = torch.Generator().manual_seed(1)
    anchors = grid(16, stride=4.0)
    b, m, a = 4, 5, 256
    xy = torch.rand(b, m, 2, generator=g) * 40
    gts = torch.cat([xy, xy + 4 + torch.rand(b, m, 2, generator=g) * 20], -1)
    mask = torch.rand(b, m, 1, generator=g) > 0.3
    centres = anchors + torch.randn(a, 2, generator=g)
    lt, rb = 6 * torch.rand(b, a, 2, generator=g), 6 * torch.rand(b, a, 2, generator=g)
    pred = torch.cat([centres - lt, centres + rb], -1)
    out = TaskAlignedAssigner(2, topk=4)(torch.rand(b, a, 2, generator=g), pred, anchors,
                                         torch.randint(0, 2, (b, m, 1), generator=g), gts, mask)
    labels, boxes, tscores, fg, idx = out
    assert fg.any()
    bi, ai = fg.nonzero(as_tuple=True)
    box = gts[bi, idx[bi, ai]]
    assert bool(mask[bi, idx[bi, ai], 0].all())  # never a padded slot
    p = anchors[ai]
    assert bool(((p > box[:, :2]) & (p < box[:, 2:])).all())  # centre inside the assigned object
    assert int(fg.sum()) <= int(mask.sum()) * 4  # at most topk per real object
    assert float(tscores[~fg].abs().sum()) == 0
    assert bool((tscores.sum(-1)[fg] <= 1 + 1e-6).all())


def test_a_box_smaller_than_the_stride_takes_candidates_from_a_grown_box():
    """A 3-px object between the centres of a stride-8 grid: no anchor lies inside it, so
    the reference's rule gives it nothing to learn from; grown to 16 px about its centre
    (ultralytics' rule) it has the four anchors around it, which learn its own box."""
    anchors = grid(8, stride=8.0)  # centres at 4, 12, 20, …
    tiny = torch.tensor([[[6.5, 6.5, 9.5, 9.5]]])
    pred = torch.tensor([6.0, 6.0, 10.0, 10.0]).expand(1, 64, 4)  # every anchor predicts about the object
    scores = torch.full((1, 64, 2), 0.5)
    args = (scores, pred, anchors, torch.zeros(1, 1, 1), tiny, torch.ones(1, 1, 1))
    assert not TaskAlignedAssigner(2, topk=10, min_side=0.0)(*args)[3].any()
    _, boxes, tscores, fg, _ = TaskAlignedAssigner(2, topk=10, min_side=16.0)(*args)
    assert sorted(anchors[fg[0]].tolist()) == [[4.0, 4.0], [4.0, 12.0], [12.0, 4.0], [12.0, 12.0]]
    assert torch.equal(boxes[fg], tiny[0].expand(4, 4))  # the object's own box is the target
    assert float(tscores[fg].sum()) > 0
    big = torch.tensor([[[2.0, 2.0, 30.0, 30.0]]])  # a box over the floor is not changed by it
    a = TaskAlignedAssigner(2, min_side=0.0)(scores, pred, anchors, torch.zeros(1, 1, 1), big, torch.ones(1, 1, 1))
    b = TaskAlignedAssigner(2, min_side=16.0)(scores, pred, anchors, torch.zeros(1, 1, 1), big, torch.ones(1, 1, 1))
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_no_objects_at_all():
    out = TaskAlignedAssigner(3)(torch.rand(2, 5, 3), torch.rand(2, 5, 4), torch.rand(5, 2), torch.zeros(2, 0, 1),
                                 torch.zeros(2, 0, 4), torch.zeros(2, 0, 1))
    labels, boxes, tscores, fg, idx = out
    assert not fg.any() and float(tscores.abs().sum()) == 0 and bool((labels == 3).all())
    assert [o.shape for o in out] == [(2, 5), (2, 5, 4), (2, 5, 3), (2, 5), (2, 5)]


# ---- CIoU and DFL ----------------------------------------------------------------------

BOX_PAIRS = [((0, 0, 4, 4), (1, 1, 5, 6)), ((2, 3, 10, 7), (2, 3, 10, 7)), ((0, 0, 2, 8), (1, 2, 9, 5)),
             ((0, 0, 1, 1), (3, 3, 5, 4)), ((10, 20, 50, 30), (12, 18, 40, 35))]


def test_ciou_agrees_with_the_definition_and_with_torchvision():
    a = torch.tensor([p[0] for p in BOX_PAIRS], dtype=torch.float64)
    b = torch.tensor([p[1] for p in BOX_PAIRS], dtype=torch.float64)
    got = ciou(a, b)
    want = [ciou_formula(*p) for p in BOX_PAIRS]
    assert got.tolist() == pytest.approx(want, abs=1e-6)
    assert want[3] < 0  # disjoint boxes: negative, which the assigner clamps and the loss keeps
    # on ordinary boxes torchvision's loss is 1 − the same thing
    assert (1 - complete_box_iou_loss(a, b)).tolist() == pytest.approx(want, abs=1e-6)


def test_ciou_is_finite_for_a_collapsed_box():
    """A DFL decode can give a zero-height or zero-size box (all mass on bin 0): the
    reference's ε on the heights keeps the value and its gradient finite."""
    pred = torch.tensor([[5.0, 5.0, 5.0, 5.0], [2.0, 5.0, 6.0, 5.0]], requires_grad=True)
    gt = torch.tensor([[4.0, 4.0, 6.0, 6.0], [4.0, 4.0, 6.0, 6.0]])
    value = ciou(pred, gt)
    value.sum().backward()
    assert bool(torch.isfinite(value).all()) and bool(torch.isfinite(pred.grad).all())


def test_dfl_targets_are_clamped_inside_the_bins():
    anchors = torch.tensor([[50.0, 50.0], [3.0, 3.0]])
    boxes = torch.tensor([[0.0, 40.0, 100.0, 52.5], [5.0, 1.0, 9.0, 4.0]])  # the second starts right of its anchor
    d = xyxy_to_ltrb(boxes, anchors, REG_MAX)
    assert d[0].tolist() == pytest.approx([REG_MAX - 1.01, 10.0, REG_MAX - 1.01, 2.5])
    assert d[1].tolist() == pytest.approx([0.0, 2.0, 6.0, 1.0])
    dfl(torch.zeros(2, 4, REG_MAX), d)  # the right-hand bin of 14.99 is 15: it exists


def test_dfl_by_hand():
    # uniform logits: cross-entropy ln 16 towards any bin, whatever the split
    assert float(dfl(torch.zeros(1, 4, 16), torch.tensor([[0.0, 3.3, 7.5, 14.99]]))) == pytest.approx(math.log(16))
    # all logits 0 but bin 2 at L: CE(2) = ln(e^L + 15) − L, CE(3) = ln(e^L + 15)
    L = 5.0
    logits = torch.zeros(1, 4, 16)
    logits[..., 2] = L
    ce2, ce3 = math.log(math.exp(L) + 15) - L, math.log(math.exp(L) + 15)
    t = torch.tensor([[2.0, 2.25, 2.5, 2.75]])
    want = sum((1 - f) * ce2 + f * ce3 for f in (0, 0.25, 0.5, 0.75)) / 4
    assert float(dfl(logits, t)) == pytest.approx(want, rel=1e-5)


# ---- target padding ----------------------------------------------------------------------

def test_targets_are_padded_per_image():
    t = torch.tensor([[2, 1, 0.5, 0.5, 0.5, 0.5], [0, 1, 0.25, 0.25, 0.5, 0.5], [2, 0, 0.5, 0.5, 1.0, 1.0],
                      [0, 2, 0.5, 0.25, 0.2, 0.1], [2, 1, 0.1, 0.1, 0.2, 0.2]])
    out = targets_per_image(t, 4, torch.tensor([200.0, 100, 200, 100]))  # a 200 × 100 image
    assert out.shape == (4, 3, 5)
    assert out[0].tolist() == [[1, 0, 0, 100, 50], [2, 80, 20, 120, 30], [0] * 5]
    assert out[2].tolist() == [[1, 50, 25, 150, 75], [0, 0, 0, 200, 100], [1, 0, 0, 40, 20]]
    assert float(out[1].abs().sum()) == 0 and float(out[3].abs().sum()) == 0


# ---- the loss ------------------------------------------------------------------------------

def perfect_single_level(nc: int = NC):
    """One stride-8 map of a 64 × 64 image whose decoded boxes equal the object's at every
    anchor (edges on anchor-centre lines, so every distance is a whole bin: DFL ≈ 0), with the
    object's class confident at the 9 anchors inside it and background confident elsewhere."""
    gt_px = torch.tensor([12.0, 20.0, 44.0, 52.0])  # grid 1.5 2.5 5.5 6.5
    anchors = grid(8)
    g = gt_px / 8
    dist = torch.cat([anchors - g[:2], g[2:] - anchors], -1).clamp(0, REG_MAX - 1).round().long()  # (64, 4)
    box_logits = torch.nn.functional.one_hot(dist, REG_MAX).float() * 40 - 20  # (64, 4, 16)
    inside = ((anchors > g[:2]) & (anchors < g[2:])).all(-1)
    cls_logits = torch.full((64, nc), -14.0)
    cls_logits[inside, 1] = 14.0
    x = torch.cat([box_logits.view(64, -1), cls_logits], 1)  # (A, C)
    target = torch.tensor([[0, 1, 28 / 64, 36 / 64, 32 / 64, 32 / 64]])
    return [x.T.reshape(1, -1, 8, 8)], target, int(inside.sum())


def test_a_perfect_prediction_costs_almost_nothing():
    maps, t, n_inside = perfect_single_level()
    assert n_inside == 9
    loss = DetectionLoss(NC, REG_MAX, [8.0], Hyp())
    good, items = loss(maps, t)
    bad, bad_items = loss([torch.randn_like(maps[0])], t)
    assert float(items.max()) < 1e-3 and float(bad_items.min()) > 0.1
    assert float(good) < 1e-4 * float(bad)


def test_gradients_reach_every_map_and_both_kinds_of_channel():
    loss = DetectionLoss(NC, REG_MAX, STRIDES, Hyp())
    main, aux = random_maps(seed=1), random_maps(seed=2)
    total, items = loss((main, aux), TARGETS)
    total.backward()
    for m in main + aux:
        assert m.grad is not None and bool(torch.isfinite(m.grad).all())
        assert float(m.grad[:, 4 * REG_MAX:].abs().sum()) > 0  # class channels: BCE on every anchor
    for head in (main, aux):  # box channels: only the positives, which may all lie on some levels
        assert sum(float(m.grad[:, :4 * REG_MAX].abs().sum()) for m in head) > 0
    assert float(total.detach()) == pytest.approx(float(items.sum()) * 2, rel=1e-6)  # × batch size


def test_dual_loss_is_main_plus_aux_weight_times_aux():
    hyp = Hyp(aux_weight=0.25)
    loss = DetectionLoss(NC, REG_MAX, STRIDES, hyp)
    main, aux = random_maps(seed=3, grad=False), random_maps(seed=4, grad=False)
    both, items = loss((main, aux), TARGETS)
    m_total, m_items = loss(main, TARGETS)
    a_total, a_items = loss(aux, TARGETS)
    assert items.tolist() == pytest.approx((m_items + 0.25 * a_items).tolist(), rel=1e-6)
    assert float(both) == pytest.approx(float(m_total) + 0.25 * float(a_total), rel=1e-6)
    assert float(loss((main, aux), TARGETS)[0]) != pytest.approx(float(loss((aux, main), TARGETS)[0]))


def test_gains_and_batch_scaling():
    maps = random_maps(seed=5, grad=False)
    base = DetectionLoss(NC, REG_MAX, STRIDES, Hyp(box=1.0, cls=1.0, dfl=1.0))(maps, TARGETS)[1]
    total, items = DetectionLoss(NC, REG_MAX, STRIDES, Hyp())(maps, TARGETS)
    assert items.tolist() == pytest.approx((base * torch.tensor([7.5, 0.5, 1.5])).tolist(), rel=1e-6)
    assert float(total) == pytest.approx(2 * float(items.sum()), rel=1e-6)


def test_no_targets_leaves_only_the_class_term():
    loss = DetectionLoss(NC, REG_MAX, STRIDES, Hyp())
    maps = random_maps(seed=6)
    total, items = loss(maps, torch.zeros(0, 6))
    assert bool(torch.isfinite(total)) and float(items[0]) == 0 and float(items[2]) == 0 and float(items[1]) > 0
    # all background, normalised by 1: plain BCE towards 0 of every class logit, × the cls gain
    logits = torch.cat([m.detach()[:, 4 * REG_MAX:].flatten(2) for m in maps], 2)
    want = torch.nn.functional.softplus(logits).sum() * 0.5
    assert float(items[1]) == pytest.approx(float(want), rel=1e-5)
    total.backward()
    assert all(m.grad is not None for m in maps)


def test_an_image_without_objects_in_a_batch():
    """Image 0 has no object: its anchors are all background, and the box and DFL terms are
    those of image 1 alone (assignment is per image; both share image 1's normalisation)."""
    loss = DetectionLoss(NC, REG_MAX, STRIDES, Hyp())
    maps = random_maps(seed=7, grad=False)
    t = TARGETS[TARGETS[:, 0] == 1]
    _, both = loss(maps, t)
    _, alone = loss([m[1:] for m in maps], t - torch.tensor([1.0, 0, 0, 0, 0, 0]))
    assert float(both[0]) == pytest.approx(float(alone[0]), rel=1e-5)
    assert float(both[2]) == pytest.approx(float(alone[2]), rel=1e-5)
    assert float(both[1]) > float(alone[1])  # image 0's background adds to the class term


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_maps_give_a_float32_loss(dtype):
    loss = DetectionLoss(NC, REG_MAX, STRIDES, Hyp())
    low = [m.detach().to(dtype).requires_grad_() for m in random_maps(seed=8)]
    total, items = loss(low, TARGETS)
    assert total.dtype == torch.float32 and items.dtype == torch.float32 and bool(torch.isfinite(total))
    # the same numbers, widened first: the very same loss (it is computed in float32)
    same, _ = loss([m.detach().float() for m in low], TARGETS)
    assert float(total.detach()) == float(same)
    total.backward()
    assert all(m.grad.dtype == dtype and bool(torch.isfinite(m.grad).all()) for m in low)


def test_a_compiled_models_output_is_accepted():
    """gelan-t's train output is a list of maps; yolov9-t's is (main maps, aux maps)."""
    torch.manual_seed(0)
    x = torch.zeros(2, 3, 64, 64)
    for spec, dual in [("specs/gelan-t.gel", False), ("specs/yolov9-t.gel", True)]:
        model = gelanc.compile(spec, nc=NC).train()
        det = [m for m in model.modules() if type(m).__name__ == "Detect"][0]
        loss = DetectionLoss(det.nc, det.reg_max, det.strides, Hyp())
        preds = model(x)
        assert isinstance(preds, tuple) == dual
        total, items = loss(preds, TARGETS)
        total.backward()
        assert bool(torch.isfinite(total)) and float(items[0]) > 0
        trainable = [p for p in model.parameters() if p.requires_grad]
        assert all(p.grad is not None for p in trainable)  # every weight is reached, both heads' too


def test_the_loss_drives_free_predictions_to_the_targets():
    torch.manual_seed(0)
    loss = DetectionLoss(NC, REG_MAX, STRIDES, Hyp())
    maps = [m.detach().requires_grad_() for m in random_maps(seed=9, scale=0.1)]
    opt = torch.optim.Adam(maps, lr=0.05)
    history = []
    for _ in range(200):
        opt.zero_grad()
        total, items = loss(maps, TARGETS)
        total.backward()
        opt.step()
        history.append(float(total.detach()))
    assert history[-1] < 0.03 * history[0]  # ~350 → ~5: what is left is the soft targets' entropy
    assert float(items[0]) < 0.1  # boxes nearly exact: 7.5 × (1 − CIoU) small
