"""Draws gelanc/assets/bird.png, the input image of `gelanc features` (no download).

A bird on a branch, against a sky with clouds and a grassy ground: one object with
clear structure (outline, eye, wing, beak, legs) on a textured background, which is
what the paper's feature-map figures need. Deterministic: run it again, same bytes.
Run: python tools/draw_sample_image.py
"""

import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

SIZE = 256
OUT = Path(__file__).resolve().parents[1] / "gelanc" / "assets" / "bird.png"


def main() -> None:
    rng = random.Random(7)
    img = Image.new("RGB", (SIZE, SIZE))
    d = ImageDraw.Draw(img)
    for y in range(SIZE):  # sky: a vertical gradient
        t = y / SIZE
        d.line([(0, y), (SIZE, y)], fill=(int(110 + 80 * t), int(160 + 60 * t), int(235 - 20 * t)))
    for cx, cy, r in [(50, 40, 18), (70, 36, 22), (92, 42, 16), (190, 60, 14), (208, 55, 19)]:
        d.ellipse([cx - r, cy - r * 0.7, cx + r, cy + r * 0.7], fill=(245, 247, 250))
    d.rectangle([0, 200, SIZE, SIZE], fill=(88, 140, 60))  # ground, with blades of grass
    for _ in range(400):
        x, y = rng.randrange(SIZE), rng.randrange(196, SIZE)
        tip = (x + rng.randint(-3, 3), y - rng.randint(4, 10))
        d.line([(x, y), tip], fill=(60 + rng.randrange(60), 120 + rng.randrange(60), 40))
    d.polygon([(0, 172), (256, 160), (256, 170), (0, 182)], fill=(110, 72, 40))  # the branch
    d.polygon([(60, 150), (30, 128), (36, 160)], fill=(40, 70, 150))  # tail
    d.ellipse([58, 100, 170, 168], fill=(50, 90, 190))  # body
    d.ellipse([80, 128, 150, 166], fill=(240, 200, 120))  # belly
    d.ellipse([140, 70, 196, 122], fill=(50, 90, 190))  # head
    d.polygon([(194, 92), (224, 98), (194, 106)], fill=(245, 170, 40))  # beak
    d.ellipse([168, 84, 182, 98], fill=(255, 255, 255))  # eye
    d.ellipse([173, 88, 180, 95], fill=(10, 10, 10))
    d.chord([72, 104, 150, 150], 180, 360, fill=(30, 60, 140))  # wing
    for x in (100, 124):  # legs and feet
        d.line([(x, 164), (x, 176)], fill=(245, 170, 40), width=3)
    img = img.filter(ImageFilter.SMOOTH)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    img.save(OUT, optimize=True)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
