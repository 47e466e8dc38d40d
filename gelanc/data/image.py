"""Images as gelanc reads them: any file PIL opens, as (3, H, W) 8-bit RGB.

One function, :func:`read_rgb`, decodes for the training and validation datasets
and for prediction, so every stage sees the same pixels. Everything is decoded by
PIL (which bundles libjpeg-turbo and zlib-ng): torchvision's decoders are not used,
because its PNG decoder (0.29) crashes the process — a segfault, not an exception — on
a PNG whose image data is too short. PIL gives the same pixels, a tenth slower at most
(docs/data.md, "Decoding images"). The result is filled a strip of rows at a time from
PIL's decoded image: no converted or packed copy of the whole image is made.

* 8-bit images of every kind PIL opens — JPEG, PNG, BMP, TIFF, WebP, GIF — as PIL
  converts them to RGB;
* 16-bit PNG (greyscale ``I;16``, 48-bit RGB, 64-bit RGBA, 32-bit grey + alpha) with
  each value scaled to 8 bits by rounding ``v / 257`` (65535 → 255): PIL keeps only
  the high byte of a 16-bit colour PNG, so its image data is decoded a second time for
  the low bytes (:func:`_png16`); 16-bit greyscale TIFF is scaled the same way (PIL's
  own conversion to 8 bits would clip every value over 255 to white), 16-bit colour
  TIFF by PIL's own reduction (the high byte of each value);
* palette images are expanded to their colours;
* greyscale is repeated into three channels and alpha is dropped (not composited),
  as OpenCV's ``imread`` and ultralytics do;
* the EXIF orientation is applied, as ultralytics (through OpenCV) and the YOLOv9
  reference do: labels are drawn on the picture as viewers show it.

Every file is hostile until read. It is opened as :mod:`gelanc.files` opens any file
a user hands us (a regular file, without blocking: a FIFO is refused, not waited on);
the header's width × height is checked against :data:`gelanc.limits.MAX_IMAGE_PIXELS`
and the file's size against :data:`gelanc.limits.MAX_IMAGE_BYTES` before anything is
decoded; a truncated file is refused, not padded: a JPEG without its end-of-image
marker, a PNG whose image data inflates to fewer bytes than its rows need (PIL pads
such a PNG with black rows without a word; :func:`load` notices), a file that ends
inside the compressed data (PIL raises; ``LOAD_TRUNCATED_IMAGES`` is left off). Every
failure is an :class:`ImageError` with one line saying why.
"""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch

from gelanc.files import open_regular
from gelanc.limits import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS

# PIL modes that hold more than 8 bits a value in one channel (PNG and TIFF greyscale)
WIDE_GREY = ("I;16", "I;16L", "I;16B", "I;16N", "I")
# EXIF orientations that swap width and height (transposed, or turned by 90°)
TURNED = (5, 6, 7, 8)
ORIENTATION_TAG = 0x0112
# JPEG files end with the end-of-image marker; some writers pad a few bytes after it
JPEG_EOI, JPEG_TAIL = b"\xff\xd9", 1024
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # by colour type: grey, RGB, palette, grey + alpha, RGBA
PNG16 = ("RGB;16B", "RGBA;16B", "LA;16B")  # how PIL unpacks 16-bit colour, and grey + alpha, PNGs
# Adam7's passes: first column, first row, column step, row step
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
INFLATE_BLOCK = 1 << 20  # bytes inflated at a time when counting a PNG's image data
STRIP_BYTES = 16 << 20  # of PIL's image converted to the result at a time
# what a PNG's last row is filled with before decoding (:func:`load`): 251 bytes (a prime: no pixel's
# size divides it) of a fixed pseudo-random sequence
SENTINEL = bytes((k * 7919 + 104729) % 251 ^ 0xA5 for k in range(251))


class ImageError(Exception):
    """An image that cannot be used: the message says why in one line (not naming the file)."""


def reason(e: BaseException) -> str:
    """The first line of an exception's message, or its type: what a one-line report shows."""
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def open_file(path: str | Path):
    """The image file opened for reading (:func:`gelanc.files.open_regular`: a FIFO or a
    device is refused, never waited on) and its size in bytes; an :class:`ImageError`
    when it cannot be."""
    try:
        f, st = open_regular(path)
    except FileNotFoundError:
        raise ImageError("no such file") from None
    except OSError as e:
        raise ImageError(e.strerror or reason(e)) from None
    return f, st.st_size


