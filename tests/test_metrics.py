"""mAP by pycocotools: cases whose values are worked out by hand.

COCO's AP: for each IoU threshold 0.50, 0.55 … 0.95, the precision (made monotone
from the right) is read at the 101 recall points 0, 0.01 … 1 — 0 beyond the highest
recall reached — and averaged. mAP@0.5:0.95 averages that over the 10 thresholds.
"""


import numpy as np
import pytest
import torch

from gelanc.train.metrics import coco_map, confidence_curves, confusion_matrix, pr_curves

NAMES = ["a", "b", "c"]


def gt(*rows) -> torch.Tensor:
    """(m, 5) class, x1, y1, x2, y2."""
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 5)


def det(*rows) -> torch.Tensor:
    """(n, 6) x1, y1, x2, y2, score, class."""
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 6)


def test_detections_equal_to_the_ground_truths_score_1():
    gts = [gt([0, 10, 10, 50, 60], [1, 100, 100, 200, 150]), gt([2, 0, 0, 30, 30])]
    dets = [det([10, 10, 50, 60, 0.9, 0], [100, 100, 200, 150, 0.8, 1]), det([0, 0, 30, 30, 0.7, 2])]
    r = coco_map(dets, gts, NAMES)
    assert r["map50"] == pytest.approx(1) and r["map"] == pytest.approx(1) and r["map75"] == pytest.approx(1)
    assert r["images"] == 2 and r["instances"] == 3
    assert set(r["per_class"]) == {"a", "b", "c"}
    assert all(c["map"] == pytest.approx(1) for c in r["per_class"].values())
    assert r["precision"] == pytest.approx(1) and r["recall"] == pytest.approx(1)


def test_detections_far_away_score_0():
    gts = [gt([0, 10, 10, 50, 60])]
    r = coco_map([det([300, 300, 340, 350, 0.9, 0])], gts, NAMES)
    assert r["map50"] == 0 and r["map"] == 0
    assert r["precision"] == 0 and r["recall"] == 0


def test_the_right_box_of_the_wrong_class_scores_0():
    r = coco_map([det([10, 10, 50, 60, 0.9, 1])], [gt([0, 10, 10, 50, 60])], NAMES)
    assert r["map50"] == 0


def test_one_of_two_found():
    # Two objects, one found exactly: precision 1 up to recall 0.5, then nothing. The
    # recall points 0, 0.01 … 0.50 (51 of the 101) read precision 1, the other 50 read 0:
    # AP = 51/101 at every IoU threshold (the box is exact), so mAP = map50 = 51/101.
    gts = [gt([0, 0, 0, 100, 100], [0, 200, 200, 300, 300])]
    r = coco_map([det([0, 0, 100, 100, 0.9, 0])], gts, NAMES)
    assert r["map50"] == pytest.approx(51 / 101) and r["map"] == pytest.approx(51 / 101)
    assert r["recall"] == pytest.approx(0.5) and r["precision"] == pytest.approx(1)


def test_iou_082_counts_for_7_of_the_10_thresholds():
    # gt 100×100, detection 100×82 inside it: IoU 0.82, a match at 0.50 … 0.80 (7
    # thresholds, AP 1 each), a miss at 0.85 … 0.95 (AP 0): mAP = 7/10, map75 = 1.
    r = coco_map([det([0, 0, 100, 82, 0.9, 0])], [gt([0, 0, 0, 100, 100])], NAMES)
    assert r["map50"] == pytest.approx(1) and r["map75"] == pytest.approx(1)
    assert r["map"] == pytest.approx(0.7)


def test_a_false_positive_ranked_first_halves_the_precision():
    # The FP (score 0.9, on an image with no objects) comes before the TP (0.8): at
    # recall 1 the precision is 1/2, and made monotone it is 1/2 at every recall
    # point, so AP = 0.5. Ranked after the TP, it costs nothing: AP = 1.
    gts = [gt([0, 0, 0, 100, 100]), gt()]
    first = coco_map([det([0, 0, 100, 100, 0.8, 0]), det([0, 0, 50, 50, 0.9, 0])], gts, NAMES)
    last = coco_map([det([0, 0, 100, 100, 0.8, 0]), det([0, 0, 50, 50, 0.7, 0])], gts, NAMES)
    assert first["map50"] == pytest.approx(0.5) and last["map50"] == pytest.approx(1)
    assert first["instances"] == 1 and first["images"] == 2


def test_classes_without_ground_truth_are_left_out_of_the_mean():
    # a: found (AP 1); b: missed (AP 0); c: no objects, one false detection → not counted
    gts = [gt([0, 0, 0, 100, 100], [1, 200, 200, 300, 300])]
    dets = [det([0, 0, 100, 100, 0.9, 0], [400, 400, 450, 450, 0.9, 2])]
    r = coco_map(dets, gts, NAMES)
    assert r["map50"] == pytest.approx(0.5) and r["map"] == pytest.approx(0.5)
    assert set(r["per_class"]) == {"a", "b"}
    assert r["per_class"]["a"]["map50"] == pytest.approx(1) and r["per_class"]["b"]["map50"] == 0
    assert r["per_class"]["b"]["instances"] == 1


