"""Writes a tiny fake CLEVR_v1.0 release, in its layout and formats, to dummy_data/.

    python datasets/clevr_v1/make_dummy_data.py

CLEVR_v1.0/images/{train,val,test}/CLEVR_{split}_{i:06d}.png (RGBA 480x320),
CLEVR_v1.0/scenes/CLEVR_{train,val}_scenes.json (the generator's scene keys) and
CLEVR_v1.0/questions/CLEVR_{train,val,test}_questions.json (a few questions per image, in the
release's keys). Objects are flat-coloured discs drawn at their pixel_coords; every image
differs.
"""
from __future__ import annotations

import json
import pathlib

import numpy as np
from PIL import Image

DUMMY_DIR = pathlib.Path(__file__).resolve().parent / "dummy_data"
NUM_IMAGES = {"train": 6, "val": 3, "test": 2}
HEIGHT, WIDTH = 320, 480
SIZES = {"large": 0.7, "small": 0.35}
MATERIALS = ("rubber", "metal")
SHAPES = ("cube", "sphere", "cylinder")
COLORS = {"gray": (87, 87, 87), "red": (173, 35, 35), "blue": (42, 75, 215),
          "green": (29, 105, 20), "brown": (129, 74, 25), "purple": (129, 38, 192),
          "cyan": (41, 208, 208), "yellow": (255, 238, 51)}


def make_scene(split: str, index: int, rng: np.random.Generator) -> tuple[dict, np.ndarray]:
  """One scene dict and its RGBA image."""
  n = int(rng.integers(3, 11))
  rgba = np.full((HEIGHT, WIDTH, 4), 255, np.uint8)
  rgba[..., :3] = 100 + int(rng.integers(0, 40))
  rows, cols = np.mgrid[:HEIGHT, :WIDTH]
  objects = []
  for _ in range(n):
    coords = [float(v) for v in rng.uniform(-3, 3, size=2)] + [float(rng.uniform(0.3, 0.7))]
    size = list(SIZES)[int(rng.integers(2))]
    color = list(COLORS)[int(rng.integers(len(COLORS)))]
    col, row = 240 + 60 * coords[0], 160 + 40 * coords[1]
    radius = 30 * SIZES[size]
    rgba[(rows - row) ** 2 + (cols - col) ** 2 <= radius ** 2, :3] = COLORS[color]
    objects.append({"color": color, "size": size, "rotation": float(rng.uniform(0, 360)),
                    "shape": SHAPES[int(rng.integers(3))], "3d_coords": coords,
                    "material": MATERIALS[int(rng.integers(2))],
                    "pixel_coords": [int(col), int(row), float(rng.uniform(8, 14))]})
  scene = {"split": split, "image_index": index,
           "image_filename": f"CLEVR_{split}_{index:06d}.png", "objects": objects,
           "relationships": {k: [[] for _ in objects] for k in ("right", "behind", "front",
                                                               "left")},
           "directions": {"right": [0.65, 0.76, 0.0], "behind": [-0.76, 0.65, 0.0],
                          "above": [0.0, 0.0, 1.0], "below": [-0.0, -0.0, -1.0],
                          "left": [-0.65, -0.76, -0.0], "front": [0.76, -0.65, -0.0]}}
  return scene, rgba


def main() -> None:
  root = DUMMY_DIR / "CLEVR_v1.0"
  info = {"split": "", "license": "Creative Commons Attribution (CC BY 4.0)",
          "version": "1.0", "date": "2/14/2017"}
  for split, count in NUM_IMAGES.items():
    rng = np.random.default_rng([ord(c) for c in split])
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    scenes, questions = [], []
    for index in range(count):
      scene, rgba = make_scene(split, index, rng)
      Image.fromarray(rgba, "RGBA").save(root / "images" / split / scene["image_filename"])
      scenes.append(scene)
      question = {"image_index": index, "split": split, "image_filename":
                  scene["image_filename"], "question_index": len(questions),
                  "question": "How many objects are there?", "question_family_index": 0,
                  "program": [{"inputs": [], "function": "scene", "value_inputs": []},
                              {"inputs": [0], "function": "count", "value_inputs": []}]}
      if split != "test":  # The test questions come without answers.
        question["answer"] = str(len(scene["objects"]))
      questions.append(question)
    (root / "questions").mkdir(parents=True, exist_ok=True)
    (root / "questions" / f"CLEVR_{split}_questions.json").write_text(
        json.dumps({"info": {**info, "split": split}, "questions": questions}))
    if split != "test":  # The release has no test scenes.
      (root / "scenes").mkdir(parents=True, exist_ok=True)
      (root / "scenes" / f"CLEVR_{split}_scenes.json").write_text(
          json.dumps({"info": {**info, "split": split}, "scenes": scenes}))
  size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
  print(f"{root}: {sum(NUM_IMAGES.values())} images, {size} bytes")


if __name__ == "__main__":
  main()
