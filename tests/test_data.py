"""The synthetic dataset and the data.yaml schema."""

import pytest
import torch
from torchvision.io import read_image

from gelanc.cli import main
from gelanc.data.config import DataError, load_data_config
from gelanc.data.synth import CLASSES, _mask, draw, write  # noqa: F401


def test_labels_are_exact_boxes_of_the_drawn_pixels():
    """Redraw each labelled shape's mask: its pixel box is the label, to the pixel."""
    for seed in range(20):
        img, labels = draw(seed, 96)
        assert img.shape == (3, 96, 96) and img.dtype == torch.uint8
        assert 1 <= len(labels) <= 6
        for c, cx, cy, w, h in labels:
            assert 0 <= c < len(CLASSES)
            assert 0 < w <= 1 and 0 < h <= 1 and 0 <= cx - w / 2 and cx + w / 2 <= 1 + 1e-9
            x0, y0 = round((cx - w / 2) * 96), round((cy - h / 2) * 96)
            x1, y1 = round((cx + w / 2) * 96), round((cy + h / 2) * 96)
            patch = img[:, y0:y1, x0:x1].float()
            # the shape's colour fills the box's centre pixel
            centre = img[:, (y0 + y1) // 2, (x0 + x1) // 2].float()
            assert (patch == centre.view(3, 1, 1)).all(0).any()


def test_the_hard_set_labels_what_is_visible():
    """Occluded objects are labelled by their visible pixels: redrawn, no pixel of a label's
    shape may lie outside its box, and some labels must be smaller than their shape."""
    from gelanc.data.synth import HARD_CLASSES

    seen, smaller = set(), 0
    for seed in range(30):
        img, labels = draw(seed, 128, hard=True)
        again, _ = draw(seed, 128, hard=True)
        assert torch.equal(img, again)  # seeded
        for c, cx, cy, w, h in labels:
            seen.add(c)
            assert 0 <= c < len(HARD_CLASSES) and 0 < w <= 1 and 0 < h <= 1
            assert 0 <= cx - w / 2 + 1e-9 and cx + w / 2 <= 1 + 1e-9
            assert 0 <= cy - h / 2 + 1e-9 and cy + h / 2 <= 1 + 1e-9
        smaller += sum(1 for _, _, _, w, h in labels if w * h * 128 * 128 < 40)  # small objects occur
    assert seen == set(range(len(HARD_CLASSES)))
    assert smaller > 0


def test_the_hard_set_hides_objects_behind_others(monkeypatch):
    """An object painted over by a later one gets the box of what still shows of it."""
    from gelanc.data import synth

    boxes = []
    real = synth._box
    monkeypatch.setattr(synth, "_box", lambda m: boxes.append(int(m.sum())) or real(m))
    hidden = 0
    for seed in range(30):
        boxes.clear()
        synth.draw(seed, 96, hard=True)
        hidden += len(boxes)
    assert hidden > 0  # labels were measured on masks (the visible ones)


def test_box_of_a_mask_is_its_pixel_extent():
    from gelanc.data.synth import _box

    assert _box(_mask("square", 16, 16, 8, 32, 32)) == (8, 8, 24, 24)
    assert _box(_mask("diamond", 10.5, 20.5, 4, 32, 32)) == (6, 16, 15, 25)
    assert _box(torch.zeros(8, 8, dtype=torch.bool)) is None


def test_masks_are_the_named_shapes():
    circle = _mask("circle", 16, 16, 8, 32, 32)
    square = _mask("square", 16, 16, 8, 32, 32)
    assert square.sum() == 16 * 16 and abs(int(circle.sum()) - 3.1416 * 64) < 12
    tri = _mask("triangle", 16, 16, 8, 32, 32)
    assert tri[9].sum() < tri[22].sum()  # narrow apex, wide base


def test_write_is_seeded_and_complete(tmp_path):
    a = write(tmp_path / "a", images=6, val=2, size=64, seed=3)
    write(tmp_path / "b", images=6, val=2, size=64, seed=3)
    write(tmp_path / "c", images=6, val=2, size=64, seed=4)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 1 + 2 * 8
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    first = "images/train/000000.png"
    assert (tmp_path / "a" / first).read_bytes() != (tmp_path / "c" / first).read_bytes()
    cfg = load_data_config(a)
    assert cfg.names == list(CLASSES) and cfg.nc == 4
    assert [p.name for p in cfg.split("val", a.parent)] == ["val"]
    assert read_image(str(tmp_path / "a/images/val/000006.png")).shape == (3, 64, 64)


def test_cli_synth_and_refuses_a_full_folder(tmp_path, capsys):
    out = tmp_path / "set"
    assert main(["data", "synth", "-o", str(out), "--images", "3", "--val", "1", "--imgsz", "64"]) == 0
    assert (out / "data.yaml").is_file()
    assert main(["data", "synth", "-o", str(out), "--images", "3", "--val", "1"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]  # no temporary folder left


@pytest.mark.parametrize("text, message", [
    ("train: a\nval: b\n", "names"),
    ("train: a\nval: b\nnames: []\n", "at least one class"),
    ("train: a\nval: b\nnames: [x, y]\nnc: 3\n", "nc is 3"),
    ("train: a\nval: b\nnames: {0: x, 2: y}\n", "keys 0"),
    ("train: [a\n", "not valid YAML"),
    ("- just\n- a list\n", "expected a mapping"),
    ("train: {annotations: x.json}\nval: b\nnames: [a]\n", "train.images: Field required"),
    ("train: 5\nval: b\nnames: [a]\n", "train: expected a folder or .txt list of images"),
    ("train: {annotations: x.json, images: i}\nval: b\n", "names is missing"),
    # the billion laughs: nine levels of nine aliases each would be 387 M names to validate
    ("a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{k}: &{k} [{', '.join(['*' + p] * 9)}]\n" for p, k in zip("abcdefgh", "bcdefghi"))
     + "train: a\nval: b\nnames: *i\n", r"data.yaml:2:\d+: not valid YAML: aliases \(\*name\) are not supported"),
    ("train: " + "[" * 5000 + "]" * 5000 + "\n", "not valid YAML: collections nested too deeply"),
    ("train: a\nval: b\nnames: [a]\nwhen: 2001-13-45\n", "not valid YAML: a value that is not valid"),
    ("train: a\nval: b\nnames: [a]\nnc: " + "9" * 5000 + "\n", "not valid YAML: a value that is not valid"),
])
def test_bad_data_yaml_is_a_clear_error(tmp_path, text, message):
    p = tmp_path / "data.yaml"
    p.write_text(text)
    with pytest.raises(DataError, match=message):
        load_data_config(p)


def test_names_as_mapping(tmp_path):
    p = tmp_path / "data.yaml"
    p.write_text("path: ds\ntrain: images/train\nval: [images/val, more.txt]\nnames: {0: cat, 1: dog}\n")
    cfg = load_data_config(p)
    assert cfg.names == ["cat", "dog"]
    assert cfg.split("val", tmp_path) == [tmp_path / "ds/images/val", tmp_path / "ds/more.txt"]


# ---- YOLO datasets ---------------------------------------------------------------

from gelanc.data.dataset import YoloDataset, collate, image_files, label_file, letterbox, scan  # noqa: E402


def _dataset(tmp_path):
    data = write(tmp_path / "ds", images=6, val=2, size=64, seed=0)
    return load_data_config(data), data.parent


def test_scan_reports_and_skips_bad_data(tmp_path):
    cfg, root = _dataset(tmp_path)
    train = root / "images/train"
    (train / "000001.png").write_bytes(b"not a png")                         # corrupt image
    (root / "labels/train/000002.txt").write_text("7 0.5 0.5 0.1 0.1\n")     # class id >= nc
    (root / "labels/train/000003.txt").write_text("0 0.5 1.5 0.1 0.1\n")     # outside [0, 1]
    (root / "labels/train/000004.txt").unlink()                              # missing label file
    (root / "labels/train/000005.txt").write_text("")                        # empty image
    s = scan(image_files(cfg.split("train", root)), cfg.nc)
    assert [p.name for p in s.images] == ["000000.png", "000004.png", "000005.png"]
    assert s.problems["corrupt images"][0].startswith("000001.png")
    bad = " ".join(s.problems["bad label files"])
    assert "000002.txt: line 1: class 7 is not in 0…3" in bad and "000003.txt: line 1: coordinates" in bad
    assert s.problems["images without a label file (kept as background)"] == ["000004.png"]
    assert s.problems["empty images (kept as background)"] == ["000005.png"]
    assert "2 bad label files" in s.report()


def test_scan_cache_is_reused_and_invalidated(tmp_path, monkeypatch):
    cfg, root = _dataset(tmp_path)
    imgs = image_files(cfg.split("train", root))
    cache = root / "labels/train.cache"
    first = scan(imgs, cfg.nc, cache)
    import gelanc.data.dataset as ds

    monkeypatch.setattr(ds, "_parse_labels", lambda *a: (_ for _ in ()).throw(AssertionError("parsed again")))
    again = scan(imgs, cfg.nc, cache)
    assert [torch.equal(a, b) for a, b in zip(first.labels, again.labels)] == [True] * len(imgs)
    monkeypatch.undo()
    (root / "labels/train/000000.txt").write_text("1 0.5 0.5 0.25 0.25\n")
    assert torch.equal(scan(imgs, cfg.nc, cache).labels[0], torch.tensor([[1, 0.5, 0.5, 0.25, 0.25]]))


def test_letterbox_moves_boxes_with_the_image():
    img = torch.zeros(3, 50, 100, dtype=torch.uint8)
    img[:, 10:20, 30:50] = 255  # a white box at x 30–50, y 10–20
    out, boxes = letterbox(img, torch.tensor([[0.4, 0.3, 0.2, 0.2]]), 64)
    assert out.shape == (3, 64, 64) and out[0, 0, 0] == 114  # grey padding above
    cx, cy, w, h = (boxes[0] * 64).tolist()
    ys, xs = (out[0] > 200).nonzero(as_tuple=True)
    assert abs(cx - (xs.min() + xs.max() + 1) / 2) <= 1 and abs(cy - (ys.min() + ys.max() + 1) / 2) <= 1
    assert abs(w - 12.8) < 0.01 and abs(h - 6.4) < 0.01


def test_dataset_and_collate(tmp_path):
    cfg, root = _dataset(tmp_path)
    split = scan(image_files(cfg.split("val", root)), cfg.nc)
    loader = torch.utils.data.DataLoader(YoloDataset(split, 96), batch_size=2, collate_fn=collate)
    images, targets, paths, skipped = next(iter(loader))
    assert images.shape == (2, 3, 96, 96) and images.dtype == torch.uint8
    assert targets.shape[1] == 6 and set(targets[:, 0].tolist()) <= {0.0, 1.0}
    assert len(paths) == 2 and skipped == []
    assert len(targets) == sum(len(t) for t in split.labels)
    assert label_file(root / "images/val/000006.png") == root / "labels/val/000006.txt"
