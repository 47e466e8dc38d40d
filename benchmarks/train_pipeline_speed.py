"""Issue 12: where a CPU training step's time goes, measured piece by piece (1 thread, CPU time).

* the affine of a 2S mosaic canvas: torchvision's ``affine`` of the whole canvas then a
  centre crop (gelanc's former way) against gelanc's ``warp`` straight onto the S×S output;
* an augmented sample (mosaic, affine, HSV, flip) decoding its images, and from the image
  cache;
* a forward and backward pass of gelan-t on a batch of 16, contiguous and channels-last.

    python3 benchmarks/train_pipeline_speed.py [DATA.yaml] [--imgsz 320]

Without DATA.yaml it draws the harder synthetic set (400 / 100 images) once under --out.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from bench_data import benchmark_data

ROOT = Path(__file__).resolve().parent.parent


def cpu_ms(fn, repeat: int) -> float:
    fn()  # first call: lazy imports, allocator warm-up
    t = time.process_time()
    for _ in range(repeat):
        fn()
    return (time.process_time() - t) / repeat * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="?")
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--out", default="runs/pipeline_speed")
    a = ap.parse_args()
    torch.set_num_threads(1)
    from torchvision import tv_tensors
    from torchvision.transforms.v2 import functional as TF

    import gelanc
    from gelanc.data.augment import AugmentedDataset, affine_matrix, warp
    from gelanc.data.cache import ImageCache, header_bytes
    from gelanc.train.ddp import World
    from gelanc.train.hyp import Hyp
    from gelanc.train.setup import load_data

    s = a.imgsz
    canvas = torch.randint(0, 255, (3, 2 * s, 2 * s), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))

    def torchvision_affine():
        out = TF.affine(tv_tensors.Image(canvas), angle=0.0, translate=[10, -5], scale=1.2, shear=[0.0, 0.0],
                        interpolation=TF.InterpolationMode.BILINEAR, fill=114)
        return TF.center_crop(out, [s, s])

    def gelanc_warp():
        return warp(canvas, affine_matrix((2 * s, 2 * s), s, 0.0, 1.2, [0.0, 0.0], [10, -5]), s)

    rows = [("affine of the 2S canvas, then crop (torchvision)", cpu_ms(torchvision_affine, 20)),
            ("affine onto the S×S output (gelanc.data.augment.warp)", cpu_ms(gelanc_warp, 20))]

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    data = benchmark_data(a.data, out, 400, 100, s, hard=True)
    split = load_data(data, World()).train
    ds = AugmentedDataset(split, s, Hyp(), seed=0)
    n = min(100, len(ds))
    it = iter(range(10**9))
    rows.append(("augmented sample, decoding its images", cpu_ms(lambda: ds[next(it) % n], n)))
    ds.cache = ImageCache.fill(split.images, [header_bytes(p, s) for p in split.images], ds.resized)
    rows.append(("augmented sample, from the image cache", cpu_ms(lambda: ds[next(it) % n], n)))

    model = gelanc.compile(ROOT / "specs" / "gelan-t.gel", nc=5).train()
    x = torch.rand(16, 3, s, s)

    def step(m, inp):
        out = m(inp)
        leaves = []
        stack = [out]
        while stack:
            v = stack.pop()
            if isinstance(v, torch.Tensor):
                leaves.append(v)
            elif isinstance(v, (list, tuple)):
                stack += list(v)
        sum(t.float().sum() for t in leaves).backward()

    rows.append(("gelan-t forward + backward, batch 16, contiguous", cpu_ms(lambda: step(model, x), 3)))
    model = model.to(memory_format=torch.channels_last)
    xc = x.contiguous(memory_format=torch.channels_last)
    rows.append(("gelan-t forward + backward, batch 16, channels-last", cpu_ms(lambda: step(model, xc), 3)))
    print(f"{data}, {s} px, 1 thread, CPU ms\n\n| what | ms |\n|---|---|")
    for what, ms in rows:
        print(f"| {what} | {ms:.1f} |")


if __name__ == "__main__":
    main()
