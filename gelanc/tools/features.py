"""The paper's Figures 2 and 6: what randomly initialised deep stacks keep of an image.

Each stack is a `.gel` spec (`specs/figures/`) whose model takes ``depth``, ``taps``
(the depths to return) and ``width``. The module is compiled with random weights
(a fixed seed), initialised as its architecture's own reference code initialises it
(:data:`BUILTIN`), run once on one image in eval mode and float64, and each returned
feature map is shown as the mean of its channels' magnitudes, normalised to [0, 1] and
coloured. Rows are stacks, columns the depths, the input image first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from gelanc.dsl.loader import library_root


def _he_fan_out(module: torch.nn.Module) -> None:
    """He et al.'s initialisation, as the ResNet paper initialises its plain and residual
    nets and torchvision's resnet does: normal, std sqrt(2 / fan-out)."""
    for m in module.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


# How a stack's convolutions start: "default" is PyTorch's own (kaiming-uniform, a = √5),
# which YOLOv9's code keeps (its initialize_weights leaves convolutions alone).
INITS = {"default": None, "he": _he_fan_out}


@dataclass(frozen=True)
class Stack:
    label: str
    init: str  # a key of INITS: how this architecture's reference code initialises it


# PlainNet and ResNet as the ResNet paper builds them (He initialisation); CSPNet and
# GELAN as YOLOv9's code does (PyTorch's default).
BUILTIN = {"plainnet": Stack("PlainNet", "he"), "resnet": Stack("ResNet", "he"),
           "cspnet": Stack("CSPNet", "default"), "gelan": Stack("GELAN", "default")}
DEFAULT_IMAGE = Path(__file__).resolve().parent.parent / "assets" / "bird.png"

# a perceptually ordered colour map (dark blue → teal → yellow), linearly interpolated
_COLOURS = torch.tensor([[0.07, 0.03, 0.30], [0.23, 0.32, 0.55], [0.13, 0.57, 0.55],
                         [0.37, 0.79, 0.38], [0.99, 0.91, 0.15]])


def spec_path(name: str) -> Path:
    """A built-in stack's spec, or the path given."""
    if name in BUILTIN:
        return library_root() / "specs" / "figures" / f"{name}.gel"
    return Path(name)


def load_image(path: str | Path, size: int) -> torch.Tensor:
    """The image as a (1, 3, size, size) float batch in [0, 1] (decoded as training decodes)."""
    from torchvision.transforms.v2 import functional as TF

    from gelanc.data.image import read_rgb

    img = read_rgb(path)
    img = TF.resize(img, [size, size], antialias=True)
    return (img.float() / 255).unsqueeze(0)


@torch.no_grad()
def feature_maps(spec: str | Path, image: torch.Tensor, depths: list[int], width: int, seed: int,
                 init: str = "default") -> list[torch.Tensor]:
    """The stack's feature maps at ``depths`` for ``image``, with seeded random weights
    initialised by ``init`` (a key of :data:`INITS`)."""
    import gelanc

    torch.manual_seed(seed)
    # Random weights exactly as initialised, BatchNorm at its initial statistics (eval
    # mode), in float64: through 200 layers the plain and CSP signals shrink by up to
    # 1e-250, below float32's range; the picture is normalised per map, so only the
    # pattern matters, not the scale.
    m = gelanc.compile(spec, depth=max(depths), taps=list(depths), width=width)
    if INITS[init]:
        INITS[init](m)
    m = m.eval().double()
    out = m(image.double())
    return list(out) if isinstance(out, (list, tuple)) else [out]


def colourise(fmap: torch.Tensor) -> torch.Tensor:
    """(1, C, H, W) → (3, H, W): channel-mean magnitude, normalised, coloured."""
    a = torch.nan_to_num(fmap[0].double().abs().mean(0), nan=0.0, posinf=0.0)  # no underflow
    # between the 2nd and 98th percentiles: a few hot pixels must not black out the rest
    lo, hi = torch.quantile(a.flatten(), torch.tensor([0.02, 0.98], dtype=a.dtype))
    a = ((a - lo) / (hi - lo).clamp_min(1e-300)).clamp(0, 1).float()
    pos = a * (len(_COLOURS) - 1)
    lo = pos.floor().long().clamp(max=len(_COLOURS) - 2)
    t = (pos - lo).unsqueeze(-1)
    rgb = _COLOURS[lo] * (1 - t) + _COLOURS[lo + 1] * t
    return rgb.permute(2, 0, 1)


def grid(rows: dict[str, list[torch.Tensor]], image: torch.Tensor, depths: list[int], cell: int = 128):
    """A labelled PIL image: one row per stack, the input then each depth."""
    from PIL import Image, ImageDraw
    from torchvision.transforms.v2 import functional as TF

    pad, left, top = 6, 78, 22
    cols = 1 + len(depths)
    canvas = Image.new("RGB", (left + cols * (cell + pad), top + len(rows) * (cell + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((left, 4), "input", fill="black")
    for j, d in enumerate(depths, 1):
        draw.text((left + j * (cell + pad), 4), f"depth {d}", fill="black")

    def paste(t: torch.Tensor, i: int, j: int) -> None:
        t = TF.resize(t, [cell, cell], interpolation=TF.InterpolationMode.NEAREST)
        canvas.paste(TF.to_pil_image(t.clamp(0, 1)), (left + j * (cell + pad), top + i * (cell + pad)))

    for i, (name, maps) in enumerate(rows.items()):
        draw.text((6, top + i * (cell + pad) + cell // 2 - 6), name, fill="black")
        paste(image[0], i, 0)
        for j, fmap in enumerate(maps, 1):
            paste(colourise(fmap), i, j)
    return canvas


def figure(sources: list[str], image_path: str | Path, depths: list[int], width: int = 32,
           size: int = 128, seed: int = 0, init: str = "auto", progress=None):
    """The whole figure for these stacks; ``progress(name)`` is called as each one runs.
    ``init="auto"``: each built-in stack as its architecture is initialised, specs by
    PyTorch's default; else one key of :data:`INITS` for all."""
    image = load_image(image_path, size)
    rows = {}
    for src in sources:
        stack = BUILTIN.get(src, Stack(Path(src).stem, "default"))
        if progress:
            progress(stack.label)
        rows[stack.label] = feature_maps(spec_path(src), image, depths, width, seed,
                                         stack.init if init == "auto" else init)
    return grid(rows, image, depths), rows