def test_precision_and_recall_at_a_confidence():
    # class a: TP 0.9, FP 0.5, TP 0.1 of 2 objects; at conf 0.25: P = 1/2, R = 1/2
    gts = [gt([0, 0, 0, 100, 100], [0, 200, 200, 300, 300])]
    dets = [det([0, 0, 100, 100, 0.9, 0], [500, 500, 550, 550, 0.5, 0], [200, 200, 300, 300, 0.1, 0])]
    r = coco_map(dets, gts, NAMES, conf=0.25)
    assert r["precision"] == pytest.approx(0.5) and r["recall"] == pytest.approx(0.5)
    r = coco_map(dets, gts, NAMES, conf=0.05)
    assert r["precision"] == pytest.approx(2 / 3) and r["recall"] == pytest.approx(1)


def test_no_detections_at_all_is_0_not_a_crash(capsys):
    gts = [gt([0, 0, 0, 100, 100]), gt()]
    r = coco_map([det(), det()], gts, NAMES)
    assert r["map50"] == 0 and r["map"] == 0 and r["instances"] == 1
    assert capsys.readouterr().out == ""  # pycocotools' prints silenced


def test_no_ground_truth_at_all_is_0():
    r = coco_map([det([0, 0, 10, 10, 0.9, 0])], [gt()], NAMES)
    assert r["map50"] == 0 and r["per_class"] == {} and r["instances"] == 0
    assert coco_map([], [], NAMES)["images"] == 0


def test_verbose_lets_pycocotools_speak(capsys):
    coco_map([det([0, 0, 10, 10, 0.9, 0])], [gt([0, 0, 0, 10, 10])], NAMES, verbose=True)
    assert "Accumulating" in capsys.readouterr().out


def test_mismatched_lists_are_an_error():
    with pytest.raises(ValueError, match="2 images"):
        coco_map([det(), det()], [gt()], NAMES)


def test_a_validation_sized_run_counts_every_instance():
    torch.manual_seed(0)
    gts, dets = [], []
    for _ in range(64):
        xy, wh = torch.rand(10, 2) * 500, torch.rand(10, 2) * 100 + 10
        gts.append(torch.cat([torch.randint(0, 3, (10, 1)).float(), xy, xy + wh], 1))
        xy, wh = torch.rand(300, 2) * 500, torch.rand(300, 2) * 100 + 10
        dets.append(torch.cat([xy, xy + wh, torch.rand(300, 1), torch.randint(0, 3, (300, 1)).float()], 1))
    r = coco_map(dets, gts, NAMES)
    assert 0 <= r["map"] <= r["map50"] < 1 and r["instances"] == 640


# ---- the curves of the plots, and the confusion matrix ----------------------------------


def curves(dets, gts):
    e = coco_map(dets, gts, NAMES, keep=True)["coco"]
    return confidence_curves(e, len(NAMES)), pr_curves(e, len(NAMES))


def test_perfect_detections_have_precision_and_recall_1_below_their_score():
    gts = [gt([0, 10, 10, 50, 60], [1, 100, 100, 200, 150]), gt([0, 0, 0, 30, 30])]
    dets = [torch.cat([g[:, 1:], torch.full((len(g), 1), 0.9), g[:, :1]], 1) for g in gts]
    c, (recall_points, p) = curves(dets, gts)
    below, above = c["conf"] < 0.9, c["conf"] >= 0.9
    assert c["conf"][0] == 0 and c["conf"][-1] == 1 and below.sum() == 900
    assert (c["instances"] == [2, 1, 0]).all()
    for k in (0, 1):
        assert (c["precision"][k, below] == 1).all() and (c["recall"][k, below] == 1).all()
        assert (c["f1"][k, below] == 1).all()
        # nothing scores over 0.9: nothing found, nothing wrong
        assert (c["recall"][k, above] == 0).all() and (c["precision"][k, above] == 1).all()
        assert (c["f1"][k, above] == 0).all()
        assert p[k].mean() == pytest.approx(1)  # AP50 1
    assert np.isnan(p[2]).all() and (c["recall"][2] == 0).all()  # c has no objects
    assert len(recall_points) == 101 and recall_points[-1] == 1


def test_no_detections_recall_nothing():
    c, (_, p) = curves([det()], [gt([0, 0, 0, 100, 100], [1, 200, 200, 300, 300])])
    assert (c["recall"] == 0).all() and (c["precision"] == 0).all() and (c["f1"] == 0).all()
    assert (p[:2] == 0).all()


