"""Procedural two-frame shapes videos: objects move and new objects appear (no download).

The offline stand-in for CLEVRER-S/L (MESH paper §5.4): each example is two frames of
dSprites-like sprites (the sprites of `datasets/shapes`) on a grey background. The sprites of
the first frame move by a random displacement and turn a little; 0, 1 or 2 new sprites appear
in the second frame, 2 with probability 0.69 as in CLEVRER-L ("the total number of objects
increases by two or more ... for 68.8% of the videos"). Sprites are drawn in index order (new
ones on top); every sprite present in a frame keeps at least a quarter of its area (and 4
pixels) there. Every example is a pure function of (config seed, split, index).

Features (the two-frame schema of this project, shared with `datasets/clevrer`):
  video              uint8 [2, H, W, 3]
  segmentation       uint8 [2, H, W, 1]  0 = background, k = object k in both frames (1..n)
  num_objects        int32 []            n, distinct objects over the two frames
  frame_num_objects  int32 [2]           objects present in each frame
  objects            Sequence of n:      shape (class), color float32 [3], scale,
                                         first_frame int32 (0, or 1 for a new object),
                                         x, y float32 [2] (centre per frame; the first
                                         frame's position of a new object is where it would
                                         have been), area int32 [2] (visible pixels per frame)

Build: `python datasets/prepare.py shapes_video/32x32` (seconds); the video task builds it on
first use.
"""
from __future__ import annotations

import dataclasses
import pathlib
import sys

import numpy as np
import tensorflow_datasets as tfds

try:
  from shapes import shapes_dataset_builder as shapes
except ImportError:  # Imported from outside datasets/ (e.g. `tfds build`).
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
  from shapes import shapes_dataset_builder as shapes

_SPLITS = ("train", "validation", "test")
_MIN_VISIBLE_FRACTION = 0.25
_MIN_VISIBLE_PIXELS = 4


@dataclasses.dataclass
class ShapesVideoConfig(tfds.core.BuilderConfig):
  """Resolution, object counts, motion and seed of one variant."""
  resolution: int = 32
  min_objects: int = 1              # Sprites of the first frame: min..max.
  max_objects: int = 2
  new_object_probs: tuple[float, ...] = (0.16, 0.15, 0.69)  # P(0, 1, 2 new sprites).
  min_scale: float = 0.12           # Half extent as a fraction of the side.
  max_scale: float = 0.2
  max_shift: float = 0.2            # Largest displacement between frames (fraction of side).
  max_turn: float = 0.5             # Largest rotation between frames (radians).
  num_examples: tuple[tuple[str, int], ...] = (("train", 5000), ("validation", 320),
                                               ("test", 320))
  seed: int = 0

  @property
  def max_total_objects(self) -> int:
    return self.max_objects + len(self.new_object_probs) - 1


def _render(attrs: list[dict], frame: int, background: float, res: int):
  """Draws the sprites present in `frame` -> image float32 [res, res, 3], labels, full areas."""
  image = np.full((res, res, 3), background, np.float32)
  labels = np.zeros((res, res), np.uint8)
  full = np.zeros(len(attrs), np.int64)
  for k, a in enumerate(attrs):
    if frame < a["first_frame"]:
      continue
    mask = shapes.sprite_mask(a["shape"], a["x"][frame], a["y"][frame], a["scale"],
                              a["orientation"][frame], res)
    image[mask] = a["color"]
    labels[mask] = k + 1
    full[k] = mask.sum()
  return image, labels, full


