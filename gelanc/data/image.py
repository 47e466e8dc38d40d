"""Images as gelanc reads them: any file PIL or torchvision opens, as (3, H, W) 8-bit RGB.

One function, :func:`read_rgb`, decodes for the training and validation datasets
and for prediction, so every stage sees the same pixels:

* 8-bit JPEG and PNG go through torchvision's decoders (libjpeg-turbo, libpng: the
  fast path); 16-bit PNG (greyscale ``I;16``, 48-bit RGB, 64-bit RGBA) too, each
  value scaled to 8 bits by rounding ``v / 257`` (65535 → 255);
* everything else PIL opens — BMP, TIFF, WebP, and what torchvision declines —
  through PIL: 16-bit greyscale scaled the same way (PIL's own conversion to 8 bits
  would clip every value over 255 to white), 16-bit colour by PIL's own reduction
  (the high byte of each value);
* palette images are expanded to their colours;
* greyscale is repeated into three channels and alpha is dropped (not composited),
  as OpenCV's ``imread`` and ultralytics do;
* the EXIF orientation is applied, as ultralytics (through OpenCV) and the YOLOv9
  reference do: labels are drawn on the picture as viewers show it.

Every file is hostile until read: the header's width × height is checked against
:data:`gelanc.limits.MAX_IMAGE_PIXELS` and the file's size against
:data:`gelanc.limits.MAX_IMAGE_BYTES` before anything is decoded, and a truncated
file is refused, not padded with grey (both decoders raise on it; PIL's
``LOAD_TRUNCATED_IMAGES`` is left off). Every failure is an :class:`ImageError` with
one line saying why.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import torch

from gelanc.limits import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS

# PIL modes that hold more than 8 bits a value in one channel (PNG and TIFF greyscale)
WIDE_GREY = ("I;16", "I;16L", "I;16B", "I;16N", "I")
# EXIF orientations that swap width and height (transposed, or turned by 90°)
TURNED = (5, 6, 7, 8)
ORIENTATION_TAG = 0x0112
# JPEG files end with the end-of-image marker; some writers pad a few bytes after it
JPEG_EOI, JPEG_TAIL = b"\xff\xd9", 1024


class ImageError(Exception):
    """An image that cannot be used: the message says why in one line (not naming the file)."""


def reason(e: BaseException) -> str:
    """The first line of an exception's message, or its type: what a one-line report shows."""
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def open_header(f, size: int):
    """A lazily opened PIL image (only its header read) of the open file ``f`` of ``size`` bytes.

    The bounds come first: the file's size, then the header's pixel count. PIL refuses
    on its own past twice its decompression-bomb bound, which is above ours: an image
    it refuses is over ours too, and is reported so."""
    from PIL import Image, UnidentifiedImageError

    if size > MAX_IMAGE_BYTES:
        raise ImageError(f"{size:,} bytes, over the limit of {MAX_IMAGE_BYTES:,} (gelanc.limits.MAX_IMAGE_BYTES)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our bound is checked just below
        try:
            im = Image.open(f)
        except Image.DecompressionBombError:
            raise ImageError(f"its header declares over {MAX_IMAGE_PIXELS:,} pixels "
                             f"(gelanc.limits.MAX_IMAGE_PIXELS)") from None
        except UnidentifiedImageError:
            raise ImageError("not an image PIL or torchvision can read") from None
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


def probe(path: str | Path) -> tuple[int, int]:
    """(width, height) of the image as :func:`read_rgb` returns it (EXIF orientation
    applied), after the checks a scan makes without decoding: the bounds, PIL's
    ``verify`` of the file's structure, and a JPEG's end-of-image marker."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, io.SEEK_END)
            f.seek(0)
            im = open_header(f, size)
            fmt = im.format
            im.verify()  # first: reading the EXIF block of a PNG would move its file past what verify needs
            if fmt == "JPEG" and not jpeg_complete(f, size):
                raise ImageError("truncated: no JPEG end-of-image marker")
            f.seek(0)
            im = open_header(f, size)
            w, h = im.size
            # PIL's TIFF reader reports (and decodes to) the oriented size already
            turned = fmt != "TIFF" and orientation(im) in TURNED
    except ImageError:
        raise
    except Exception as e:  # noqa: BLE001 - PIL raises many kinds for a broken file; each is the same problem
        raise ImageError(reason(e)) from None
    return (h, w) if turned else (w, h)


def to_rgb8(t: torch.Tensor) -> torch.Tensor:
    """(C, H, W) uint8 or uint16 with C = 1 (grey), 2 (grey, alpha), 3 (RGB) or 4 (RGBA)
    → (3, H, W) uint8: 16 bits scaled by rounding v / 257, grey repeated, alpha dropped."""
    if t.dtype != torch.uint8:
        t = ((t.to(torch.int32) + 128) // 257).clamp(0, 255).to(torch.uint8)
    if t.shape[0] in (1, 2):
        t = t[:1].expand(3, -1, -1)
    return t[:3].contiguous()


def _torchvision(data: bytes, fmt: str) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_image

    buf = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    # torchvision's RGB conversion takes 8-bit data only (palette, grey and alpha included);
    # a 16-bit PNG (its IHDR's bit depth, byte 24) is decoded as stored and scaled here
    wide = fmt == "PNG" and len(data) > 24 and data[24] == 16
    mode = ImageReadMode.UNCHANGED if wide else ImageReadMode.RGB
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # libpng's and libjpeg's warnings about benign oddities
        return to_rgb8(decode_image(buf, mode=mode, apply_exif_orientation=True))


def _pil(im) -> torch.Tensor:
    import numpy as np
    from PIL import ImageOps

    im = ImageOps.exif_transpose(im)
    if im.mode in WIDE_GREY:  # "I" (32-bit) is how PIL holds some 16-bit PNG and TIFF greyscale
        return to_rgb8(torch.from_numpy(np.asarray(im, dtype=np.int32).clip(0, 65535)).unsqueeze(0))
    return torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).contiguous()


def read_rgb(path: str | Path) -> torch.Tensor:
    """The image at ``path`` as (3, H, W) uint8 RGB, EXIF orientation applied; an
    :class:`ImageError` saying why when it cannot be (no such file, not an image,
    over a bound, truncated, undecodable)."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, io.SEEK_END)
            f.seek(0)
            im = open_header(f, size)
            if im.format in ("JPEG", "PNG"):
                f.seek(0)
                try:
                    return _torchvision(f.read(MAX_IMAGE_BYTES + 1), im.format)
                except (RuntimeError, ValueError, ImportError):  # a kind it does not take (12-bit JPEG, …),
                    # or a torchvision without its image decoders (deprecated since 0.29): PIL may
                    f.seek(0)
                    im = open_header(f, size)
            return _pil(im)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError("no such file") from None
    except Exception as e:  # noqa: BLE001 - decoders raise many kinds for a broken file; each is the same problem
        raise ImageError(reason(e)) from None
