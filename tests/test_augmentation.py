"""Training augmentation: boxes follow the pixels through every step; seeded per sample."""

import pytest
import torch
from torch.utils.data import DataLoader
from torchvision.ops import box_convert

from gelanc.data.augment import AugmentedDataset, candidates
from gelanc.data.dataset import collate, image_files, scan
from gelanc.data.synth import write
from gelanc.train.hyp import Hyp

OFF = dict(hsv_h=0, hsv_s=0, hsv_v=0, translate=0, scale=0, fliplr=0, mosaic=0, mixup=0)


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    root = write(tmp_path_factory.mktemp("aug") / "d", images=10, val=1, size=96, seed=11).parent
    return scan(image_files([root / "images" / "train"]), 4)


@pytest.fixture(scope="module")
def squares(tmp_path_factory):
    """Red squares on blue: images whose object pixels are known exactly."""
    from torchvision.io import write_png

    root = tmp_path_factory.mktemp("squares")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    gen = torch.Generator().manual_seed(0)
    for i in range(8):
        h, w = (96, 96) if i % 2 else (64, 96)
        img = torch.zeros(3, h, w, dtype=torch.uint8)
        img[2] = 255
        rows = []
        for k in range(2):
            s = int(torch.randint(10, 24, (), generator=gen))
            x0 = int(torch.randint(0, w // 2 - s, (), generator=gen)) + k * (w // 2)
            y0 = int(torch.randint(0, h - s, (), generator=gen))
            img[:, y0:y0 + s, x0:x0 + s] = torch.tensor([255, 0, 0], dtype=torch.uint8).view(3, 1, 1)
            rows.append(f"0 {(x0 + s / 2) / w} {(y0 + s / 2) / h} {s / w} {s / h}\n")
        write_png(img, str(root / "images" / f"{i}.png"))
        (root / "labels" / f"{i}.txt").write_text("".join(rows))
    return scan(image_files([root / "images"]), 1)


def _red(image: torch.Tensor) -> torch.Tensor:
    return (image[0].int() - image[2].int()) > 100


@pytest.mark.parametrize("change", [dict(fliplr=1.0), dict(flipud=1.0), dict(translate=0.1, scale=0.5),
                                    dict(degrees=10.0, shear=5.0), dict(mosaic=1.0), dict(mosaic=1.0, scale=0.5)])
def test_boxes_follow_the_pixels(squares, change):
    ds = AugmentedDataset(squares, 96, Hyp(**{**OFF, **change}), seed=2)
    for i in range(len(ds)):
        image, labels = ds[i][:2]
        assert image.shape == (3, 96, 96) and image.dtype == torch.uint8
        assert bool(((labels[:, 1:] >= 0) & (labels[:, 1:] <= 1)).all()) and bool((labels[:, 3:] > 0).all())
        red = _red(image)
        covered = torch.zeros_like(red)
        for x1, y1, x2, y2 in box_convert(labels[:, 1:] * 96, "cxcywh", "xyxy").tolist():
            inner = red[round(y1):round(y2), round(x1):round(x2)]
            assert inner.float().mean() > 0.5, "a box must sit on its square"
            covered[max(0, round(y1) - 1):round(y2) + 1, max(0, round(x1) - 1):round(x2) + 1] = True
        # no square is left without a box, but slivers the reference's box_candidates drop
        assert int((red & ~covered).sum()) <= 60


def test_mosaic_gathers_objects_of_several_images(split):
    ds = AugmentedDataset(split, 96, Hyp(**{**OFF, "mosaic": 1.0}))
    counts = [len(ds[i][1]) for i in range(len(ds))]
    assert max(counts) > max(len(t) for t in split.labels)


def test_mixup_adds_a_second_mosaics_objects(split):
    one = AugmentedDataset(split, 96, Hyp(**{**OFF, "mosaic": 1.0}), seed=4)
    two = AugmentedDataset(split, 96, Hyp(**{**OFF, "mosaic": 1.0, "mixup": 1.0}), seed=4)
    for i in range(4):
        (a, la), (b, lb) = one[i][:2], two[i][:2]
        assert torch.equal(lb[: len(la)], la)  # the same first mosaic, then the mixed-in one's objects
        assert len(lb) > len(la) and not torch.equal(a, b)


def test_the_same_sample_is_the_same_bytes_in_any_process(split):
    ds = AugmentedDataset(split, 96, Hyp(), seed=7)
    ds.set_epoch(3)
    here = [ds[i] for i in range(4)]
    loader = DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate)
    images, targets, _, skipped = next(iter(loader))
    assert torch.equal(images[0], here[0][0]) and torch.equal(images[1], here[1][0])
    ds.set_epoch(4)
    assert not torch.equal(ds[0][0], here[0][0])
    assert targets.shape[1] == 6 and skipped == []


def test_box_candidates_drop_slivers_and_mostly_cropped_boxes():
    before = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]])
    after = torch.tensor([[0.0, 0, 10, 10], [0, 0, 1.5, 10], [0, 0, 3, 3], [0, 0, 5, 5]])
    assert candidates(before, after, 1.0).tolist() == [True, False, False, True]


@pytest.mark.parametrize("change", [dict(translate=0.2), dict(scale=0.5), dict(mosaic=1.0, scale=0.5, translate=0.1)])
def test_box_edges_sit_on_the_squares_edges_to_a_pixel(squares, change):
    """Boxes and pixels share one map: each box's edges are the edges of its square's
    pixels (bilinear sampling may blur them by a pixel), not half a box off."""
    ds = AugmentedDataset(squares, 96, Hyp(**{**OFF, **change}), seed=5)
    checked = 0
    for i in range(len(ds)):
        image, labels = ds[i][:2]
        red = _red(image)
        for x1, y1, x2, y2 in box_convert(labels[:, 1:] * 96, "cxcywh", "xyxy").tolist():
            a, b, c, d = (max(0, round(y1) - 3), min(96, round(y2) + 3), max(0, round(x1) - 3), min(96, round(x2) + 3))
            ys, xs = torch.nonzero(red[a:b, c:d], as_tuple=True)
            if not len(ys):
                continue
            extent = [float(xs.min()) + c, float(ys.min()) + a, float(xs.max()) + c + 1, float(ys.max()) + a + 1]
            assert max(abs(p - q) for p, q in zip(extent, (x1, y1, x2, y2))) <= 1.5, (extent, (x1, y1, x2, y2))
            checked += 1
    assert checked >= len(ds)
