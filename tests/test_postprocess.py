"""NMS of decoded predictions and the letterbox undone."""

import pytest
import torch

from gelanc.data.dataset import letterbox
from gelanc.inference.postprocess import nms, unletterbox


def predictions(rows: list[tuple[float, float, float, float, list[float]]]) -> torch.Tensor:
    """(1, 4 + nc, A) as a model's eval output: one anchor a row of cx, cy, w, h, class probabilities."""
    return torch.tensor([[cx, cy, w, h, *p] for cx, cy, w, h, p in rows]).T.unsqueeze(0)


def close(t: torch.Tensor, expected: list) -> bool:
    return t.shape == torch.Size([len(expected), len(expected[0])]) and torch.allclose(t, torch.tensor(expected))


def test_overlapping_boxes_of_one_class_leave_the_best():
    # two 100×100 boxes 10 px apart (IoU 90/110 ≈ 0.82), and one far away
    pred = predictions([(50, 50, 100, 100, [0.9, 0.0]), (60, 50, 100, 100, [0.8, 0.0]),
                        (400, 400, 50, 50, [0.7, 0.0])])
    (out,) = nms(pred, conf=0.25, iou=0.45)
    assert out.shape == (2, 6)
    assert out[0].tolist() == pytest.approx([0, 0, 100, 100, 0.9, 0])
    assert out[1].tolist() == pytest.approx([375, 375, 425, 425, 0.7, 0])


def test_different_classes_do_not_suppress_unless_agnostic():
    pred = predictions([(50, 50, 100, 100, [0.9, 0.0]), (60, 50, 100, 100, [0.0, 0.8])])
    (out,) = nms(pred)
    assert sorted(out[:, 5].tolist()) == [0, 1]
    (agnostic,) = nms(pred, agnostic=True)
    assert agnostic.shape == (1, 6) and agnostic[0, 4:].tolist() == pytest.approx([0.9, 0])


def test_an_iou_under_the_threshold_keeps_both():
    pred = predictions([(50, 50, 100, 100, [0.9]), (60, 50, 100, 100, [0.8])])  # IoU ≈ 0.82
    assert len(nms(pred, iou=0.85)[0]) == 2
    assert len(nms(pred, iou=0.8)[0]) == 1


def test_confidence_filter_is_strict_and_uses_the_best_class():
    pred = predictions([(10, 10, 4, 4, [0.3, 0.1]), (50, 50, 4, 4, [0.2, 0.25]), (90, 90, 4, 4, [0.1, 0.26])])
    (out,) = nms(pred, conf=0.25)
    assert close(out[:, 4:], [[0.3, 0], [0.26, 1]])


def test_max_det_keeps_the_best_scores():
    # 10 disjoint boxes scored 0.50 … 0.95
    pred = predictions([(20 * i + 5, 5, 8, 8, [0.5 + 0.05 * i]) for i in range(10)])
    (out,) = nms(pred, max_det=3)
    assert out[:, 4].tolist() == pytest.approx([0.95, 0.9, 0.85])


def test_max_nms_caps_the_candidates_before_nms():
    pred = predictions([(20 * i + 5, 5, 8, 8, [0.5 + 0.05 * i]) for i in range(10)])
    (out,) = nms(pred, max_nms=4)
    assert out[:, 4].tolist() == pytest.approx([0.95, 0.9, 0.85, 0.8])


def test_multi_label_makes_a_box_of_every_class_over_conf():
    pred = predictions([(50, 50, 20, 20, [0.6, 0.4, 0.1])])
    (single,) = nms(pred, conf=0.25)
    (multi,) = nms(pred, conf=0.25, multi_label=True)
    assert close(single[:, 4:], [[0.6, 0]])
    assert close(multi[:, 4:], [[0.6, 0], [0.4, 1]])
    assert (multi[:, :4] == torch.tensor([40.0, 40, 60, 60])).all()


def test_a_batch_gives_one_tensor_an_image_and_empty_ones_are_0_by_6():
    a = predictions([(50, 50, 20, 20, [0.9])])
    b = predictions([(50, 50, 20, 20, [0.1])])
    out = nms((torch.cat([a, b]), ["maps"]))  # the model's whole eval output works too
    assert [o.shape for o in out] == [(1, 6), (0, 6)]
    assert nms(torch.zeros(2, 6, 0))[1].shape == (0, 6)


def test_many_anchors_run_without_a_loop_over_boxes():
    torch.manual_seed(0)
    pred = torch.rand(2, 4 + 80, 8400)
    pred[:, :2] *= 640
    pred[:, 2:4] = pred[:, 2:4] * 100 + 1
    out = nms(pred, conf=0.001, iou=0.7, multi_label=True)
    assert all(len(o) == 300 for o in out)
    assert all((o[:-1, 4] >= o[1:, 4]).all() for o in out)  # best first


@pytest.mark.parametrize("hw", [(480, 640), (640, 480), (300, 300), (333, 517), (517, 333), (7, 1000)])
def test_unletterbox_inverts_letterbox(hw):
    h, w = hw
    size = 320
    torch.manual_seed(h * 1000 + w)
    # boxes inside the image, in its pixels
    x1y1 = torch.rand(20, 2) * torch.tensor([w, h]) * 0.8
    wh = torch.rand(20, 2) * (torch.tensor([w, h]) - x1y1) + 0.5
    xyxy = torch.cat([x1y1, torch.minimum(x1y1 + wh, torch.tensor([w, h]))], 1)
    cxcywh = torch.cat([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], 1) / torch.tensor([w, h, w, h])
    image = torch.zeros(3, h, w, dtype=torch.uint8)
    canvas, boxed = letterbox(image, cxcywh, size)
    assert canvas.shape == (3, size, size)
    c = boxed * size  # cx, cy, w, h in canvas pixels
    canvas_xyxy = torch.cat([c[:, :2] - c[:, 2:] / 2, c[:, :2] + c[:, 2:] / 2], 1)
    back = unletterbox(canvas_xyxy, size, (h, w))
    assert torch.allclose(back, xyxy, atol=1e-3)


def test_unletterbox_clips_to_the_image():
    # a 200×100 image in a 100 canvas: scale 0.5, 25 px of padding above and below
    out = unletterbox(torch.tensor([[-10.0, 0, 120, 100], [10, 30, 20, 40]]), 100, (100, 200))
    assert out.tolist() == [[0, 0, 200, 100], [20, 10, 40, 30]]
