"""COCO-format datasets: an instances JSON read into the same :class:`Scan` as YOLO labels.

A COCO file lists ``images`` (id, file_name, width, height), ``annotations`` (image_id,
category_id, bbox ``[x, y, w, h]`` in pixels, iscrowd) and ``categories`` (id, name).
:func:`scan_coco` turns it into what :func:`gelanc.data.dataset.scan` makes from a YOLO
folder — images, (n, 5) ``class cx cy w h`` labels normalised to [0, 1], and every
problem by kind — so training and validation need not know which format they came from.

Class ``k`` is the ``k``-th category id in increasing order: COCO's own ids have gaps
(1 … 90 for 80 classes), a detector's outputs do not. As with YOLO labels, bad data
never stops a run: each bad entry is skipped and counted with its file name; only a
file that is not COCO at all is an error.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from gelanc.data.config import DataError
from gelanc.data.dataset import Scan, measure_image
from gelanc.files import TooLarge, read_bounded
from gelanc.limits import MAX_COCO_JSON_BYTES, MAX_COCO_JSON_CONTAINERS, MAX_COCO_JSON_VALUES, MAX_SPLIT_IMAGES

# the problem kinds scan_coco notes (beside dataset.py's "corrupt images" and "empty images …")
MISSING = "missing images"
BAD_IMAGE_ENTRY = "malformed image entries"
SIZE_MISMATCH = "images whose size disagrees with the JSON"
UNKNOWN_IMAGE = "annotations of unknown images"
UNKNOWN_CATEGORY = "annotations of unknown categories"
BAD_ANNOTATION = "malformed annotations"
CROWD = "crowd annotations (skipped)"
CLIPPED = "boxes clipped to their image"
DROPPED = "boxes outside their image or empty (dropped)"


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# the keys gelanc reads, at any level (the rest — segmentation, area, urls, … — is dropped as it is parsed)
KEYS = frozenset({"images", "annotations", "categories", "id", "file_name", "width", "height", "image_id",
                  "category_id", "bbox", "iscrowd", "name"})


def _used(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object with only the keys gelanc reads: COCO's segmentation polygons, most of
    instances_train2017.json's bytes, are freed as each annotation is parsed, not held to the end."""
    return {k: v for k, v in pairs if k in KEYS}


def read_json(path: Path) -> dict | list | str | int | float | bool | None:
    """The file parsed as JSON, within the bounds of :mod:`gelanc.limits`; else a DataError.

    The bytes are bounded (MAX_COCO_JSON_BYTES), then what parsing them could build: Python
    takes ~25 bytes for each byte of ``[{},{},…]``, so the values (counted, as an upper
    bound, by the commas, brackets and braces in the bytes) and the objects and arrays
    among them (the brackets and braces) are bounded too, before anything is parsed."""
    try:
        data = read_bounded(path, MAX_COCO_JSON_BYTES, "gelanc.limits.MAX_COCO_JSON_BYTES")
    except TooLarge as e:
        raise DataError(f"{path}: {e}: not a COCO instances file gelanc reads") from None
    except OSError as e:  # a FIFO or a device: "not a regular file"
        raise DataError(f"{path}: cannot read: {e.strerror or type(e).__name__}") from None
    containers = data.count(b"{") + data.count(b"[")
    values = containers + data.count(b",")
    for n, limit, what, name in ((containers, MAX_COCO_JSON_CONTAINERS, "objects and arrays", "CONTAINERS"),
                                 (values, MAX_COCO_JSON_VALUES, "values", "VALUES")):
        if n > limit:
            raise DataError(f"{path}: up to {n:,} JSON {what}, over the limit of {limit:,} "
                            f"(gelanc.limits.MAX_COCO_JSON_{name})")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: cannot read: not UTF-8 text ({e.reason} at byte {e.start})") from None
    del data  # the text alone while parsing
    try:
        return json.loads(text, object_pairs_hook=_used)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON: {e}") from None
    except RecursionError:
        raise DataError(f"{path}: not valid JSON: arrays or objects nested too deeply") from None


def read_coco(path: Path) -> dict:
    """The parsed file, or a DataError naming it and what is missing."""
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise DataError(f"{path}: not a COCO instances file: expected an object with images, annotations and "
                        f"categories, found a {type(raw).__name__}")
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(raw.get(k), list)]
    if missing:
        raise DataError(f"{path}: not a COCO instances file: no {', '.join(missing)} list")
    if len(raw["images"]) > MAX_SPLIT_IMAGES:
        raise DataError(f"{path}: {len(raw['images']):,} images, over the limit of {MAX_SPLIT_IMAGES:,} "
                        "(gelanc.limits.MAX_SPLIT_IMAGES)")
    return raw


def categories(raw: dict, path: Path) -> tuple[dict[int, int], list[str]]:
    """Category id → class index (position among the sorted ids), and the class names.

    Categories are the model's outputs, not data to skip: a bad one is an error."""
    cats = raw["categories"]
    if not cats:
        raise DataError(f"{path}: categories is empty: a dataset needs at least one class")
    by_id: dict[int, str] = {}
    for c in cats:
        if not isinstance(c, dict) or not isinstance(c.get("id"), int) or isinstance(c.get("id"), bool) \
                or "name" not in c:
            raise DataError(f"{path}: category {c!r} lacks an integer id or a name")
        if c["id"] in by_id:
            raise DataError(f"{path}: category id {c['id']} appears twice")
        by_id[c["id"]] = str(c["name"])
    ids = sorted(by_id)
    return {cid: k for k, cid in enumerate(ids)}, [by_id[cid] for cid in ids]