def render_video(rng: np.random.Generator, config: ShapesVideoConfig) -> dict:
  """Draws one two-frame example; retries until every present sprite is visible enough.

  Returns:
    A feature dict in the builder's schema (numpy values).
  """
  res = config.resolution
  while True:
    n_first = int(rng.integers(config.min_objects, config.max_objects + 1))
    n_new = int(rng.choice(len(config.new_object_probs), p=config.new_object_probs))
    background = float(rng.uniform(0.0, 0.5))
    attrs = []
    for k in range(n_first + n_new):
      scale = float(rng.uniform(config.min_scale, config.max_scale))
      lo, hi = scale, 1.0 - scale
      x0, y0 = rng.uniform(lo, hi, size=2)
      if k < n_first:  # Moves by a random shift, kept inside the image.
        dx, dy = rng.uniform(-config.max_shift, config.max_shift, size=2)
        x1, y1 = np.clip(x0 + dx, lo, hi), np.clip(y0 + dy, lo, hi)
      else:
        x1, y1 = rng.uniform(lo, hi, size=2)
      angle = float(rng.uniform(0.0, 2.0 * np.pi))
      turn = float(rng.uniform(-config.max_turn, config.max_turn))
      attrs.append(dict(
          shape=int(rng.integers(len(shapes.SHAPE_NAMES))), color=shapes._hsv_color(rng),  # pylint: disable=protected-access
          scale=np.float32(scale), first_frame=np.int32(0 if k < n_first else 1),
          x=np.float32([x0, x1]), y=np.float32([y0, y1]),
          orientation=(angle, angle + turn)))
    frames, segs, areas = [], [], []
    ok = True
    for t in range(2):
      image, labels, full = _render(attrs, t, background, res)
      area = np.bincount(labels.ravel(), minlength=len(attrs) + 1)[1:]
      present = np.array([t >= a["first_frame"] for a in attrs])
      ok &= all(ar >= max(_MIN_VISIBLE_PIXELS, _MIN_VISIBLE_FRACTION * f)
                for ar, f, p in zip(area, full, present) if p)
      frames.append(np.round(image * 255.0).astype(np.uint8))
      segs.append(labels[..., None])
      areas.append(area.astype(np.int32))
    if ok:
      break
  keys = ("shape", "color", "scale", "first_frame", "x", "y")
  objects = {key: np.stack([a[key] for a in attrs]) for key in keys}
  objects["shape"] = objects["shape"].astype(np.int64)
  objects["area"] = np.stack(areas, axis=1)  # [n, 2]
  return {
      "video": np.stack(frames),
      "segmentation": np.stack(segs),
      "num_objects": np.int32(len(attrs)),
      "frame_num_objects": np.int32([n_first, n_first + n_new]),
      "objects": objects,
  }


def _config(name: str, description: str, **kwargs) -> ShapesVideoConfig:
  return ShapesVideoConfig(name=name, description=description, **kwargs)


class Builder(tfds.core.GeneratorBasedBuilder):
  """Procedural two-frame shapes videos for offline video object discovery."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      _config("32x32", "32x32 frames, 1-2 sprites then 0-2 new ones; 5000/320/320 examples.",
              resolution=32),
      # CPU-sized demonstration (scripts/video_demo.py): the same scenes at 16x16, sprites a
      # little larger relative to the frame so that each keeps enough pixels.
      _config("16x16", "16x16 frames, 1-2 sprites then 0-2 new ones; 5000/320/320 examples.",
              resolution=16, min_scale=0.15, max_scale=0.25),
      _config("tiny", "As 32x32 with 32/8/8 examples (smoke runs and tests).", resolution=32,
              num_examples=(("train", 32), ("validation", 8), ("test", 8))),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "32x32"

  def _info(self) -> tfds.core.DatasetInfo:
    res = self.builder_config.resolution
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "video": tfds.features.Video(shape=(2, res, res, 3)),
            "segmentation": tfds.features.Video(shape=(2, res, res, 1)),
            "num_objects": tfds.features.Scalar(np.int32),
            "frame_num_objects": tfds.features.Tensor(shape=(2,), dtype=np.int32),
            "objects": tfds.features.Sequence({
                "shape": tfds.features.ClassLabel(names=shapes.SHAPE_NAMES),
                "color": tfds.features.Tensor(shape=(3,), dtype=np.float32),
                "scale": tfds.features.Scalar(np.float32),
                "first_frame": tfds.features.Scalar(np.int32),
                "x": tfds.features.Tensor(shape=(2,), dtype=np.float32),
                "y": tfds.features.Tensor(shape=(2,), dtype=np.float32),
                "area": tfds.features.Tensor(shape=(2,), dtype=np.int32),
            }),
        }),
        supervised_keys=None,
        homepage="https://github.com/deepmind/dsprites-dataset",
        disable_shuffling=True,  # Examples stay in index order.
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Nothing to download.
    config = self.builder_config
    sizes = dict(config.num_examples)
    if not set(sizes) <= set(_SPLITS):
      raise ValueError(f"Unknown shapes_video splits {sorted(set(sizes) - set(_SPLITS))}; "
                       f"valid: {_SPLITS}.")
    return {name: self._generate_examples(_SPLITS.index(name), sizes[name]) for name in sizes}

  def _generate_examples(self, split_index: int, count: int):
    """(index, example); example i is a function of (seed, split, i) only."""
    config = self.builder_config
    for index in range(count):
      yield index, render_video(np.random.default_rng([config.seed, split_index, index]), config)
