"""Writes tiny fake ClevrTex files, in the release's layout and formats, to dummy_data/.

    python datasets/clevrtex/make_dummy_data.py

Per image index i of variant v: clevrtex_v/<i // 1000>/CLEVRTEX_v_<i:06d>.png (RGBA 320x240),
..._flat.png (palette png, pixel value k = k-th object, 0 = background) and ....json (the
generator's metadata keys). Scenes are flat-coloured rectangles; every image differs.
"""
from __future__ import annotations

import json
import pathlib

import numpy as np
from PIL import Image

DUMMY_DIR = pathlib.Path(__file__).resolve().parent / "dummy_data"
NUM_IMAGES = {"full": 10, "camo": 10, "outd": 3}  # full/camo: 1 test, 1 validation, 8 train.
HEIGHT, WIDTH = 240, 320
SHAPES = ("cube", "sphere", "cylinder", "monkey")
SIZES = ("large", "medium", "small")
MATERIALS = ("PoliigonBricks01", "PoliigonMarble062", "PoliigonWoodPlanks028")


def _palette() -> list[int]:
  rng = np.random.default_rng(0)
  colors = rng.integers(0, 256, size=(256, 3))
  colors[0] = 0
  return colors.astype(int).ravel().tolist()


def write_example(folder: pathlib.Path, variant: str, index: int) -> None:
  rng = np.random.default_rng([ord(c) for c in variant] + [index])
  n = int(rng.integers(3, 7))
  rgba = np.empty((HEIGHT, WIDTH, 4), np.uint8)
  rgba[..., :3] = rng.integers(0, 256, size=3, dtype=np.uint8)
  rgba[..., 3] = 255
  labels = np.zeros((HEIGHT, WIDTH), np.uint8)
  objects = []
  band = WIDTH // n
  for k in range(n):
    x0 = k * band + int(rng.integers(0, 8))
    x1 = x0 + int(rng.integers(10, band - 8))
    y0 = int(rng.integers(20, 120))
    y1 = y0 + int(rng.integers(20, 100))
    labels[y0:y1, x0:x1] = k + 1
    rgba[y0:y1, x0:x1, :3] = rng.integers(0, 256, size=3, dtype=np.uint8)
    objects.append({
        "shape": SHAPES[int(rng.integers(len(SHAPES)))],
        "size": SIZES[int(rng.integers(len(SIZES)))],
        "material": MATERIALS[int(rng.integers(len(MATERIALS)))],
        "color": "gray",
        "rotation": float(rng.uniform(0, 360)),
        "3d_coords": [float(v) for v in rng.uniform(-3, 3, size=3)],
        "pixel_coords": [float((x0 + x1) / 2), float((y0 + y1) / 2), float(rng.uniform(5, 15))],
    })
  stem = f"CLEVRTEX_{variant}_{index:06d}"
  out = folder / str(index // 1000)
  out.mkdir(parents=True, exist_ok=True)
  Image.fromarray(rgba, "RGBA").save(out / f"{stem}.png")
  flat = Image.fromarray(labels, "L").convert("P")
  flat.putpalette(_palette())
  flat.save(out / f"{stem}_flat.png")
  meta = {"num_objects": n, "split": variant, "image_index": index,
          "image_filename": f"{stem}.png", "ground_material": MATERIALS[index % len(MATERIALS)],
          "objects": objects, "mask_filename": f"{stem}_flat.png"}
  (out / f"{stem}.json").write_text(json.dumps(meta, indent=2))


def main() -> None:
  for variant, count in NUM_IMAGES.items():
    folder = DUMMY_DIR / f"clevrtex_{variant}"
    for index in range(count):
      write_example(folder, variant, index)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    print(f"{folder.name}: {count} images, {size} bytes")


if __name__ == "__main__":
  main()
