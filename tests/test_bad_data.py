"""Bad images and labels never stop an epoch, and every image PIL or torchvision opens is read.

Decoding each image kind (pixel values checked), reading label rows (polygons, non-finite
numbers), the bounds on what a file may declare, the datasets' skipping of an image that
fails to decode after the scan (in the main process and across DataLoader workers), and
one real training epoch and `gelanc val` over a dataset holding one of each bad kind.
Every file is built here with PIL, or byte by byte for what PIL cannot write (48- and
64-bit PNGs, a header that declares more pixels than the file holds)."""

from __future__ import annotations

import os
import signal
import struct
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from gelanc.cli import main
from gelanc.data.augment import AugmentedDataset
from gelanc.data.config import load_data_config
from gelanc.data.dataset import (
    ORPHANS,
    YoloDataset,
    _parse_labels,
    check_image,
    collate,
    image_files,
    label_row,
    load_split,
    polygon_box,
    scan,
)
from gelanc.data.image import SENTINEL, ImageError, probe, read_rgb
from gelanc.dsl.loader import library_root
from gelanc.limits import MAX_IMAGE_PIXELS
from gelanc.train import loop
from gelanc.train import setup as train_setup
from gelanc.train.args import TrainArgs
from gelanc.train.hyp import Hyp
from gelanc.train.loop import train

SPECS = library_root() / "specs"
FAST = {"warmup_epochs": 0.0, "mosaic": 0.5, "mixup": 0.0}
OFF = dict(hsv_h=0, hsv_s=0, hsv_v=0, translate=0, scale=0, fliplr=0, mosaic=0, mixup=0)
BOX = "0 0.5 0.5 0.5 0.5\n"
FIFOS = hasattr(os, "mkfifo")


def png(w: int, h: int, depth: int, colour: int, rows: list[bytes], interlace: int = 0, split: int = 1) -> bytes:
    """A PNG file byte by byte: IHDR (size, bit depth, colour type), the image data (filter
    type 0 on every row; for an interlaced file, ``rows`` are those of its passes) in
    ``split`` IDAT chunks, IEND."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, interlace)
    idat = zlib.compress(b"".join(b"\0" + r for r in rows))
    step = -(-len(idat) // split)
    chunks = b"".join(chunk(b"IDAT", idat[i:i + step]) for i in range(0, len(idat), step))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunks + chunk(b"IEND", b"")


def short_png(w: int = 64, h: int = 64, rows: int = 4) -> bytes:
    """An 8-bit RGB PNG whose chunks are all valid but whose image data holds only ``rows``
    of its ``h`` rows: PIL's verify passes it, PIL's decoder pads it with black, libpng
    says "Not enough image data" and torchvision 0.29's decoder segfaults on it."""
    return png(w, h, 8, 2, [bytes(range(3 * w)) for _ in range(rows)])


def wide_png(values: np.ndarray, colour: int) -> bytes:
    """A 16-bit PNG of (H, W, C) values (colour type 2: RGB, 6: RGBA)."""
    h, w, _ = values.shape
    big = values.astype(">u2")
    return png(w, h, 16, colour, [row.tobytes() for row in big])


def tiff16_rgb(values: np.ndarray) -> bytes:
    """An uncompressed 16-bit-a-channel RGB TIFF of (H, W, 3) values (PIL writes none)."""
    h, w, _ = values.shape
    pixels = values.astype("<u2").tobytes()
    bps_at = 8 + len(pixels)  # the bits-per-sample triple, then the directory
    tags = [(256, 3, 1, w), (257, 3, 1, h), (258, 3, 3, bps_at), (259, 3, 1, 1), (262, 3, 1, 2), (273, 4, 1, 8),
            (277, 3, 1, 3), (278, 3, 1, h), (279, 4, 1, len(pixels)), (284, 3, 1, 1)]
    ifd = struct.pack("<H", len(tags)) + b"".join(
        struct.pack("<HHIHH", t, k, n, v, 0) if k == 3 and n == 1 else struct.pack("<HHII", t, k, n, v)
        for t, k, n, v in tags) + struct.pack("<I", 0)
    return b"II*\0" + struct.pack("<I", bps_at + 6) + pixels + struct.pack("<HHH", 16, 16, 16) + ifd


