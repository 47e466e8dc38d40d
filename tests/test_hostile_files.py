"""Hostile data files: no hangs, no crashes, bounded reads.

A FIFO where gelanc expects a file (an image, a label file, an image list, a COCO JSON,
a data.yaml, a --hyp file, a model YAML) is refused at once, never waited on; image
lists and COCO files are bounded before they are parsed; a run folder may not be one of
the dataset's own folders. Every FIFO and file is made under tmp_path."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from PIL import Image
from test_bad_data import BOX, no_hang, picture, short_png

import gelanc
from gelanc import files
from gelanc.cli import main
from gelanc.data import coco, dataset
from gelanc.data.coco import read_coco, scan_coco
from gelanc.data.config import DataError, load_data_config
from gelanc.data.dataset import Scan, check_out_folder, image_files, load_split, scan
from gelanc.diagnostics import GelError
from gelanc.interop.refyaml import convert_file
from gelanc.train.hyp import HypError, load_hyp

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")


@pytest.fixture(autouse=True)
def _guard():
    with no_hang(120):  # a regression that blocks on a FIFO fails the test instead of hanging the run
        yield


def fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


def yolo(root: Path, n: int = 3, split: str = "train") -> Path:
    """n good images with a box each in root/images/<split>, their labels in root/labels/<split>."""
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "labels" / split).mkdir(parents=True, exist_ok=True)
    for k in range(n):
        Image.fromarray(picture(k)).save(root / "images" / split / f"{k}.png")
        (root / "labels" / split / f"{k}.txt").write_text(BOX)
    return root / "images" / split


# ---- the one reader: gelanc.files ------------------------------------------------------


def test_the_reader_refuses_what_is_not_a_regular_file_and_reads_at_most_its_bound(tmp_path):
    for special in (fifo(tmp_path / "pipe"), tmp_path):
        with pytest.raises(files.NotRegularFile) as e:
            files.read_bounded(special, 10)
        assert isinstance(e.value, OSError) and e.value.strerror == str(e.value) == "not a regular file"
    with pytest.raises(FileNotFoundError):
        files.read_bounded(tmp_path / "gone", 10)
    (tmp_path / "ten").write_bytes(b"0123456789")
    assert files.read_bounded(tmp_path / "ten", 10) == b"0123456789"
    with pytest.raises(files.TooLarge, match=r"^over 9 bytes \(gelanc.limits.X\)$") as e:
        files.read_bounded(tmp_path / "ten", 9, "gelanc.limits.X")
    assert isinstance(e.value, ValueError) and e.value.data == b"0123456789"  # limit + 1 bytes, no more
    (tmp_path / "big").write_bytes(b"x" * 100_000)
    with pytest.raises(files.TooLarge) as e:
        files.read_bounded(tmp_path / "big", 1000)
    assert len(e.value.data) == 1001
    (tmp_path / "link").symlink_to(tmp_path / "ten")
    assert files.read_regular(tmp_path / "link", 10)[0] == b"0123456789"
    with pytest.raises(OSError):  # the .gel loader's O_NOFOLLOW
        files.read_regular(tmp_path / "link", 10, follow=False)
    f, st = files.open_regular(tmp_path / "ten")
    with f:
        assert st.st_size == 10 and f.read() == b"0123456789"



def test_a_ctrl_c_inside_the_open_is_kept_and_closes_nothing_twice(tmp_path, monkeypatch):
    """Seen in CI: a Ctrl-C landed inside ``open``, which closed its new descriptor itself;
    the reader closed the same number again, and the EBADF it got replaced the interrupt —
    the command went on and reported the file as unreadable."""
    import builtins
    import io

    real_open = io.open
    reused = []

    def interrupted_open(file, *args, **kwargs):
        f = real_open(file, *args, **kwargs)
        reused.append(f.fileno())
        f.close()  # as open's own clean-up does when an interrupt lands after it has the descriptor
        os.dup2(other, reused[0])  # and the number is taken at once by another file
        raise KeyboardInterrupt

    (tmp_path / "ten").write_bytes(b"0123456789")
    other = os.open(os.devnull, os.O_RDONLY)
    monkeypatch.setattr(io, "open", interrupted_open)
    monkeypatch.setattr(builtins, "open", interrupted_open)
    try:
        with pytest.raises(KeyboardInterrupt):
            files.read_bounded(tmp_path / "ten", 10)
        os.fstat(reused[0])  # still open: the reader did not close that number a second time
    finally:
        monkeypatch.undo()
        for fd in {other, *reused}:
            os.close(fd)

# ---- YAML and JSON files: a clear error, exit 2 ----------------------------------------------


def test_fifo_yaml_files_are_clear_errors(tmp_path, capsys):
    pipe = fifo(tmp_path / "pipe.yaml")
    with pytest.raises(DataError, match="pipe.yaml: cannot read: not a regular file"):
        load_data_config(pipe)
    with pytest.raises(HypError, match="pipe.yaml: cannot read: not a regular file"):
        load_hyp(pipe)
    with pytest.raises(GelError, match="pipe.yaml: not a regular file"):
        convert_file(pipe)
    spec = str(Path(gelanc.__file__).parent.parent / "specs" / "gelan-t.gel")
    for argv in (["import-yaml", str(pipe)], ["train", spec, "--data", str(pipe), "--epochs", "1", "--device", "cpu"],
                 ["train", spec, "--hyp", str(pipe), "--epochs", "1", "--device", "cpu"]):
        assert main(argv) == 2, argv
        assert "not a regular file" in capsys.readouterr().err


def test_a_fifo_coco_file_or_image_list_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="ann.json: cannot read: not a regular file"):
        read_coco(fifo(tmp_path / "ann.json"))
    with pytest.raises(DataError, match="list.txt: cannot read: not a regular file"):
        image_files([fifo(tmp_path / "list.txt")])


# ---- images and label files in a dataset: skipped and named -------------------------------


def test_fifo_images_and_label_files_are_skipped_and_named_by_the_scan(tmp_path):
    folder = yolo(tmp_path / "d", 3)
    fifo(folder / "pipe.png")
    (tmp_path / "d" / "labels" / "train" / "pipe.txt").write_text(BOX)
    os.unlink(tmp_path / "d" / "labels" / "train" / "1.txt")
    fifo(tmp_path / "d" / "labels" / "train" / "1.txt")  # image 1's label file
    out = scan(image_files([folder]), 1)
    assert [p.name for p in out.images] == ["0.png", "2.png"]
    assert out.problems["corrupt images"] == ["pipe.png: not a regular file"]
    assert out.problems["bad label files"] == ["1.txt: cannot read: not a regular file"]
    # in a COCO split: a corrupt image too, not a missing one
    Image.fromarray(picture(0)).save(tmp_path / "a.png")
    fifo(tmp_path / "b.png")
    doc = {"images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png"}],
           "annotations": [], "categories": [{"id": 1, "name": "thing"}]}
    (tmp_path / "ann.json").write_text(json.dumps(doc))
    found, _ = scan_coco(tmp_path / "ann.json", tmp_path)
    assert [p.name for p in found.images] == ["a.png"]
    assert found.problems["corrupt images"] == ["b.png: not a regular file"]


def test_predict_names_a_fifo_and_a_short_png_and_exits_2(tmp_path, capsys):
    ckpt = tmp_path / "m.pt"
    gelanc.save(gelanc.compile(Path(__file__).parent / "specs" / "nobn.gel", nc=2), ckpt)
    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(picture(0)).save(src / "a.png")
    fifo(src / "x.jpg")
    (tmp_path / "short.png").write_bytes(short_png())  # torchvision's decoder segfaulted on it
    for source, name, why in ((src, "x.jpg", "not a regular file"), (src / "x.jpg", "x.jpg", "not a regular file"),
                              (tmp_path / "short.png", "short.png", "too little image data")):
        code = main(["predict", str(ckpt), str(source), "-o", str(tmp_path / "out"), "--device", "cpu"])
        err = capsys.readouterr().err
        assert code == 2 and f"{name}: {why}" in err, err


# ---- bounds on image lists and COCO files ---------------------------------------------------


def test_an_image_list_is_bounded_in_bytes_and_a_split_in_images(tmp_path, monkeypatch):
    folder = yolo(tmp_path / "d", 3)
    listing = tmp_path / "d" / "list.txt"
    listing.write_text("".join(f"images/train/{k}.png\n" for k in range(3)))
    assert [p.name for p in image_files([listing, folder])] == ["0.png", "1.png", "2.png"] * 2
    monkeypatch.setattr(dataset, "MAX_IMAGE_LIST_BYTES", 40)  # the list is 57 bytes
    with pytest.raises(DataError, match=r"list.txt: over 40 bytes \(gelanc.limits.MAX_IMAGE_LIST_BYTES\)"):
        image_files([listing])
    monkeypatch.setattr(dataset, "MAX_IMAGE_LIST_BYTES", 1000)
    monkeypatch.setattr(dataset, "MAX_SPLIT_IMAGES", 5)
    for sources in ([listing, folder], [folder, listing]):  # the images of every source counted together
        with pytest.raises(DataError, match=r"over 5 images \(gelanc.limits.MAX_SPLIT_IMAGES\)"):
            image_files(sources)
    monkeypatch.setattr(dataset, "MAX_SPLIT_IMAGES", 2)
    with pytest.raises(DataError, match="train: the split has over 2 images"):
        image_files([folder])
    # the bound is met before any image is looked at: a long list of missing files costs nothing
    listing.write_text("gone.png\n" * 100)
    with pytest.raises(DataError, match="over 2 images"):
        image_files([listing])


@pytest.mark.parametrize("text,why", [(b"a.png\n\xff\xfe.png\n", "line 2: not UTF-8 text"),
                                      (b"a.png\nb\x00.png\n", "line 2: a NUL character")])
def test_an_image_list_that_is_not_text_is_a_data_error(tmp_path, text, why):
    (tmp_path / "list.txt").write_bytes(text)
    with pytest.raises(DataError, match=why):
        image_files([tmp_path / "list.txt"])


def test_a_coco_file_is_bounded_before_it_is_parsed(tmp_path, monkeypatch):
    doc = {"images": [{"id": k, "file_name": f"{k}.png"} for k in range(3)], "annotations": [],
           "categories": [{"id": 1, "name": "thing"}]}
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(doc))
    text = path.read_text()
    containers, values = text.count("{") + text.count("["), text.count("{") + text.count("[") + text.count(",")
    assert (containers, values) == (8, 16)
    parsed = []
    real = json.loads
    monkeypatch.setattr(coco.json, "loads", lambda *a, **kw: parsed.append(1) or real(*a, **kw))
    for name, limit, message in (("MAX_COCO_JSON_BYTES", len(text) - 1, f"over {len(text) - 1} bytes"),
                                 ("MAX_COCO_JSON_VALUES", 15, "up to 16 JSON values, over the limit of 15"),
                                 ("MAX_COCO_JSON_CONTAINERS", 7, "up to 8 JSON objects and arrays, over the limit")):
        with monkeypatch.context() as m:
            m.setattr(coco, name, limit)
            with pytest.raises(DataError, match=rf"ann.json: .*{message}.*\(gelanc.limits.{name}\)"):
                read_coco(path)
    assert parsed == []
    monkeypatch.setattr(coco, "MAX_SPLIT_IMAGES", 2)
    with pytest.raises(DataError, match=r"ann.json: 3 images, over the limit of 2 \(gelanc.limits.MAX_SPLIT_IMAGES\)"):
        read_coco(path)
    path.write_text("[" * 100_000 + "]" * 100_000)
    monkeypatch.setattr(coco, "MAX_SPLIT_IMAGES", 10)
    with pytest.raises(DataError, match="nested too deeply"):
        read_coco(path)


def test_coco_keeps_only_the_fields_it_reads(tmp_path):
    """Segmentation polygons — most of a COCO file — are dropped as each annotation is
    parsed (a file like instances_train2017.json: +2.7 GB parsed whole, +0.8 GB so)."""
    doc = {"info": {"year": 2017}, "licenses": [{"id": 1}],
           "images": [{"id": 1, "file_name": "a.png", "width": 4, "height": 4, "coco_url": "http://x"}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 2, 2], "iscrowd": 0,
                            "area": 4.0, "segmentation": [[0, 0, 2, 0, 2, 2]]}],
           "categories": [{"id": 1, "name": "thing", "supercategory": "x"}]}
    (tmp_path / "ann.json").write_text(json.dumps(doc))
    raw = read_coco(tmp_path / "ann.json")
    assert raw == {"images": [{"id": 1, "file_name": "a.png", "width": 4, "height": 4}],
                   "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 2, 2], "iscrowd": 0}],
                   "categories": [{"id": 1, "name": "thing"}]}


# ---- the run folder is not one of the dataset's -----------------------------------------------


def test_the_run_folder_may_not_be_a_folder_of_the_datasets_images_or_labels(tmp_path):
    root = tmp_path / "d"
    yolo(root, 2, "train")
    yolo(root, 1, "val")
    (root / "data.yaml").write_text("train: images/train\nval: images/val\nnames: [thing]\n")
    cfg = load_data_config(root / "data.yaml")
    scans = [load_split(cfg, which, root)[0] for which in ("train", "val")]
    (tmp_path / "link").symlink_to(root / "images")
    for out, kind in ((root / "images" / "train", "images"), (root / "labels" / "val", "label files"),
                      (tmp_path / "link" / "val", "images"), (root / "images" / "x" / ".." / "train", "images")):
        with pytest.raises(DataError, match=f"--out {out}: that is the folder of the dataset's {kind} "):
            check_out_folder(out, scans)
    for out in (root, root / "images", root / "runs" / "exp", root / "images" / "train" / "run", tmp_path):
        check_out_folder(out, scans)  # beside, above or below them: a run's files cannot replace the data's
    check_out_folder(root / "images" / "train", [])
    images_only = Scan([tmp_path / "coco" / "a.png"], [torch.zeros(0, 5)])
    with pytest.raises(DataError, match="dataset's images"):
        check_out_folder(tmp_path / "coco", [images_only])


def test_problems_past_the_first_thousand_are_counted_not_kept(tmp_path, monkeypatch):
    """A COCO file of a million bad annotations costs their count, not a million notes."""
    doc = {"images": [], "categories": [{"id": 1, "name": "thing"}], "annotations": list(range(2500))}
    (tmp_path / "ann.json").write_text(json.dumps(doc))
    found, _ = scan_coco(tmp_path / "ann.json", tmp_path)
    assert len(found.problems[coco.BAD_ANNOTATION]) == dataset.NOTES_KEPT == 1000
    assert found.count(coco.BAD_ANNOTATION) == 2500 and found.count("corrupt images") == 0
    assert found.report().splitlines()[1].startswith(f"  2500 {coco.BAD_ANNOTATION}: ann.json: annotations[0]: ")
    # and the cache keeps the count
    (tmp_path / "d.yaml").write_text("train: {annotations: ann.json, images: .}\nval: {annotations: ann.json, "
                                     "images: .}\n")
    cfg = load_data_config(tmp_path / "d.yaml")
    first, _ = load_split(cfg, "train", tmp_path)
    monkeypatch.setattr(coco, "scan_coco", lambda *a: pytest.fail("scanned again: the cache was not used"))
    again, _ = load_split(cfg, "train", tmp_path)
    assert again.count(coco.BAD_ANNOTATION) == first.count(coco.BAD_ANNOTATION) == 2500
    assert again.problems == first.problems