def test_precision_recall_and_f1_step_at_each_score():
    # class a: TP 0.9, FP 0.5, of 2 objects (one never found)
    gts = [gt([0, 0, 0, 100, 100], [0, 200, 200, 300, 300])]
    c, (_, p) = curves([det([0, 0, 100, 100, 0.9, 0], [500, 500, 550, 550, 0.5, 0])], gts)
    at = {x: int(round(x * 1000)) for x in (0.3, 0.5, 0.7, 0.95)}
    P, R, F = c["precision"][0], c["recall"][0], c["f1"][0]
    assert (P[at[0.3]], R[at[0.3]]) == (pytest.approx(0.5), pytest.approx(0.5))  # both over 0.3
    assert (P[at[0.5]], R[at[0.5]]) == (1, 0.5)  # over 0.5 is strict: the FP is out
    assert (P[at[0.7]], R[at[0.7]]) == (1, 0.5)
    assert F[at[0.3]] == pytest.approx(0.5) and F[at[0.7]] == pytest.approx(2 / 3) and F[at[0.95]] == 0
    assert p[0].mean() == pytest.approx(51 / 101)  # as test_one_of_two_found: precision 1 up to recall 0.5


def test_pr_curves_average_to_each_classs_ap50():
    torch.manual_seed(1)
    gts, dets = [], []
    for _ in range(8):
        xy, wh = torch.rand(6, 2) * 300, torch.rand(6, 2) * 60 + 10
        g = torch.cat([torch.randint(0, 2, (6, 1)).float(), xy, xy + wh], 1)  # classes a and b only
        gts.append(g)
        d = torch.cat([g[:, 1:] + torch.randn(6, 4) * 6, torch.rand(6, 1), torch.randint(0, 3, (6, 1)).float()], 1)
        dets.append(d)
    r = coco_map(dets, gts, NAMES, keep=True)
    _, p = pr_curves(r["coco"], len(NAMES))
    for k, name in enumerate(("a", "b")):
        assert p[k].mean() == pytest.approx(r["per_class"][name]["map50"])
    assert np.isnan(p[2]).all()
    assert np.nanmean(p, 1)[:2].mean() == pytest.approx(r["map50"])


def test_confusion_matrix_as_ultralytics_counts():
    a, b, c, bg = 0, 1, 2, 3
    gts = [gt([a, 0, 0, 100, 100], [b, 200, 200, 300, 300], [a, 400, 400, 500, 500], [c, 600, 0, 700, 100])]
    dets = [det([0, 0, 100, 100, 0.9, a],  # found, right class
                [0, 0, 100, 90, 0.8, a],  # a second box on the same object: a false positive
                [200, 200, 300, 300, 0.8, c],  # b taken for c
                [400, 400, 500, 500, 0.2, a],  # under conf 0.25: not counted, so the a there is missed
                [900, 900, 950, 950, 0.7, b],  # on nothing
                [600, 0, 700, 82, 0.6, c],  # IoU 0.82: found
                )]
    m = confusion_matrix(dets, gts, 3)
    expected = np.zeros((4, 4), dtype=np.int64)
    expected[a, a] = expected[c, b] = expected[c, c] = 1
    expected[bg, a] = 1  # the missed a
    expected[a, bg] = expected[b, bg] = 1  # the second box, the box on nothing
    assert (m == expected).all()
    assert (m.sum(0)[:3] == [2, 1, 1]).all()


def test_confusion_matrix_iou_threshold_and_one_partner_each():
    # a 100×100 object; boxes 100×46 (IoU 0.46, over 0.45) and 100×44 (0.44): only the first matches
    assert confusion_matrix([det([0, 0, 100, 46, 0.9, 0])], [gt([0, 0, 0, 100, 100])], 1).tolist() == [[1, 0], [0, 0]]
    assert confusion_matrix([det([0, 0, 100, 44, 0.9, 0])], [gt([0, 0, 0, 100, 100])], 1).tolist() == [[0, 1], [1, 0]]
    # two overlapping objects, one detection over both (IoU 0.79 and 0.85): it goes to the one it
    # overlaps most, whatever the classes — the other is missed
    two = [gt([0, 0, 0, 100, 100], [1, 20, 0, 120, 100])]
    m = confusion_matrix([det([12, 0, 112, 100, 0.9, 0])], two, 2)
    assert m[0, 1] == 1 and m[2, 0] == 1 and m.sum() == 2
    # no objects, no detections, empty images: nothing breaks
    assert confusion_matrix([det(), det([0, 0, 9, 9, 0.9, 1])], [gt(), gt()], 2)[1, 2] == 1
    assert confusion_matrix([], [], 2).sum() == 0


def test_confusion_matrix_columns_sum_to_the_objects_of_each_class():
    torch.manual_seed(2)
    gts, dets = [], []
    for _ in range(20):
        xy, wh = torch.rand(8, 2) * 400, torch.rand(8, 2) * 80 + 10
        gts.append(torch.cat([torch.randint(0, 3, (8, 1)).float(), xy, xy + wh], 1))
        xy, wh = torch.rand(40, 2) * 400, torch.rand(40, 2) * 80 + 10
        dets.append(torch.cat([xy, xy + wh, torch.rand(40, 1), torch.randint(0, 3, (40, 1)).float()], 1))
    m = confusion_matrix(dets, gts, 3)
    counts = torch.cat(gts)[:, 0].long().bincount(minlength=3).numpy()
    assert (m.sum(0)[:3] == counts).all() and m[3, 3] == 0
    assert m[:3].sum() == sum(int((d[:, 4] > 0.25).sum()) for d in dets)  # every counted detection once
    assert m[:3, :3].sum() > 0  # some matched