@contextmanager
def no_hang(seconds: float = 60):
    """A TimeoutError instead of a test that waits forever (on a FIFO, say)."""
    def timeout(*_):
        raise TimeoutError(f"still blocked after {seconds} s")

    old = signal.signal(signal.SIGALRM, timeout)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def rgb_pattern(h: int = 12, w: int = 20) -> np.ndarray:
    """An asymmetric 8-bit RGB picture: every pixel distinct, so a flip or turn shows."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 12 % 256, y * 20 % 256, (x + y * w) % 256], -1).astype(np.uint8)


def chw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)


# ---- decoding ---------------------------------------------------------------------


def test_16_bit_greyscale_png_and_tiff_are_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 32896, 65535], [1000, 40000, 65280, 128]], dtype=np.uint16)
    expected = torch.from_numpy(np.rint(values / 257).astype(np.uint8))
    for suffix in (".png", ".tif"):  # torchvision's decoder, PIL's
        path = tmp_path / f"grey16{suffix}"
        Image.fromarray(values).save(path)
        assert Image.open(path).mode.startswith("I;16")
        out = read_rgb(path)
        assert out.dtype == torch.uint8 and out.shape == (3, 2, 4)
        assert torch.equal(out[0], expected) and torch.equal(out[1], out[0]) and torch.equal(out[2], out[0])
        assert out[0, 0, 3] == 255 and out[0, 1, 0] == 4  # PIL's own conversion would make 1000 white


def test_48_and_64_bit_png_and_48_bit_tiff_scaled_to_8_bits_alpha_dropped(tmp_path):
    rgb = np.zeros((3, 5, 3), dtype=np.uint16)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 65535, 32896, 257
    rgb[1, 2] = (0, 65535, 0)
    (tmp_path / "rgb48.png").write_bytes(wide_png(rgb, 2))
    out = read_rgb(tmp_path / "rgb48.png")
    assert out.shape == (3, 3, 5) and out[:, 0, 0].tolist() == [255, 128, 1] and out[:, 1, 2].tolist() == [0, 255, 0]

    rgba = np.concatenate([rgb, np.full((3, 5, 1), 0, np.uint16)], -1)  # fully transparent: alpha is dropped
    (tmp_path / "rgba64.png").write_bytes(wide_png(rgba, 6))
    assert torch.equal(read_rgb(tmp_path / "rgba64.png"), out)

    (tmp_path / "rgb48.tif").write_bytes(tiff16_rgb(rgb))  # through PIL, which keeps each value's high byte
    assert torch.equal(read_rgb(tmp_path / "rgb48.tif"), out) and probe(tmp_path / "rgb48.tif") == (5, 3)


@pytest.mark.parametrize("suffix,options", [(".bmp", {}), (".tif", {}), (".webp", {"lossless": True}),
                                            (".png", {})])
def test_8_bit_rgb_formats_decode_exactly(tmp_path, suffix, options):
    a = rgb_pattern()
    path = tmp_path / f"x{suffix}"
    Image.fromarray(a).save(path, **options)
    assert torch.equal(read_rgb(path), chw(a))
    assert probe(path) == (20, 12)


@pytest.mark.parametrize("mode", ["P", "L", "LA", "RGBA", "1"])
def test_palette_grey_and_alpha_pngs_become_what_pil_calls_rgb(tmp_path, mode):
    im = Image.fromarray(rgb_pattern()).convert(mode)
    im.save(tmp_path / "x.png")
    expected = chw(np.asarray(Image.open(tmp_path / "x.png").convert("RGB")))
    assert torch.equal(read_rgb(tmp_path / "x.png"), expected)


@pytest.mark.parametrize("suffix,options", [(".jpg", {"quality": 98}), (".png", {}), (".webp", {"lossless": True}),
                                            (".tif", {})])
def test_exif_orientation_is_applied_and_the_scan_sees_the_turned_size(tmp_path, suffix, options):
    a = np.zeros((12, 20, 3), np.uint8)
    a[:4, :6] = (255, 0, 0)  # a red block top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # "turn 90° clockwise to view"
    path = tmp_path / f"x{suffix}"
    Image.fromarray(a).save(path, exif=exif, **options)
    out = read_rgb(path)
    assert out.shape == (3, 20, 12) and probe(path) == (12, 20)
    assert out[0, :6, -4:].float().mean() > 200 and out[0, -6:, :4].float().mean() < 50  # now top-right


def test_truncated_jpeg_is_refused_by_the_scan_and_the_decoder(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "whole.jpg", quality=95)
    data = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) * 6 // 10])
    with Image.open(tmp_path / "cut.jpg") as im:
        im.verify()  # PIL's check of the headers alone lets it through
    assert "truncated" in check_image(tmp_path / "cut.jpg")
    with pytest.raises(ImageError, match="truncated"):
        read_rgb(tmp_path / "cut.jpg")
    assert check_image(tmp_path / "whole.jpg") is None
    # padding after the end-of-image marker is not truncation
    (tmp_path / "padded.jpg").write_bytes(data + b"\0" * 100)
    assert check_image(tmp_path / "padded.jpg") is None


def test_header_sizes_over_the_bound_are_refused_before_decoding(tmp_path):
    (tmp_path / "bomb.png").write_bytes(png(100_000, 100_000, 8, 2, [b"\0" * 3]))
    for check in (probe, read_rgb):
        with pytest.raises(ImageError, match="MAX_IMAGE_PIXELS"):
            check(tmp_path / "bomb.png")
    # under PIL's own refusal (twice its 89 M-pixel bound) but over gelanc's: gelanc's bound holds
    side = int(MAX_IMAGE_PIXELS**0.5) + 1
    (tmp_path / "big.png").write_bytes(png(side, side, 8, 0, [b"\0"]))
    with pytest.raises(ImageError, match=f"{side}×{side} pixels, over the limit"):
        probe(tmp_path / "big.png")


def test_what_is_not_an_image_is_an_image_error(tmp_path):
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(ImageError, match="not an image"):
        read_rgb(tmp_path / "text.png")
    with pytest.raises(ImageError, match="no such file"):
        read_rgb(tmp_path / "gone.png")
    bad = bytearray(png(8, 8, 8, 2, [bytes(24)] * 8))
    bad[-20] ^= 0xFF  # the IDAT chunk's checksum
    (tmp_path / "crc.png").write_bytes(bytes(bad))
    assert check_image(tmp_path / "crc.png") is not None


def test_a_png_with_too_little_image_data_is_an_image_error_not_black_rows(tmp_path):
    (tmp_path / "short.png").write_bytes(short_png())
    with Image.open(tmp_path / "short.png") as im:
        im.verify()  # PIL's check of the chunks lets it through
    with Image.open(tmp_path / "short.png") as im:
        im.load()  # and PIL's decoder fills the 60 missing rows with black, without a word
    for check in (probe, read_rgb):
        with pytest.raises(ImageError, match="too little image data: it inflates to 772 of the 12,352 bytes"):
            check(tmp_path / "short.png")
    # whole, its data in five IDAT chunks
    (tmp_path / "whole.png").write_bytes(png(64, 64, 8, 2, [bytes(range(3 * 64))] * 64, split=5))
    assert probe(tmp_path / "whole.png") == (64, 64) and read_rgb(tmp_path / "whole.png")[:, :, 1].tolist() == \
        [[3] * 64, [4] * 64, [5] * 64]  # the second pixel of every row: bytes 3, 4, 5
    # interlaced: Adam7's passes of a 64×64 image have 8, 8, 8, 16, 16, 32, 32 rows of 8, 8, 16, 16, 32, 32, 64 pixels
    passes = [[bytes([k * 30] * 3 * cols)] * rows for k, (cols, rows) in
              enumerate([(8, 8), (8, 8), (16, 8), (16, 16), (32, 16), (32, 32), (64, 32)])]
    (tmp_path / "adam7.png").write_bytes(png(64, 64, 8, 2, sum(passes, []), interlace=1))
    out = read_rgb(tmp_path / "adam7.png")
    assert out[0, 0, 0] == 0 and out[0, 0, 4] == 30 and out[0, 1, 0] == 180  # pass 1, pass 2, pass 7
    (tmp_path / "adam7short.png").write_bytes(png(64, 64, 8, 2, sum(passes[:6], []), interlace=1))
    for check in (probe, read_rgb):
        with pytest.raises(ImageError, match="inflates to 6,232 of the 12,408 bytes"):
            check(tmp_path / "adam7short.png")
    # a whole image whose last row is the very pattern the decoder's test fills it with beforehand
    marker = (SENTINEL * 2)[: 3 * 64]
    (tmp_path / "marker.png").write_bytes(png(64, 64, 8, 2, [bytes(3 * 64)] * 63 + [marker]))
    assert probe(tmp_path / "marker.png") == (64, 64)
    assert read_rgb(tmp_path / "marker.png")[:, -1].permute(1, 0).flatten().tolist() == list(marker)


def test_16_bit_colour_png_is_rounded_not_cut_to_its_high_byte(tmp_path):
    # values whose high byte is not round(v / 257), the figure 16-bit greyscale and TIFF get
    v = np.array([[[255, 25855, 51200], [65024, 128, 65535]]], dtype=np.uint16)  # high bytes 0 100 200, 254 0 255
    expected = [[1, 101, 199], [253, 0, 255]]
    (tmp_path / "rgb48.png").write_bytes(wide_png(v, 2))
    assert read_rgb(tmp_path / "rgb48.png").permute(1, 2, 0)[0].tolist() == expected
    rgba = np.concatenate([v, np.full((1, 2, 1), 300, np.uint16)], -1)
    (tmp_path / "rgba64.png").write_bytes(wide_png(rgba, 6))
    assert read_rgb(tmp_path / "rgba64.png").permute(1, 2, 0)[0].tolist() == expected
    grey_alpha = np.stack([v[..., 0], np.full((1, 2), 7, np.uint16)], -1)  # colour type 4: grey, alpha
    (tmp_path / "la32.png").write_bytes(wide_png(grey_alpha, 4))
    assert read_rgb(tmp_path / "la32.png").permute(1, 2, 0)[0].tolist() == [[1, 1, 1], [253, 253, 253]]


@pytest.mark.skipif(not FIFOS, reason="FIFOs are POSIX")
def test_a_fifo_is_refused_at_once_by_the_scan_and_the_decoder(tmp_path):
    os.mkfifo(tmp_path / "fifo.png")  # opening it for reading would wait for a writer, forever
    os.mkdir(tmp_path / "folder.png")
    with no_hang():
        for check in (probe, read_rgb):
            for name in ("fifo.png", "folder.png"):
                with pytest.raises(ImageError, match="^not a regular file$"):
                    check(tmp_path / name)


# ---- label rows --------------------------------------------------------------------


def test_a_polygon_row_becomes_its_extent_clipped_to_the_image():
    assert label_row("0 0.1 0.2 0.5 0.2 0.3 0.6".split(), 2) == pytest.approx([0, 0.3, 0.4, 0.4, 0.4])
    assert label_row("1 -0.2 0.5 0.5 -0.1 1.3 0.9 0.4 0.4".split(), 2) == pytest.approx([1, 0.5, 0.45, 1.0, 0.9])
    assert polygon_box([0.25, 0.25, 0.75, 0.25, 0.75, 0.5, 0.25, 0.5]) == pytest.approx([0.5, 0.375, 0.5, 0.25])


@pytest.mark.parametrize("row,why", [
    ("0 0.1 0.2 0.5 0.2 0.3", "5 coordinates: a polygon needs an even number"),
    ("0 0.1 0.2 0.5 0.2 0.3 0.6 0.7", "7 coordinates"),
    ("0 0.5 0.5", "3 values, expected class cx cy w h"),
    ("nan 0.5 0.5 0.1 0.1", "not finite"),
    ("inf 0.5 0.5 0.1 0.1", "not finite"),
    ("0 nan 0.5 0.1 0.1", "not finite"),
    ("0 0.5 0.5 inf 0.1", "not finite"),
    ("0 0.5 0.5 0.1 1e999", "not finite"),
    ("0 0.1 0.2 0.5 nan 0.3 0.6", "not finite"),
    ("7.000000000000000000000000000 0.5 0.5 0.1 0.1", "class 7 is not in 0…1"),
    ("0.5 0.5 0.5 0.1 0.1", "class 0.5 is not in"),
    ("1 2 3 4 5 6 7", "a polygon with no area inside the image"),
    ("0 0.5 0.5 0 0.1", "coordinates outside [0, 1]"),
    ("zero 0.5 0.5 0.1 0.1", "not numbers"),
])
def test_bad_rows_say_why_without_echoing_the_text(row, why):
    out = label_row(row.split(), 2)
    assert isinstance(out, str) and why in out
    assert "000000" not in out


def test_label_files_mix_boxes_and_polygons_and_are_bounded(tmp_path, monkeypatch):
    f = tmp_path / "a.txt"
    f.write_text("0 0.5 0.5 0.2 0.2\n\n1 0.1 0.1 0.3 0.1 0.3 0.3 0.1 0.3\n")
    labels, why = _parse_labels(f, 2)
    assert why is None
    assert torch.allclose(labels, torch.tensor([[0, 0.5, 0.5, 0.2, 0.2], [1, 0.2, 0.2, 0.2, 0.2]]))
    f.write_text("0 0.5 0.5 0.2 0.2\n0 nan 0.5 0.2 0.2\n")
    assert _parse_labels(f, 2) == (None, "line 2: a number that is not finite (nan or inf)")

    import gelanc.data.dataset as ds

    monkeypatch.setattr(ds, "MAX_LABEL_BYTES", 64)
    f.write_text("0 0.5 0.5 0.2 0.2\n" * 4)  # 72 bytes
    labels, why = _parse_labels(f, 2)
    assert labels is None and "over 64 bytes" in why and "MAX_LABEL_BYTES" in why


def test_an_oversized_data_yaml_is_refused_unread(tmp_path):
    from gelanc.data.config import DataError, load_data_config
    from gelanc.limits import MAX_DATA_YAML_BYTES

    f = tmp_path / "data.yaml"
    f.write_text("train: a\nval: b\nnames: [x]\n" + "#" * MAX_DATA_YAML_BYTES)
    with pytest.raises(DataError, match="MAX_DATA_YAML_BYTES"):
        load_data_config(f)


# ---- datasets and training -------------------------------------------------------


def picture(seed: int, size: int = 32) -> np.ndarray:
    """A grey field with a bright square in the middle (the BOX label's object)."""
    a = np.random.default_rng(seed).integers(40, 90, (size, size, 3), dtype=np.uint8)
    a[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = (230, 60, 60)
    return a


def bad_dataset(root: Path) -> tuple[Path, dict[str, str]]:
    """A YOLO dataset holding one of each kind of bad image and label, beside good ones.

    Returns data.yaml and {file name: what the report must say of it}, for each file
    that must be named. train and val are the same folder, so `gelanc val` meets them all."""
    img, lab = root / "images" / "all", root / "labels" / "all"
    img.mkdir(parents=True)
    lab.mkdir(parents=True)

    def label(name: str, text: str = BOX) -> None:
        (lab / f"{name}.txt").write_text(text)

    for k in range(4):  # good 8-bit PNGs
        Image.fromarray(picture(k)).save(img / f"good{k}.png")
        label(f"good{k}")
    # decodable kinds that crashed training before: kept and trained on
    Image.fromarray(picture(10)[..., 0].astype(np.uint16) * 257).save(img / "grey16.png")  # I;16
    (img / "rgb48.png").write_bytes(wide_png(picture(11).astype(np.uint16) * 257, 2))
    Image.fromarray(picture(12)).save(img / "plain.bmp")
    Image.fromarray(picture(13)).save(img / "plain.tif")
    Image.fromarray(picture(14)).save(img / "outline.png")
    for name in ("grey16", "rgb48", "plain", "outline"):
        label(name)
    label("outline", "0 0.25 0.25 0.75 0.25 0.75 0.75 0.25 0.75\n")
    # files that must be skipped and named
    noise = np.random.default_rng(5).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(img / "truncated.jpg", quality=95)
    data = (img / "truncated.jpg").read_bytes()
    (img / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (img / "notanimage.png").write_text("this is text, not a PNG")
    (img / "giant.png").write_bytes(png(100_000, 100_000, 8, 2, [b"\0" * 3]))
    (img / "short.png").write_bytes(short_png())  # torchvision's decoder segfaulted on it
    if FIFOS:
        os.mkfifo(img / "fifo.png")  # the scan's open() waited on it forever
    for name in ("truncated", "notanimage", "giant", "short", "fifo"):
        label(name)
    for name, row in [("nanclass", "nan 0.5 0.5 0.2 0.2\n"), ("infclass", "inf 0.5 0.5 0.2 0.2\n"),
                      ("nancoord", "0 0.5 nan 0.2 0.2\n"), ("infcoord", "0 0.5 0.5 inf 0.2\n"),
                      ("oddpolygon", "0 0.1 0.1 0.9 0.1 0.5\n")]:
        Image.fromarray(picture(20)).save(img / f"{name}.png")
        label(name, row)
    label("orphan")  # a label with no image
    Image.fromarray(picture(30)).save(img / "vanishing.png")  # deleted after the scan
    Image.fromarray(picture(31)).save(img / "shortened.png")  # cut to 4 rows of image data after the scan
    label("vanishing")
    label("shortened")

    yaml = root / "data.yaml"
    yaml.write_text("train: images/all\nval: images/all\nnames: [thing]\n")
    named = {"truncated.jpg": "truncated", "notanimage.png": "not an image", "giant.png": "MAX_IMAGE_PIXELS",
             "nanclass.txt": "not finite", "infclass.txt": "not finite", "nancoord.txt": "not finite",
             "infcoord.txt": "not finite", "oddpolygon.txt": "5 coordinates", "orphan.txt": "",
             "vanishing.png": "no such file", "short.png": "too little image data",
             "shortened.png": "too little image data"}
    if FIFOS:
        named["fifo.png"] = "not a regular file"
    return yaml, named


def spoil_after_the_scan(monkeypatch, vanishing: Path, shortened: Path) -> None:
    """Just after the data is scanned, delete ``vanishing`` and cut ``shortened``'s image
    data short: they fail only when their batch loads."""
    real = loop.load_data

    def load_then_spoil(*a, **kw):
        data = real(*a, **kw)
        vanishing.unlink()
        shortened.write_bytes(short_png(32, 32))
        return data

    monkeypatch.setattr(loop, "load_data", load_then_spoil)  # gelanc train's
    monkeypatch.setattr(train_setup, "load_data", load_then_spoil)  # gelanc val's


def assert_named(err: str, named: dict[str, str]) -> None:
    for name, why in named.items():
        lines = [line for line in err.splitlines() if name in line]
        assert lines, f"{name} is not named:\n{err}"
        assert any(why in line for line in lines), f"{name}: '{why}' not said:\n{err}"


def test_an_epoch_and_val_complete_over_every_kind_of_bad_file_and_name_each(tmp_path, capsys, monkeypatch):
    yaml, named = bad_dataset(tmp_path / "d")
    vanishing = tmp_path / "d" / "images" / "all" / "vanishing.png"
    shortened = vanishing.with_name("shortened.png")
    kept = vanishing.read_bytes()
    spoil_after_the_scan(monkeypatch, vanishing, shortened)
    out = tmp_path / "run"
    run = train(TrainArgs(spec=str(SPECS / "gelan-t.gel"), data=str(yaml), epochs=1, imgsz=64, batch=4, workers=0,
                          out=str(out), device="cpu", deterministic=True, progress=False, hyp=FAST))
    err = capsys.readouterr().err
    assert (out / "last.pt").is_file() and run.summary["epochs"] == 1
    assert_named(err, named)
    # 4 good + 16-bit grey + 48-bit RGB + BMP + TIFF + polygon + the two spoilt after the scan
    assert "train: 11 images" in err and "1 label files without an image (ignored): orphan.txt" in err
    assert f"{4 + FIFOS} corrupt images" in err  # truncated, not an image, giant, short and the FIFO: all named
    for fine in ("grey16.png", "rgb48.png", "plain.bmp", "plain.tif", "outline.png", "outline.txt"):
        assert fine not in err, f"{fine} is not bad"
    epoch = err[err.index("epoch 1/1"):]
    assert "2 images could not be decoded and were skipped: " in epoch
    assert "vanishing.png (no such file)" in epoch and "shortened.png (too little image data: it inflates" in epoch
    assert run.summary["skipped"]["images"] == 2
    assert sorted(run.summary["skipped"]["first"]) == [str(shortened), str(vanishing)]

    # both back for `gelanc val`, to be spoilt again after its scan
    vanishing.write_bytes(kept)
    Image.fromarray(picture(31)).save(shortened)
    code = main(["val", str(out / "last.pt"), "--data", str(yaml), "--imgsz", "64", "--device", "cpu",
                 "--workers", "0"])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert_named(err, named)
    warning = next(line for line in err.splitlines() if "warning: " in line)
    assert "2 images could not be decoded and were skipped" in warning and "vanishing.png (no such file)" in warning
    assert "shortened.png (too little image data" in warning
    assert "(9 images," in stdout  # the eleven the scan kept, less the two spoilt after it


# ---- the datasets' skipping, unit by unit --------------------------------------------------


@pytest.fixture
def split(tmp_path):
    root = tmp_path / "s"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for k in range(6):
        Image.fromarray(picture(k)).save(root / "images" / f"{k}.png")
        (root / "labels" / f"{k}.txt").write_text(BOX)
    return scan(image_files([root / "images"]), 1)


@pytest.mark.parametrize("workers", [0, 1])
def test_validation_batches_leave_out_and_name_an_image_gone_since_the_scan(split, workers):
    split.images[2].unlink()
    loader = DataLoader(YoloDataset(split, 64), batch_size=4, num_workers=workers, collate_fn=collate)
    batches = list(loader)
    assert [len(b.images) for b in batches] == [3, 2]
    assert batches[0].skipped == [(str(split.images[2]), "no such file")]
    assert str(split.images[2]) not in batches[0].paths and batches[1].skipped == []
    assert batches[0].targets[:, 0].tolist() == [0, 1, 2]  # indexed by the images kept


def test_a_batch_of_only_failed_images_is_empty_not_an_error(split):
    for p in split.images[:2]:
        p.unlink()
    batch = collate([YoloDataset(split, 64)[i] for i in range(2)])
    assert batch.images.shape[0] == 0 and batch.targets.shape == (0, 6) and len(batch.skipped) == 2


def test_augmented_samples_skip_their_own_failed_image_and_grey_out_a_failed_tile(split):
    gone = split.images[3]
    gone.unlink()
    ds = AugmentedDataset(split, 64, Hyp(**{**OFF, "mosaic": 1.0}), seed=0)
    own = ds[3]
    assert own.image is None and own.skipped[0] == (str(gone), "no such file")
    others = [ds[i] for i in range(len(ds)) if i != 3]
    assert all(s.image is not None and s.image.shape == (3, 64, 64) for s in others)
    hit = [s for s in others if s.skipped]
    assert hit, "some mosaic draws image 3 as one of its tiles"
    assert all(s.skipped == ((str(gone), "no such file"),) * len(s.skipped) for s in hit)
    letterboxed = AugmentedDataset(split, 64, Hyp(**OFF), seed=0)
    assert letterboxed[3].image is None and letterboxed[2].skipped == ()


def test_orphan_labels_are_reported_for_folders_not_for_lists(tmp_path):
    root = tmp_path / "d"
    for split_name in ("train", "val"):
        (root / "images" / split_name).mkdir(parents=True)
        (root / "labels" / split_name).mkdir(parents=True)
        Image.fromarray(picture(0)).save(root / "images" / split_name / "a.png")
        (root / "labels" / split_name / "a.txt").write_text(BOX)
    (root / "labels" / "train" / "lost.txt").write_text(BOX)
    (root / "val.txt").write_text("images/val/a.png\n")
    (root / "data.yaml").write_text("train: images/train\nval: val.txt\nnames: [thing]\n")
    (root / "labels" / "val" / "other.txt").write_text(BOX)  # a list may name part of a folder
    cfg = load_data_config(root / "data.yaml")
    train_split, _ = load_split(cfg, "train", root)
    val_split, _ = load_split(cfg, "val", root)
    assert train_split.problems[ORPHANS] == ["lost.txt"] and len(train_split.images) == 1
    assert ORPHANS not in val_split.problems
