"""Training-time augmentation: the reference's hyp.scratch-high pipeline.

Per sample: with probability ``mosaic``, four images (this one and three drawn at
random), each resized so its longer side is the training size S, tiled around a
random centre on a 2S×2S grey canvas; then a random affine (translate, scale, and
rotation and shear, off by default) that also crops the canvas back to S×S. Else
the image alone, letterboxed to S×S, and the same affine. Then, for a mosaic, with
probability ``mixup`` a second mosaic blended in (ratio ~ Beta(32, 32)); HSV jitter;
flips. Boxes follow every step through torchvision's box-aware ``transforms.v2``
functionals, are clipped to the image, and are dropped as the reference's
``box_candidates`` drops them: under 2 px wide or high, under 10% of their area
before the affine, or an aspect ratio over 100.

Every random draw of sample ``i`` in epoch ``e`` comes from a generator seeded with
(seed, e, i) alone: the same sample in any worker process, or in a resumed run, is
the same bytes.

An image that cannot be decoded (changed or removed since the scan) never stops an
epoch: when it is the sample's own, the sample is skipped (a :class:`Sample` without
an image, which ``collate`` leaves out of the batch); when it is one of the three
others of a mosaic, its quarter stays grey; when it heads the mixed-in mosaic, there
is no mixup. Each such file is listed in the sample's ``skipped``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.ops import box_convert
from torchvision.transforms.v2 import functional as TF

from gelanc.data.cache import ImageCache, resized_shape
from gelanc.data.dataset import Sample, Scan, letterbox, unreadable
from gelanc.data.image import ImageError, read_rgb

if TYPE_CHECKING:  # the recipe's type only: the training layer sits above the data
    from gelanc.train.hyp import Hyp

GREY = 114


def generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The sample's own random stream: a function of (seed, epoch, index) only."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + epoch) * 10_000_019 + index) % (2**63))


def uniform(g: torch.Generator, lo: float = 0.0, hi: float = 1.0) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def boxes_of(xyxy: torch.Tensor, h: int, w: int) -> tv_tensors.BoundingBoxes:
    return tv_tensors.BoundingBoxes(xyxy, format="XYXY", canvas_size=(h, w))


def candidates(before: torch.Tensor, after: torch.Tensor, scale: float) -> torch.Tensor:
    """Which boxes survive the affine (the reference's box_candidates): at least 2 px
    wide and high, at least 10% of their scaled area before, aspect ratio under 100."""
    w1, h1 = (before[:, 2] - before[:, 0]) * scale, (before[:, 3] - before[:, 1]) * scale
    w2, h2 = after[:, 2] - after[:, 0], after[:, 3] - after[:, 1]
    ar = torch.maximum(w2 / (h2 + 1e-16), h2 / (w2 + 1e-16))
    return (w2 > 2) & (h2 > 2) & (w2 * h2 / (w1 * h1 + 1e-16) > 0.1) & (ar < 100)


class AugmentedDataset(Dataset):
    """Augmented training samples, shaped as :class:`gelanc.data.dataset.YoloDataset`'s:
    :class:`gelanc.data.dataset.Sample` ``(image uint8 (3, S, S), labels (n, 5) class
    cx cy w h normalised, path, skipped)``."""

    def __init__(self, split: Scan, size: int, hyp: Hyp, seed: int = 0):
        self.split, self.size, self.hyp, self.seed = split, size, hyp, seed
        self.epoch = 0
        self.use_mosaic = True  # the trainer turns mosaic and mixup off for the last epochs
        self.cache: ImageCache | None = None  # decoded images (gelanc.data.cache), when the trainer makes one

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.split.images)

    # ---- loading ------------------------------------------------------------------

    def resized(self, i: int) -> torch.Tensor:
        """Image i, its longer side S: from the cache when it holds it (a view, never
        written to), else decoded; an ImageError when it cannot be decoded."""
        cached = self.cache.get(i) if self.cache is not None else None
        if cached is not None:
            return cached
        image = read_rgb(self.split.images[i])
        _, h, w = image.shape
        return TF.resize(image, list(resized_shape(h, w, self.size)), antialias=True)

    def load(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Image i resized so its longer side is S: (3, h, w) uint8, classes (n,), boxes (n, 4) xyxy pixels;
        an ImageError when it cannot be decoded."""
        image = self.resized(i)
        _, nh, nw = image.shape
        labels = self.split.labels[i]
        xyxy = box_convert(labels[:, 1:5] * torch.tensor([nw, nh, nw, nh]), "cxcywh", "xyxy")
        return image, labels[:, 0].clone(), xyxy

    def letterboxed(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Image i on an S×S grey canvas (as validation sees it); an ImageError when it cannot be decoded."""
        labels = self.split.labels[i]
        image, cxcywh = letterbox(self.resized(i), labels[:, 1:5], self.size)
        return image, labels[:, 0].clone(), box_convert(cxcywh * self.size, "cxcywh", "xyxy")

    def mosaic(self, i: int, g: torch.Generator, failed: list[tuple[str, str]]
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Four images around a random centre of a 2S×2S canvas. An ImageError when image
        i cannot be decoded; another that cannot is left out (its quarter grey) and
        added to ``failed``."""
        s = self.size
        canvas = torch.full((3, 2 * s, 2 * s), GREY, dtype=torch.uint8)
        xc, yc = (int(uniform(g, 0.5 * s, 1.5 * s)) for _ in range(2))
        others = torch.randint(len(self), (3,), generator=g).tolist()
        classes, boxes = [torch.zeros(0)], [torch.zeros(0, 4)]
        for k, j in enumerate([i, *others]):
            try:
                img, cls, xyxy = self.load(j)
            except ImageError as e:
                if k == 0:
                    raise
                failed.append((str(self.split.images[j]), str(e)))
                continue
            _, h, w = img.shape
            # where the tile goes on the canvas: top-left, top-right, bottom-left, bottom-right of the centre
            x1, y1 = (xc - w, xc)[k % 2], (yc - h, yc)[k // 2]
            cx1, cy1 = max(x1, 0), max(y1, 0)
            cx2, cy2 = min(x1 + w, 2 * s), min(y1 + h, 2 * s)
            canvas[:, cy1:cy2, cx1:cx2] = img[:, cy1 - y1:cy2 - y1, cx1 - x1:cx2 - x1]
            classes.append(cls)
            boxes.append(xyxy + torch.tensor([x1, y1, x1, y1], dtype=xyxy.dtype))
        boxes_t = torch.cat(boxes)
        boxes_t = TF.clamp_bounding_boxes(boxes_of(boxes_t, 2 * s, 2 * s)).as_subclass(torch.Tensor)
        return canvas, torch.cat(classes), boxes_t

    # ---- geometric and colour augmentation --------------------------------------------

    def affine(self, image: torch.Tensor, classes: torch.Tensor, xyxy: torch.Tensor, g: torch.Generator):
        """Random rotation, scale, shear and translation about the canvas centre, drawn
        straight onto the S×S output (a 2S mosaic canvas is cropped to its centre, as the
        reference's border does): sampling only the output's pixels is a quarter of the
        work of transforming the whole canvas and cropping it after."""
        h = self.hyp
        s = self.size
        angle = uniform(g, -h.degrees, h.degrees)
        scale = uniform(g, 1 - h.scale, 1 + h.scale)
        shear = [uniform(g, -h.shear, h.shear), uniform(g, -h.shear, h.shear)]
        translate = [round(uniform(g, -h.translate, h.translate) * s), round(uniform(g, -h.translate, h.translate) * s)]
        m = affine_matrix(image.shape[1:], s, angle, scale, shear, translate)
        img = warp(image, m, s)
        bb = TF.clamp_bounding_boxes(boxes_of(transform_boxes(xyxy, m), s, s)).as_subclass(torch.Tensor)
        keep = candidates(xyxy, bb, scale)
        return img, classes[keep], bb[keep]

    def hsv(self, image: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Hue shifted by ±hsv_h of the colour wheel, saturation and value scaled by
        1 ± hsv_s and 1 ± hsv_v (the reference scales hue by 1 ± hsv_h instead: a
        shift of the same order, applied here uniformly around the wheel)."""
        h = self.hyp
        if h.hsv_h:
            image = TF.adjust_hue(image, uniform(g, -h.hsv_h, h.hsv_h))
        if h.hsv_s:
            image = TF.adjust_saturation(image, uniform(g, 1 - h.hsv_s, 1 + h.hsv_s))
        if h.hsv_v:
            image = TF.adjust_brightness(image, uniform(g, 1 - h.hsv_v, 1 + h.hsv_v))
        return image

    # ---- a sample ---------------------------------------------------------------------

    def __getitem__(self, i: int) -> Sample:
        failed: list[tuple[str, str]] = []
        try:
            return self.sample(i, failed)
        except ImageError as e:  # the sample's own image
            return unreadable(self.split.images[i], e, failed)

    def sample(self, i: int, failed: list[tuple[str, str]]) -> Sample:
        g = generator(self.seed, self.epoch, i)
        h, s = self.hyp, self.size
        is_mosaic = self.use_mosaic and uniform(g) < h.mosaic
        if is_mosaic:
            image, classes, xyxy = self.affine(*self.mosaic(i, g, failed), g)
            if uniform(g) < h.mixup:
                j = int(torch.randint(len(self), (), generator=g))
                try:
                    image2, classes2, xyxy2 = self.affine(*self.mosaic(j, g, failed), g)
                except ImageError as e:  # the mixed-in mosaic's own image: no mixup
                    failed.append((str(self.split.images[j]), str(e)))
                else:
                    r = beta(g)
                    image = (image.float() * r + image2.float() * (1 - r)).round().to(torch.uint8)
                    classes, xyxy = torch.cat([classes, classes2]), torch.cat([xyxy, xyxy2])
        else:
            image, classes, xyxy = self.affine(*self.letterboxed(i), g)
        image = self.hsv(image, g)
        if uniform(g) < h.fliplr:
            image = TF.horizontal_flip(image)
            xyxy = TF.horizontal_flip(boxes_of(xyxy, s, s)).as_subclass(torch.Tensor)
        if uniform(g) < h.flipud:
            image = TF.vertical_flip(image)
            xyxy = TF.vertical_flip(boxes_of(xyxy, s, s)).as_subclass(torch.Tensor)
        cxcywh = box_convert(xyxy, "xyxy", "cxcywh") / s
        labels = torch.cat([classes.view(-1, 1).float(), cxcywh.float()], 1)
        return Sample(image.contiguous(), labels, str(self.split.images[i]), tuple(failed))


def affine_matrix(shape: tuple[int, int], size: int, angle: float, scale: float, shear: list[float],
                  translate: list[int]) -> torch.Tensor:
    """The 3×3 map from a (H, W) canvas's coordinates to the size×size output's: the
    canvas centre to the origin, rotation by ``angle`` and zoom by ``scale`` (degrees,
    counter-clockwise on screen), shear (degrees in x and y), then the origin to the
    output's centre moved by ``translate`` pixels. Coordinates are continuous, pixel k
    spanning [k, k + 1], so boxes and pixels move alike."""
    H, W = shape
    a = math.radians(angle)
    centre = torch.tensor([[1.0, 0, -W / 2], [0, 1, -H / 2], [0, 0, 1]], dtype=torch.float64)
    c, s_ = math.cos(a) * scale, math.sin(a) * scale
    rotate = torch.tensor([[c, s_, 0], [-s_, c, 0], [0, 0, 1]], dtype=torch.float64)
    shear_m = torch.tensor([[1, math.tan(math.radians(shear[0])), 0], [math.tan(math.radians(shear[1])), 1, 0],
                            [0, 0, 1]], dtype=torch.float64)
    place = torch.tensor([[1.0, 0, size / 2 + translate[0]], [0, 1, size / 2 + translate[1]], [0, 0, 1]],
                         dtype=torch.float64)
    return place @ shear_m @ rotate @ centre


def warp(image: torch.Tensor, m: torch.Tensor, size: int) -> torch.Tensor:
    """The uint8 (3, H, W) image mapped by ``m`` onto a size×size grey canvas (bilinear)."""
    _, H, W = image.shape
    # where each output pixel's centre comes from, in the canvas's coordinates, then in
    # grid_sample's [-1, 1] (align_corners=False: -1 and 1 are the canvas's outer edges)
    inverse = torch.linalg.inv(m)
    to_unit = torch.tensor([[2 / W, 0, -1], [0, 2 / H, -1], [0, 0, 1]], dtype=torch.float64)
    from_unit = torch.tensor([[size / 2, 0, size / 2], [0, size / 2, size / 2], [0, 0, 1]], dtype=torch.float64)
    theta = (to_unit @ inverse @ from_unit)[:2].float()
    grid = torch.nn.functional.affine_grid(theta[None], [1, 3, size, size], align_corners=False)
    # grey outside the canvas: sample the difference from grey, which zero padding leaves at 0
    shifted = image[None].float() - GREY
    out = torch.nn.functional.grid_sample(shifted, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return (out[0] + GREY).round_().clamp_(0, 255).to(torch.uint8)


def transform_boxes(xyxy: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Each box's four corners mapped by ``m``; the box around them (as the reference)."""
    if not len(xyxy):
        return xyxy.reshape(0, 4).float()
    x1, y1, x2, y2 = xyxy.double().unbind(1)
    corners = torch.stack([torch.stack([x1, y1]), torch.stack([x2, y1]), torch.stack([x1, y2]),
                           torch.stack([x2, y2])])  # (4, 2, n)
    mapped = torch.einsum("ij,kjn->kin", m[:2, :2], corners) + m[:2, 2, None]
    lo, hi = mapped.amin(0), mapped.amax(0)  # (2, n)
    return torch.stack([lo[0], lo[1], hi[0], hi[1]], 1).to(xyxy.dtype if xyxy.is_floating_point() else torch.float32)


def beta(g: torch.Generator, a: float = 32.0) -> float:
    """A Beta(a, a) draw for the sample (torch's Beta sampler takes no generator: it runs
    on the global stream, seeded from the sample's own for this one draw)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(2**62, (), generator=g)))
        return float(torch.distributions.Beta(a, a).sample())
