"""The image cache: the same samples as without it, bounded by memory, never hiding a bad image."""

import multiprocessing

import pytest
import torch
from torch.utils.data import DataLoader
from torchvision.io import write_png

from gelanc.data import cache as cache_mod
from gelanc.data.augment import AugmentedDataset
from gelanc.data.cache import ImageCache, header_bytes, plan
from gelanc.data.dataset import collate, image_files, scan
from gelanc.data.synth import write
from gelanc.train.hyp import Hyp


@pytest.fixture()
def split(tmp_path):
    root = write(tmp_path / "d", images=8, val=1, size=96, seed=3).parent
    # sizes the synthetic set has not: wide, tall, and smaller than the training size
    for i, (h, w) in enumerate([(40, 90), (130, 60)]):
        write_png(torch.randint(0, 255, (3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(i)),
                  str(root / "images" / "train" / f"odd{i}.png"))
        (root / "labels" / "train" / f"odd{i}.txt").write_text("0 0.5 0.5 0.4 0.4\n")
    return scan(image_files([root / "images" / "train"]), 2)


def cached(ds: AugmentedDataset) -> AugmentedDataset:
    sizes = [header_bytes(p, ds.size) for p in ds.split.images]
    ds.cache = ImageCache.fill(ds.split.images, sizes, ds.resized)
    return ds


@pytest.mark.parametrize("change", [dict(), dict(mosaic=0.0), dict(mixup=1.0)])
def test_samples_are_the_same_bytes_with_the_cache(split, change):
    plain = AugmentedDataset(split, 64, Hyp(**change), seed=5)
    fast = cached(AugmentedDataset(split, 64, Hyp(**change), seed=5))
    assert all(s is not None for s in fast.cache.slots)
    assert fast.cache.nbytes == sum(3 * h * w for _, h, w in fast.cache.slots)
    for i in range(len(plain)):
        a, b = plain[i], fast[i]
        assert torch.equal(a.image, b.image) and torch.equal(a.labels, b.labels)
    loader = DataLoader(fast, batch_size=5, num_workers=2, collate_fn=collate)  # forked workers read it too
    images = torch.cat([batch[0] for batch in loader])
    assert torch.equal(images, torch.stack([plain[i].image for i in range(len(plain))]))


def test_the_cache_is_never_written_by_the_augmentation(split):
    ds = cached(AugmentedDataset(split, 64, Hyp(mixup=1.0), seed=1))
    before = ds.cache.buffer.clone()
    for i in range(len(ds)):
        ds[i]
    assert torch.equal(ds.cache.buffer, before)


def test_an_image_that_cannot_be_decoded_is_not_cached_and_still_reported(split):
    broken = split.images[2]
    broken.write_bytes(broken.read_bytes()[:60])  # the header survives; the image data does not
    ds = cached(AugmentedDataset(split, 64, Hyp(mosaic=0.0), seed=0))
    assert ds.cache.slots[2] is None and ds.cache.get(2) is None
    sample = ds[2]
    assert sample.image is None and sample.skipped and sample.skipped[0][0] == str(broken)


def test_an_image_changed_after_its_header_was_read_is_left_to_the_augmentation(split):
    ds = AugmentedDataset(split, 64, Hyp(mosaic=0.0), seed=0)
    sizes = [header_bytes(p, 64) for p in split.images]
    sizes[1] += 3  # as if the file had been replaced by a larger picture in between
    ds.cache = ImageCache.fill(split.images, sizes, ds.resized)
    assert ds.cache.slots[1] is None
    assert torch.equal(ds[1].image, AugmentedDataset(split, 64, Hyp(mosaic=0.0), seed=0)[1].image)


def test_the_plan_is_bounded_by_the_memory_available(split, monkeypatch):
    need = sum(header_bytes(p, 64) for p in split.images)
    monkeypatch.setattr(cache_mod, "available_memory", lambda: 4 * need * 2)
    sizes, note = plan("auto", split.images, 64, processes=2, workers=0)
    assert sum(sizes) == need and note.startswith(f"image cache: {len(split.images)} images")
    sizes, note = plan("auto", split.images, 64, processes=3, workers=0)  # 3 copies > a quarter
    assert sizes is None and "1/4 of the" in note and "over 3 processes" in note
    assert plan("ram", split.images, 64, processes=3, workers=0)[0] is not None  # but in a half
    monkeypatch.setattr(cache_mod, "available_memory", lambda: 2 * need - 2)
    sizes, note = plan("ram", split.images, 64, processes=1, workers=0)
    assert sizes is None and "1/2 of the" in note
    assert plan("off", split.images, 64, processes=1, workers=0) == (None, "image cache: off")


def test_a_dataset_over_the_budget_stops_reading_headers_early(split, monkeypatch):
    read = []
    monkeypatch.setattr(cache_mod, "header_bytes", lambda p, size: read.append(p) or 10_000)
    monkeypatch.setattr(cache_mod, "available_memory", lambda: 4 * 25_000)
    assert plan("auto", split.images * 1000, 64, processes=1, workers=0)[0] is None
    assert len(read) == 3  # 30,000 bytes is past the 25,000 budget: the rest are never opened


def test_no_cache_where_workers_would_each_get_a_copy(split, monkeypatch):
    monkeypatch.setattr(multiprocessing, "get_start_method", lambda allow_none=False: "spawn")
    sizes, note = plan("ram", split.images, 64, processes=1, workers=2)
    assert sizes is None and "start by spawn" in note
    assert plan("ram", split.images, 64, processes=1, workers=0)[0] is not None  # no workers: no copies
