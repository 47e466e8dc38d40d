"""COCO instances JSON → the same Scan as YOLO labels, every bad entry counted."""

import json

import pytest
import torch
from torchvision.io import write_png

from gelanc.data import coco
from gelanc.data.coco import scan_coco
from gelanc.data.config import DataError

# torchvision 0.29 deprecates its PNG writer (for torchcodec); it still writes the test images fine
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding:DeprecationWarning")


def image(path, w: int, h: int) -> None:
    write_png(torch.full((3, h, w), 128, dtype=torch.uint8), str(path))


@pytest.fixture
def dataset(tmp_path):
    """A 200×100 and a 50×80 image with good boxes, and one of every kind of bad entry."""
    folder = tmp_path / "images"
    folder.mkdir()
    image(folder / "wide.png", 200, 100)
    image(folder / "tall.png", 50, 80)
    image(folder / "bare.png", 32, 32)
    image(folder / "resized.png", 40, 40)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    doc = {
        "images": [
            {"id": 1, "file_name": "wide.png", "width": 200, "height": 100},
            {"id": 7, "file_name": "tall.png", "width": 50, "height": 80},
            {"id": 3, "file_name": "bare.png"},  # no size given: read from the file
            {"id": 4, "file_name": "gone.png", "width": 10, "height": 10},
            {"id": 5, "file_name": "broken.png", "width": 10, "height": 10},
            {"id": 6, "file_name": "resized.png", "width": 80, "height": 80},
            {"file_name": "no-id.png"},
            {"id": 1, "file_name": "again.png"},
        ],
        # category ids with gaps and out of order: classes follow the sorted ids 3, 10, 42
        "categories": [{"id": 42, "name": "kite"}, {"id": 3, "name": "car"}, {"id": 10, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [20, 10, 40, 30], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 42, "bbox": [150, 50, 50, 50]},
            {"id": 3, "image_id": 7, "category_id": 10, "bbox": [0, 0, 50, 80], "iscrowd": 0},
            {"id": 4, "image_id": 7, "category_id": 10, "bbox": [40, 60, 20, 40]},  # partly out: clipped
            {"id": 5, "image_id": 7, "category_id": 10, "bbox": [60, 0, 10, 10]},  # wholly out: dropped
            {"id": 6, "image_id": 7, "category_id": 10, "bbox": [5, 5, 0, 10]},  # zero width: dropped
            {"id": 7, "image_id": 1, "category_id": 3, "bbox": [0, 0, 10, 10], "iscrowd": 1},
            {"id": 8, "image_id": 99, "category_id": 3, "bbox": [0, 0, 10, 10]},
            {"id": 9, "image_id": 1, "category_id": 5, "bbox": [0, 0, 10, 10]},
            {"id": 10, "image_id": 1, "category_id": 3, "bbox": [0, 0, 10]},
            {"id": 11, "image_id": [1], "category_id": 3, "bbox": [0, 0, 10, 10]},
            "not an annotation",
        ],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(doc))
    return path, folder


def test_labels_are_normalised_class_cx_cy_w_h(dataset):
    path, folder = dataset
    scan, names = scan_coco(path, folder)
    assert names == ["car", "dog", "kite"]
    assert scan.images == [folder / "wide.png", folder / "tall.png", folder / "bare.png"]
    wide, tall, bare = scan.labels
    assert all(t.dtype == torch.float32 for t in scan.labels)
    # car [20, 10, 40, 30] in 200×100: centre (40, 25), size 40×30; kite [150, 50, 50, 50]: centre (175, 75)
    assert torch.allclose(wide, torch.tensor([[0, 40 / 200, 25 / 100, 40 / 200, 30 / 100],
                                              [2, 175 / 200, 75 / 100, 50 / 200, 50 / 100]]))
    # the whole image; and [40, 60, 20, 40] clipped to x 40…50, y 60…80
    assert torch.allclose(tall, torch.tensor([[1, 0.5, 0.5, 1, 1], [1, 45 / 50, 70 / 80, 10 / 50, 20 / 80]]))
    assert bare.shape == (0, 5)