def image_entries(raw: dict, folder: Path, out: Scan, source: str) -> dict[int, tuple[Path, int | None, int | None]]:
    """Image id → (file, JSON width, JSON height) for each well-formed entry (the first of a repeated id)."""
    entries: dict[int, tuple[Path, int | None, int | None]] = {}
    for i, im in enumerate(raw["images"]):
        if not isinstance(im, dict) or not isinstance(im.get("id"), int) or not isinstance(im.get("file_name"), str):
            out.note(BAD_IMAGE_ENTRY, f"{source}: images[{i}]: no integer id or no file_name")
            continue
        if im["id"] in entries:
            out.note(BAD_IMAGE_ENTRY, f"{source}: images[{i}]: id {im['id']} repeated")
            continue
        w, h = im.get("width"), im.get("height")
        entries[im["id"]] = (folder / im["file_name"], w if _is_number(w) else None, h if _is_number(h) else None)
    return entries


def boxes_by_image(raw: dict, entries: dict, class_of: dict[int, int], out: Scan, source: str
                   ) -> dict[int, list[tuple[int, list[float], str]]]:
    """Image id → [(class, [x, y, w, h], annotation name)] of the usable annotations.

    Only what can be judged from the annotation itself is checked here; the box
    against its image's size is checked per image, all boxes at once."""
    boxes: dict[int, list[tuple[int, list[float], str]]] = {}
    for i, a in enumerate(raw["annotations"]):
        name = f"annotation {a.get('id', f'[{i}]')}" if isinstance(a, dict) else f"annotations[{i}]"
        if not isinstance(a, dict):
            out.note(BAD_ANNOTATION, f"{source}: {name}: not an object")
            continue
        if not isinstance(a.get("image_id"), int) or a["image_id"] not in entries:
            out.note(UNKNOWN_IMAGE, f"{source}: {name}: image id {a.get('image_id')!r} is not in images")
            continue
        if not isinstance(a.get("category_id"), int) or a["category_id"] not in class_of:
            out.note(UNKNOWN_CATEGORY, f"{source}: {name}: category id {a.get('category_id')!r} is not in categories")
            continue
        bbox = a.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
            out.note(BAD_ANNOTATION, f"{source}: {name}: bbox {bbox!r} is not four numbers")
            continue
        if a.get("iscrowd", 0):
            out.note(CROWD, f"{source}: {name}")
            continue
        boxes.setdefault(a["image_id"], []).append((class_of[a["category_id"]], [float(v) for v in bbox], name))
    return boxes


def normalised_labels(anns: list[tuple[int, list[float], str]], w: int, h: int, out: Scan, image: str
                      ) -> torch.Tensor:
    """One image's annotations → (n, 5) float32 class cx cy w h in [0, 1], clipped to the image.

    A box partly outside is clipped (annotation tools let corners stray); one wholly
    outside, or of zero width or height after clipping, marks nothing and is dropped."""
    if not anns:
        return torch.zeros(0, 5)
    cls = torch.tensor([c for c, _, _ in anns], dtype=torch.float64)
    xywh = torch.tensor([b for _, b, _ in anns], dtype=torch.float64)
    xyxy = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
    size = torch.tensor([w, h, w, h], dtype=torch.float64)
    clipped = torch.minimum(xyxy.clamp(min=0), size)
    bw, bh = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    keep = (bw > 0) & (bh > 0) & (xywh[:, 2] > 0) & (xywh[:, 3] > 0)
    moved = (clipped != xyxy).any(1)
    for k in torch.nonzero(~keep).flatten().tolist():
        out.note(DROPPED, f"{image}: {anns[k][2]}: bbox {anns[k][1]} in a {w}×{h} image")
    for k in torch.nonzero(keep & moved).flatten().tolist():
        out.note(CLIPPED, f"{image}: {anns[k][2]}: bbox {anns[k][1]} in a {w}×{h} image")
    c = clipped[keep]
    centre = (c[:, :2] + c[:, 2:]) / 2 / size[:2]
    extent = (c[:, 2:] - c[:, :2]) / size[:2]
    labels = torch.cat([cls[keep, None], centre, extent], 1).to(torch.float32)
    return labels.unique(dim=0)  # as dataset.py's YOLO labels: a repeated box is one object


def scan_coco(annotations: Path, images: Path) -> tuple[Scan, list[str]]:
    """A COCO instances JSON and its images folder → (the split's Scan, the class names).

    Every image is checked as :func:`gelanc.data.dataset.scan` checks it; a missing
    or corrupt one is skipped and named, an image with no usable annotation is kept
    as background. Sizes come from the files, as decoded (EXIF orientation applied);
    a JSON width/height that disagrees means the boxes were drawn on another picture,
    and the image is skipped."""
    annotations, images = Path(annotations), Path(images)
    raw = read_coco(annotations)
    class_of, names = categories(raw, annotations)
    out = Scan()
    source = annotations.name
    entries = image_entries(raw, images, out, source)
    boxes = boxes_by_image(raw, entries, class_of, out, source)
    for image_id, (path, jw, jh) in entries.items():
        if not path.exists():  # a FIFO or a folder exists, and is a corrupt image
            out.note(MISSING, f"{path.name}: not in {images}")
            continue
        size, bad = measure_image(path)  # as decoded: EXIF orientation applied
        if size is None:
            out.note("corrupt images", f"{path.name}: {bad}")
            continue
        w, h = size
        if (jw is not None and jw != w) or (jh is not None and jh != h):
            out.note(SIZE_MISMATCH, f"{path.name}: {w}×{h} pixels, the JSON says {jw}×{jh}")
            continue
        labels = normalised_labels(boxes.get(image_id, []), w, h, out, path.name)
        if len(labels) == 0:
            out.note("empty images (kept as background)", path.name)
        out.images.append(path)
        out.labels.append(labels)
    return out, names