def open_header(f, size: int):
    """A lazily opened PIL image (only its header read) of the open file ``f`` of ``size`` bytes.

    The bounds come first: the file's size, then the header's pixel count. PIL refuses
    on its own past twice its decompression-bomb bound, which is above ours: an image
    it refuses is over ours too, and is reported so."""
    from PIL import Image, UnidentifiedImageError

    if size > MAX_IMAGE_BYTES:
        raise ImageError(f"{size:,} bytes, over the limit of {MAX_IMAGE_BYTES:,} (gelanc.limits.MAX_IMAGE_BYTES)")
    f.seek(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our bound is checked just below
        try:
            im = Image.open(f)
        except Image.DecompressionBombError:
            raise ImageError(f"its header declares over {MAX_IMAGE_PIXELS:,} pixels "
                             f"(gelanc.limits.MAX_IMAGE_PIXELS)") from None
        except UnidentifiedImageError:
            raise ImageError("not an image PIL can read") from None
    w, h = im.size
    if w * h > MAX_IMAGE_PIXELS:
        raise ImageError(f"its header declares {w}×{h} pixels, over the limit of {MAX_IMAGE_PIXELS:,} "
                         f"(gelanc.limits.MAX_IMAGE_PIXELS)")
    return im


def orientation(im) -> int:
    """The EXIF orientation (1 … 8; 1 when absent or unreadable)."""
    try:
        value = im.getexif().get(ORIENTATION_TAG, 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block only means no orientation
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def jpeg_complete(f, size: int) -> bool:
    """Whether a JPEG ends with its end-of-image marker (after any padding): a cheap test
    for truncation that PIL's ``verify`` (a check of the headers) does not make. The
    entropy-coded data never holds the marker's bytes (a 0xFF there is followed by 0x00)."""
    f.seek(max(0, size - JPEG_TAIL))
    return f.read(JPEG_TAIL).rstrip(b"\x00\r\n ").endswith(JPEG_EOI)


def png_raw_size(w: int, h: int, depth: int, colour: int, interlace: int) -> int:
    """The bytes a PNG's image data inflates to: each row of each pass, a filter byte first."""
    bits = depth * PNG_CHANNELS.get(colour, 4)
    passes = ADAM7 if interlace else ((0, 0, 1, 1),)
    total = 0
    for x0, y0, dx, dy in passes:
        cols, rows = max(0, -(-(w - x0) // dx)), max(0, -(-(h - y0) // dy))
        if cols and rows:
            total += rows * (1 + (cols * bits + 7) // 8)
    return total


def png_data_check(f) -> None:
    """An :class:`ImageError` when the PNG in ``f`` holds less image data than its rows need.

    PIL stops at the end of the compressed stream and leaves the rows it did not get
    black, without a word (libpng says "Not enough image data", and torchvision's
    decoder crashes on it). The IDAT chunks are inflated here a block at a time and only
    counted: no memory, but time (Python's zlib takes ~6 ms for a 640² RGB image, most
    of what PIL's decoding takes), so it runs only where :func:`load`'s free test cannot
    tell. What else can be wrong with the chunks — a bad checksum, a stream cut short —
    PIL finds itself."""
    f.seek(0)
    if f.read(8) != PNG_SIGNATURE:
        return
    need, got, seen = None, 0, False
    inflater = zlib.decompressobj()
    while True:
        head = f.read(8)
        if len(head) < 8:
            break
        length, kind = struct.unpack(">I4s", head)
        if kind == b"IHDR" and length == 13 and need is None:
            w, h, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", f.read(13))
            need = png_raw_size(w, h, depth, colour, interlace)
        elif kind == b"IDAT" and need is not None:
            seen = True
            left = length
            while left and got < need:
                block = f.read(min(left, INFLATE_BLOCK))
                if not block:
                    break
                left -= len(block)
                try:
                    out = inflater.decompress(block, INFLATE_BLOCK)
                    got += len(out)
                    while inflater.unconsumed_tail and got < need:
                        got += len(inflater.decompress(inflater.unconsumed_tail, INFLATE_BLOCK))
                except zlib.error as e:
                    raise ImageError(f"broken image data: {reason(e)}") from None
            if got >= need:
                return
            f.seek(left, 1)
        elif seen or kind == b"IEND":
            break  # the IDAT chunks are consecutive: they are over
        else:
            f.seek(length, 1)
        f.seek(4, 1)  # the chunk's checksum
    if need is not None and got < need:
        raise ImageError(f"too little image data: it inflates to {got:,} of the {need:,} bytes its rows need")


def probe(path: str | Path) -> tuple[int, int]:
    """(width, height) of the image as :func:`read_rgb` returns it (EXIF orientation
    applied), after the checks a scan makes: the bounds, PIL's ``verify`` of the file's
    structure, a JPEG's end-of-image marker, and that a PNG's image data holds all its
    rows (a PNG is decoded: PIL does so anyway to find its EXIF block; other kinds are not)."""
    f, size = open_file(path)
    try:
        with f:
            im = open_header(f, size)
            fmt = im.format
            im.verify()  # first: reading the EXIF block of a PNG would move its file past what verify needs
            check_complete(f, size, fmt)
            im = open_header(f, size)
            if fmt == "PNG":  # PIL decodes a PNG to find its EXIF block (which may follow the image data) anyway
                load(im, f)
            w, h = im.size
            # PIL's TIFF reader reports (and decodes to) the oriented size already
            turned = fmt != "TIFF" and orientation(im) in TURNED
    except ImageError:
        raise
    except Exception as e:  # noqa: BLE001 - PIL raises many kinds for a broken file; each is the same problem
        raise ImageError(reason(e)) from None
    return (h, w) if turned else (w, h)


def check_complete(f, size: int, fmt: str | None) -> None:
    """The checks for truncation PIL does not make before decoding: a JPEG's end marker,
    an interlaced PNG's amount of image data (a plain PNG's is checked as it is decoded,
    at no cost: :func:`load`)."""
    if fmt == "JPEG" and not jpeg_complete(f, size):
        raise ImageError("truncated: no JPEG end-of-image marker")
    if fmt == "PNG" and _interlaced(f):
        png_data_check(f)


def _interlaced(f) -> bool:
    f.seek(0)
    head = f.read(29)  # signature, IHDR's length and type, then its 13 bytes: interlace is the last
    return len(head) == 29 and head.startswith(PNG_SIGNATURE) and head[12:16] == b"IHDR" and head[28] != 0


def load(im, f) -> None:
    """``im.load()``, and for a PNG an :class:`ImageError` when its image data ended before
    its last row (PIL would leave the rows it did not get black, without a word).

    The last row of the image PIL decodes into is filled first with a pattern; PIL
    writes the rows in order, so a pattern still there after decoding means the data
    ran out — or, with a chance of 1 in 2^(8 × row bytes), that the row holds exactly
    that pattern, which :func:`png_data_check` (the image data inflated and counted)
    tells apart. Interlaced PNGs are checked before decoding (:func:`check_complete`)."""
    from PIL import Image

    if im.format != "PNG" or im.info.get("interlace"):
        im.load()
        return
    w, h = im.size
    canvas = Image.new(im.mode, im.size)
    n = len(Image.new(im.mode, (w, 1)).tobytes())
    marker = (SENTINEL * (n // len(SENTINEL) + 1))[:n]
    canvas.paste(Image.frombytes(im.mode, (w, 1), marker), (0, h - 1))
    marker = canvas.crop((0, h - 1, w, h)).tobytes()  # as the mode holds it (a "1" row's spare bits, say)
    im.im = canvas.im  # what PIL decodes into: it allocates an image only when there is none
    del canvas
    im.load()
    if im.crop((0, h - 1, w, h)).tobytes() == marker:
        png_data_check(f)  # raises unless the image data is all there


def scaled16(a: np.ndarray) -> np.ndarray:
    """16-bit values (any integer array, clipped to 0 … 65535) → 8 bits, rounding v / 257."""
    return ((a.clip(0, 65535).astype(np.uint32) + 128) // 257).astype(np.uint8)


def rgb8(im) -> np.ndarray:
    """A PIL image (or a strip of one) → (H, W, 3) or (H, W) uint8: 16-bit greyscale scaled
    by rounding v / 257, anything else as PIL converts it to RGB (palette expanded, alpha dropped)."""
    if im.mode in WIDE_GREY:  # "I" (32-bit) is how PIL holds some 16-bit PNG and TIFF greyscale
        return scaled16(np.asarray(im))
    return np.asarray(im if im.mode in ("RGB", "L") else im.convert("RGB"))


def by_strips(size: tuple[int, int], fill) -> torch.Tensor:
    """A (3, H, W) uint8 tensor for an image of ``size`` (W, H), filled a strip of rows at
    a time: ``fill(y0, y1)`` gives rows y0 … y1 − 1 as (n, W, ≥ 3) or (n, W) uint8.

    A whole image converted at once would cost a converted copy and PIL's packed copy of
    it besides the result (PIL holds RGB in 4 bytes a pixel); a strip costs ~16 MB."""
    w, h = size
    out = torch.empty((3, h, w), dtype=torch.uint8)
    dst = out.numpy()
    step = max(1, STRIP_BYTES // (4 * w))
    for y in range(0, h, step):
        a = fill(y, min(h, y + step))
        dst[:, y:y + len(a)] = a[None] if a.ndim == 2 else a[..., :3].transpose(2, 0, 1)
    return out


def strips_of(im):
    """``fill`` for :func:`by_strips` from a decoded PIL image."""
    w, h = im.size
    return lambda y0, y1: rgb8(im if (y0, y1) == (0, h) else im.crop((0, y0, w, y1)))


def _loaded(f, size: int, rawmode: str | None = None):
    """The image in ``f`` decoded (its EXIF orientation applied), its image data unpacked
    as ``rawmode`` when given (PIL's name for how the bytes of a pixel are laid out)."""
    from PIL import ImageOps

    im = open_header(f, size)
    if rawmode is not None:  # a tile is (decoder, box, offset, rawmode or (rawmode, …))
        im.tile = [(*t[:3], rawmode if isinstance(t[3], str) else (rawmode, *t[3][1:])) for t in im.tile]
    load(im, f)
    ImageOps.exif_transpose(im, in_place=True)  # in place: no copy of an image that needs no turn
    im.fp = None  # what a decoder keeps beside the image (WebP: the whole image again) can go
    return im


def _png16(f, size: int, rawmode: str) -> torch.Tensor:
    """A 16-bit colour PNG, every value scaled to 8 bits by rounding v / 257.

    PIL decodes such a PNG to 8 bits by keeping each value's high byte. The same image
    data unpacked as little-endian 16-bit (``RGB;16L``: the second byte of each value)
    gives the low bytes; 16-bit grey + alpha unpacked as 8-bit RGBA gives high byte,
    low byte, alpha high, alpha low."""
    if rawmode == "LA;16B":
        im = _loaded(f, size, "RGBA")
        bytes4 = strips_of(im)

        def grey(y0: int, y1: int) -> np.ndarray:
            a = bytes4(y0, y1)
            return scaled16((a[..., 0].astype(np.uint16) << 8) | a[..., 1])

        return by_strips(im.size, grey)
    hi, lo = strips_of(_loaded(f, size)), strips_of(im := _loaded(f, size, rawmode.replace(";16B", ";16L")))
    return by_strips(im.size, lambda y0, y1: scaled16((hi(y0, y1).astype(np.uint16) << 8) | lo(y0, y1)))


def read_rgb(path: str | Path) -> torch.Tensor:
    """The image at ``path`` as (3, H, W) uint8 RGB, EXIF orientation applied; an
    :class:`ImageError` saying why when it cannot be (no such file, not a regular file,
    not an image, over a bound, truncated, undecodable)."""
    f, size = open_file(path)
    try:
        with f:
            im = open_header(f, size)
            fmt = im.format
            rawmode = im.tile[0][3] if fmt == "PNG" and len(im.tile) == 1 else None
            del im
            check_complete(f, size, fmt)  # moves the file: PIL opens it again below
            if rawmode in PNG16:
                return _png16(f, size, rawmode)
            # PIL's decoded image and the result, nothing else as large
            im = _loaded(f, size)
            return by_strips(im.size, strips_of(im))
    except ImageError:
        raise
    except MemoryError:
        raise ImageError("out of memory while decoding") from None
    except Exception as e:  # noqa: BLE001 - decoders raise many kinds for a broken file; each is the same problem
        raise ImageError(reason(e)) from None