def test_every_bad_entry_is_counted_and_named(dataset):
    path, folder = dataset
    scan, _ = scan_coco(path, folder)
    p = scan.problems
    counts = {kind: len(items) for kind, items in p.items()}
    assert counts == {
        coco.BAD_IMAGE_ENTRY: 2,  # no id; a repeated id
        coco.UNKNOWN_IMAGE: 2,  # id 99; a list for an id
        coco.UNKNOWN_CATEGORY: 1,
        coco.BAD_ANNOTATION: 2,  # three-number bbox; a string
        coco.CROWD: 1,
        coco.CLIPPED: 1,
        coco.DROPPED: 2,  # wholly outside; zero width
        coco.MISSING: 1,
        "corrupt images": 1,
        coco.SIZE_MISMATCH: 1,
        "empty images (kept as background)": 1,
    }
    assert p[coco.MISSING][0].startswith("gone.png")
    assert p["corrupt images"][0].startswith("broken.png")
    assert p[coco.SIZE_MISMATCH][0].startswith("resized.png: 40×40")
    assert sorted(s.split(":")[1].strip() for s in p[coco.DROPPED]) == ["annotation 5", "annotation 6"]
    assert "annotation 8" in p[coco.UNKNOWN_IMAGE][0] and "99" in p[coco.UNKNOWN_IMAGE][0]
    assert p["empty images (kept as background)"] == ["bare.png"]
    assert "3 images, 4 objects" in scan.report()


@pytest.mark.parametrize("text, message", [
    ("{", "not valid JSON"),
    ("[1, 2]", "found a list"),
    ('{"images": [], "categories": []}', "no annotations list"),
    ('{"annotations": []}', "no images, categories list"),
    ('{"images": [], "annotations": [], "categories": []}', "categories is empty"),
    ('{"images": [], "annotations": [], "categories": [{"name": "x"}]}', "integer id"),
])
def test_a_file_that_is_not_coco_is_a_data_error_naming_it(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(DataError, match=message) as e:
        scan_coco(path, tmp_path)
    assert str(path) in str(e.value)


def test_a_data_yaml_with_coco_splits_names_classes_from_the_json_and_caches(dataset, tmp_path, monkeypatch):
    from gelanc.data.config import load_data_config
    from gelanc.data.dataset import load_split

    (tmp_path / "data.yaml").write_text("train: {annotations: instances.json, images: images}\n"
                                        "val: {annotations: instances.json, images: images}\n")
    cfg = load_data_config(tmp_path / "data.yaml")
    first, names = load_split(cfg, "train", tmp_path)
    assert names == ["car", "dog", "kite"] and len(first.images) == 3
    assert (tmp_path / "instances.cache").is_file()

    def fail(*a):
        raise AssertionError("the cache should have answered")

    monkeypatch.setattr(coco, "scan_coco", fail)
    again, names_again = load_split(cfg, "val", tmp_path)
    assert names_again == names and [p.name for p in again.images] == [p.name for p in first.images]
    assert all(torch.equal(a, b) for a, b in zip(again.labels, first.labels))


def test_names_must_agree_with_the_categories(dataset, tmp_path):
    from gelanc.data.config import load_data_config
    from gelanc.data.dataset import load_split

    (tmp_path / "data.yaml").write_text("train: {annotations: instances.json, images: images}\n"
                                        "val: {annotations: instances.json, images: images}\nnames: [a, b]\n")
    with pytest.raises(DataError, match="3 categories, but names lists 2"):
        load_split(load_data_config(tmp_path / "data.yaml"), "train", tmp_path)


def test_image_sizes_are_the_decoded_ones_with_exif_orientation(tmp_path):
    """A phone photo stored 60×40 with "turn 90°" in its EXIF is 40×60 as decoded and as
    the JSON (drawn on the turned picture) says; the stored size is another picture."""
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6
    for name in ("turned.jpg", "stored.jpg"):
        Image.new("RGB", (60, 40), (90, 90, 90)).save(folder / name, exif=exif)
    doc = {"images": [{"id": 1, "file_name": "turned.jpg", "width": 40, "height": 60},
                      {"id": 2, "file_name": "stored.jpg", "width": 60, "height": 40}],
           "categories": [{"id": 1, "name": "thing"}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 30]}]}
    (tmp_path / "instances.json").write_text(json.dumps(doc))
    scan, _ = scan_coco(tmp_path / "instances.json", folder)
    assert [p.name for p in scan.images] == ["turned.jpg"]
    assert scan.labels[0].tolist() == [[0, 0.25, 0.25, 0.5, 0.5]]
    assert scan.problems[coco.SIZE_MISMATCH] == ["stored.jpg: 40×60 pixels, the JSON says 60×40"]
