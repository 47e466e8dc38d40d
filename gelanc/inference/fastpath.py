"""The fastest way to run a deploy module on a device, as `gelanc bench` measures it.

`gelanc val`, `gelanc predict` (and the trainer's validation) run inference through
:func:`prepare`, which picks the configuration that measured fastest on the device
(docs/benchmarks.md) and says which:

* every device: channels-last memory (oneDNN's and cuDNN's fast convolution layouts;
  on the 2-core CI CPU gelan-c runs 1.25× faster than in the default layout);
* CUDA: half precision (fp16: its 10-bit mantissa keeps box coordinates exact to a
  fraction of a pixel, which bf16 does not);
* CPU, for runs long enough to repay the compilation (``images`` ≥ 256):
  ``torch.compile`` with inductor's weight freezing, which pre-packs the weights and
  fuses each convolution with its activation (gelan-c: 0.26 s an image instead of
  0.30 s, after ~20 s of compiling).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

COMPILE_FROM = 256  # images: below this, compiling (~20 s for gelan-c on 2 cores) costs more than it saves


@dataclass
class Prepared:
    module: torch.nn.Module
    convert: Callable[[torch.Tensor], torch.Tensor]  # a float batch in [0, 1] → the module's input
    description: str


def prepare(module: torch.nn.Module, device: torch.device, images: int = 1, compile: bool | None = None) -> Prepared:
    """``module`` (an eval-mode deploy or train graph) set up for inference on ``device``.

    ``compile``: None decides by ``images`` (CPU only); True or False forces it."""
    # fp16, not bf16, for inference: 10 bits of mantissa keep box coordinates to a fraction
    # of a pixel; bf16's 7 round them to several (training's autocast may use bf16)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    m = module.to(device=device, dtype=dtype, memory_format=torch.channels_last).eval()
    if compile is None:
        compile = device.type == "cpu" and images >= COMPILE_FROM
    how = ["channels-last", str(dtype).removeprefix("torch.")]
    if compile:
        m = torch.compile(m, options={"freezing": True})  # weights as constants: pre-packed, folded, fused
        how.append("torch.compile (frozen weights)")

    def convert(x: torch.Tensor) -> torch.Tensor:
        return x.to(device, dtype=dtype).contiguous(memory_format=torch.channels_last)

    return Prepared(m, convert, ", ".join(how))
