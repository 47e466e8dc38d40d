"""A run's plots and `gelanc plot RUN`, and the validation losses.

Fast: an untrained gelan-t (nc 4) saved as a run's best.pt beside a results table, on
four synthetic validation images of 64 px; nothing is trained. What the curves and the
confusion matrix compute is checked on hand-made boxes in tests/test_metrics.py; here:
every file is there at its size, the confusion matrix counts the validation set's
objects, the command's exit statuses, and the validation losses equal the loss applied
by hand to the same maps.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import gelanc
from gelanc.backend.checkpoint import save
from gelanc.backend.fx import heads
from gelanc.cli import main
from gelanc.data.dataset import YoloDataset, collate
from gelanc.data.synth import CLASSES, write
from gelanc.dsl.loader import library_root
from gelanc.train import ddp, plots, results
from gelanc.train.loss import DetectionLoss
from gelanc.train.metrics import confusion_matrix
from gelanc.train.plots import PLOT_FILES, labels_plot
from gelanc.train.setup import load_data
from gelanc.train.val import evaluate

SPEC = library_root() / "specs" / "gelan-t.gel"
NC = len(CLASSES)
COLUMNS = ("train/box_loss", "train/cls_loss", "train/dfl_loss", "val/box_loss", "val/cls_loss", "val/dfl_loss",
           "metrics/precision", "metrics/recall", "metrics/mAP50", "metrics/mAP50-95", "lr/bias", "lr/bn",
           "lr/weights", "images_per_s", "time_s")


def rows(epochs: int, columns=COLUMNS) -> list[dict[str, float]]:
    return [{"epoch": e, **{c: 1 / (e + i) for i, c in enumerate(columns)}} for e in range(1, epochs + 1)]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write(tmp_path_factory.mktemp("synth") / "d", images=6, val=4, size=64, seed=3)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return gelanc.compile(str(SPEC), nc=NC)


@pytest.fixture(scope="module")
def splits(data):
    return load_data(data, ddp.World())


@pytest.fixture(scope="module")
def run(data, model, tmp_path_factory) -> Path:
    """A run folder as training leaves it (its checkpoint names its data and size), untrained."""
    out = tmp_path_factory.mktemp("run")  # an interrupted run's: last.pt and no best.pt yet
    save(model, out / "last.pt", names=list(CLASSES), train={"args": {"data": str(data), "imgsz": 64}})
    results.write_csv(out / "results.csv", rows(6))
    return out


def test_gelanc_plot_writes_every_plot_at_its_size(run, capsys):
    import matplotlib.pyplot as plt

    code = main(["plot", str(run), "--json", "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code == 0, err
    written = [Path(p) for p in json.loads(out)]
    grids = ("val_batch0_labels.png", "val_batch0_pred.png")  # 4 val images: one grid of each
    assert sorted(p.name for p in written) == sorted((*PLOT_FILES, *grids))
    sizes = {"results.png": (1600, 560),  # 10 panels of 320 × 280, 5 a row
             "PR_curve.png": (900, 600), "P_curve.png": (900, 600), "R_curve.png": (900, 600),
             "F1_curve.png": (900, 600), "confusion_matrix.png": (1200, 900),
             "confusion_matrix_normalized.png": (1200, 900), "labels.png": (800, 800),
             # 2 × 2 tiles, the 64 px images enlarged to 320, with 2 px gaps around them
             "val_batch0_labels.png": (646, 646), "val_batch0_pred.png": (646, 646)}
    for p in written:
        assert p.parent == run and p.is_file()
        with Image.open(p) as im:
            assert im.format == "PNG" and im.size == sizes[p.name], p.name
    assert plt.get_fignums() == []  # every figure closed
    assert not [p for p in run.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_gelanc_plot_needs_a_run_folder_with_a_checkpoint(data, tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "holds no best.pt or last.pt" in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert main(["plot", str(tmp_path / "nowhere")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(["plot", str(data)]) == 2  # a file is no run folder
    assert "is not a folder" in capsys.readouterr().err


def test_a_run_is_read_from_best_pt_else_last_pt_and_its_table_else_the_checkpoints_rows(tmp_path):
    (tmp_path / "last.pt").write_bytes(b"")
    assert plots._run_checkpoint(tmp_path).name == "last.pt"
    (tmp_path / "best.pt").write_bytes(b"")
    assert plots._run_checkpoint(tmp_path).name == "best.pt"
    kept = rows(2)
    assert plots._rows(tmp_path, {"rows": [*kept, "junk", {"epoch": 3, "note": "text"}]}) == [*kept, {"epoch": 3.0}]
    results.write_csv(tmp_path / "results.csv", rows(3))
    assert [r["epoch"] for r in plots._rows(tmp_path, {"rows": kept})] == [1, 2, 3]


def test_the_confusion_matrix_counts_every_validation_object(splits, model):
    loader = DataLoader(YoloDataset(splits.val, 64), batch_size=3, collate_fn=collate)
    r = evaluate(gelanc.deploy(model), loader, splits.names, torch.device("cpu"), keep=True)
    counts = torch.cat(splits.val.labels)[:, 0].long().bincount(minlength=NC).numpy()
    assert counts.sum() > 0
    assert r["paths"] == [str(p) for p in splits.val.images]
    assert len(r["detections"]) == len(r["ground_truths"]) == len(splits.val.images)
    # 64 px images at 64 px: the canvas is the image, the boxes its labels in pixels
    first = splits.val.labels[0]
    cx, cy, w, h = (first[:, 1:] * 64).unbind(1)
    assert torch.allclose(r["ground_truths"][0], torch.stack([first[:, 0], cx - w / 2, cy - h / 2, cx + w / 2,
                                                              cy + h / 2], 1), atol=1e-4)
    m = confusion_matrix(r["detections"], r["ground_truths"], NC)
    assert (m.sum(0)[:NC] == counts).all()  # each true class's column, the background row included
    assert m[NC, NC] == 0
    assert m[:, NC].sum() == sum(int((d[:, 4] > 0.25).sum()) for d in r["detections"]) - m[:NC, :NC].sum()
    # the objects themselves as detections: all on the diagonal
    perfect = [torch.cat([g[:, 1:5], torch.full((len(g), 1), 0.9), g[:, :1]], 1) for g in r["ground_truths"]]
    m = confusion_matrix(perfect, r["ground_truths"], NC)
    assert (np.diag(m)[:NC] == counts).all() and m.sum() == counts.sum()
    assert "coco" in r and r["coco"].params.iouThrs[0] == pytest.approx(0.5)


def test_evaluate_adds_nothing_unasked(splits, model):
    loader = DataLoader(YoloDataset(splits.val, 64), batch_size=4, collate_fn=collate)
    r = evaluate(gelanc.deploy(model), loader, splits.names, torch.device("cpu"))
    assert {"map50", "map", "map75", "precision", "recall", "per_class", "images", "instances", "ms_per_image",
            "how", "skipped"} <= set(r)
    assert not {"detections", "ground_truths", "paths", "coco", "val/box_loss"} & set(r)
    json.dumps(r)  # still printable as gelanc val --json prints it


@pytest.mark.parametrize("graph", ["train", "deploy"])
def test_validation_losses_are_the_loss_of_the_eval_maps_averaged_over_batches(splits, model, graph):
    m = model if graph == "train" else gelanc.deploy(model)
    h = heads(m)[0]
    loss_fn = DetectionLoss(h.nc, h.reg_max, h.strides)
    loader = DataLoader(YoloDataset(splits.val, 64), batch_size=2, collate_fn=collate)  # 2 batches of 2
    m.train()
    r = evaluate(m, loader, splits.names, torch.device("cpu"), loss_fn=loss_fn)
    assert m.training  # left as it was
    m.eval()
    by_hand = []
    with torch.no_grad():
        for imgs, targets, _, _ in loader:
            by_hand.append(loss_fn(m(imgs.float() / 255)[1], targets)[1])
    m.train()
    expected = torch.stack(by_hand).mean(0)
    got = torch.tensor([r["val/box_loss"], r["val/cls_loss"], r["val/dfl_loss"]])
    assert (expected > 0).all()
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(torch.stack(by_hand)[0], torch.stack(by_hand)[1])  # the mean of two, not one
    assert "map50" in r and "map" in r


def test_results_png_draws_the_columns_a_table_has(tmp_path):
    # an older run's table: no validation losses, no precision or recall; and a row lacking a column
    old = rows(7, ("train/box_loss", "train/cls_loss", "train/dfl_loss", "metrics/mAP50", "metrics/mAP50-95",
                   "lr/bias", "lr/bn", "lr/weights", "images_per_s", "time_s"))
    del old[3]["metrics/mAP50"]
    assert [t for t, _ in plots.panels(old[0])] == ["box loss", "cls loss", "dfl loss", "mAP@0.5", "mAP@0.5:0.95",
                                                      "learning rate", "images/s (training)", "seconds an epoch"]
    results.plot(tmp_path / "old.png", old, title="old")
    with Image.open(tmp_path / "old.png") as im:
        assert im.size == (1600, 560)  # 8 panels: two rows of 5
    few = [{"epoch": 1, "a": 1.0, "metrics/mAP50": 0.5}]
    assert plots.panels(few[0]) == [("mAP@0.5", ["metrics/mAP50"]), ("a", ["a"])]
    results.plot(tmp_path / "few.png", few)
    with Image.open(tmp_path / "few.png") as im:
        assert im.size == (640, 280)
    grouped = dict(plots.panels(rows(1)[0]))
    assert grouped["box loss"] == ["train/box_loss", "val/box_loss"]


def test_smoothing_keeps_a_constant_and_skips_gaps():
    y = np.array([2.0, 2.0, np.nan, 2.0, 2.0, 2.0])
    assert np.allclose(plots.smooth(y), 2.0)
    ramp = np.arange(40, dtype=float)
    s = plots.smooth(ramp)  # a straight line stays one, but at its ends (pulled inward)
    assert np.allclose(s[15:25], ramp[15:25]) and s[0] > ramp[0] and s[-1] < ramp[-1]


def test_labels_plot_of_no_labels(tmp_path):
    labels_plot(tmp_path / "labels.png", torch.zeros(0, 5), list(CLASSES))
    with Image.open(tmp_path / "labels.png") as im:
        assert im.size == (800, 800)
