"""Procedural dSprites-like object-discovery dataset: no download, deterministic from a seed.

Each image holds 1..N sprites (square, ellipse, heart) with a random colour, scale, rotation and
position on a random grey background; later sprites occlude earlier ones. Every example is a pure
function of (config seed, split, index), so a build is reproducible bit for bit.

Features (the schema every object-discovery builder of this project emits):
  image         uint8 [H, W, 3]
  segmentation  uint8 [H, W, 1]  0 = background, k = the k-th object (drawing order), 1..n
  num_objects   int32 []         n, background excluded
  objects       Sequence of n:   shape (class: square, ellipse, heart), color float32 [3] in
                                 [0, 1], x and y (centre, fraction of width/height), scale (half
                                 extent, fraction of the side), orientation (radians), area int32
                                 (visible pixels)
                 discrete-attribute configs (`properties32`) also store color_index (class
                 of PALETTE_NAMES) and size (class of SIZE_NAMES); `color`/`scale` then
                 hold the palette colour and the class's scale

Build: `tfds build datasets/shapes --config=32x32 --data_dir=DATA_DIR` (seconds); the input
pipeline also builds it on first use.
"""
from __future__ import annotations

import colorsys
import dataclasses

import numpy as np
import tensorflow_datasets as tfds

SHAPE_NAMES = ("square", "ellipse", "heart")
# Discrete attributes of the property-prediction configs (CLEVR-like classes).
PALETTE_NAMES = ("red", "green", "blue", "yellow", "magenta", "cyan")
PALETTE = ((0.9, 0.1, 0.1), (0.1, 0.8, 0.1), (0.15, 0.3, 1.0), (0.95, 0.9, 0.1),
           (0.9, 0.15, 0.9), (0.1, 0.9, 0.9))
SIZE_NAMES = ("small", "large")
_SPLITS = ("train", "validation", "test")
# Each visible object keeps at least this fraction of its full area, and this many pixels,
# so that every object counted in `num_objects` is present in `segmentation`.
_MIN_VISIBLE_FRACTION = 0.25
_MIN_VISIBLE_PIXELS = 4


@dataclasses.dataclass
class ShapesConfig(tfds.core.BuilderConfig):
  """Resolution, object counts, sizes and seed of one shapes variant."""
  resolution: int = 32
  min_objects: int = 1
  max_objects: int = 3
  min_scale: float = 0.12          # Half extent of a sprite as a fraction of the image side.
  max_scale: float = 0.22
  num_examples: tuple[tuple[str, int], ...] = (("train", 5000), ("validation", 320),
                                               ("test", 320))
  seed: int = 0
  # Discrete attributes (property prediction): draw the colour from PALETTE and the scale
  # from `scales` (one per SIZE_NAMES class) instead of the continuous ranges; also stores
  # color_index and size. False keeps the continuous attributes.
  discrete: bool = False
  scales: tuple[float, ...] = (0.12, 0.2)


def _hsv_color(rng: np.random.Generator) -> np.ndarray:
  """A saturated, bright colour, float32 [3] in [0, 1]."""
  rgb = colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.6, 1.0), rng.uniform(0.7, 1.0))
  return np.asarray(rgb, np.float32)


def sprite_mask(shape: int, x: float, y: float, scale: float, angle: float,
                resolution: int) -> np.ndarray:
  """Rasterises one sprite at pixel centres.

  Args:
    shape: index into SHAPE_NAMES.
    x, y: centre, as fractions of the width (column) and height (row).
    scale: half extent as a fraction of the side.
    angle: rotation in radians (counter-clockwise on screen).
    resolution: side of the square image.

  Returns:
    bool [resolution, resolution], True inside the sprite.
  """
  coords = (np.arange(resolution, dtype=np.float64) + 0.5) / resolution
  rows, cols = np.meshgrid(coords, coords, indexing="ij")
  dx, dy = (cols - x) / scale, (y - rows) / scale  # dy points up on screen.
  cos, sin = np.cos(angle), np.sin(angle)
  u, v = cos * dx + sin * dy, -sin * dx + cos * dy  # Sprite frame.
  if SHAPE_NAMES[shape] == "square":
    return np.maximum(np.abs(u), np.abs(v)) <= 0.8
  if SHAPE_NAMES[shape] == "ellipse":
    return (u / 1.0) ** 2 + (v / 0.5) ** 2 <= 1.0
  # Heart: the implicit curve (a^2 + b^2 - 1)^3 - a^2 b^3 <= 0, centred and scaled to ~[-1, 1].
  a, b = 1.15 * u, 1.15 * v + 0.1
  return (a * a + b * b - 1.0) ** 3 - a * a * b ** 3 <= 0.0


def render_scene(rng: np.random.Generator, config: ShapesConfig) -> dict:
  """Draws one scene; retries until every sprite stays visible enough.

  Returns:
    A feature dict in the builder's schema (numpy values).
  """
  res = config.resolution
  while True:
    n = int(rng.integers(config.min_objects, config.max_objects + 1))
    background = np.float32(rng.uniform(0.0, 0.5))
    image = np.full((res, res, 3), background, np.float32)
    labels = np.zeros((res, res), np.uint8)
    attrs, full_areas = [], []
    for k in range(1, n + 1):
      if config.discrete:
        size = int(rng.integers(len(config.scales)))
        scale = config.scales[size]
      else:
        scale = rng.uniform(config.min_scale, config.max_scale)
      attr = dict(shape=int(rng.integers(len(SHAPE_NAMES))), scale=np.float32(scale),
                  orientation=np.float32(rng.uniform(0.0, 2.0 * np.pi)),
                  x=np.float32(rng.uniform(scale, 1.0 - scale)),
                  y=np.float32(rng.uniform(scale, 1.0 - scale)))
      if config.discrete:
        attr["color_index"] = int(rng.integers(len(PALETTE)))
        attr["color"] = np.asarray(PALETTE[attr["color_index"]], np.float32)
        attr["size"] = size
      else:
        attr["color"] = _hsv_color(rng)
      mask = sprite_mask(attr["shape"], attr["x"], attr["y"], scale, attr["orientation"], res)
      image[mask] = attr["color"]
      labels[mask] = k
      attrs.append(attr)
      full_areas.append(int(mask.sum()))
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    if all(a >= max(_MIN_VISIBLE_PIXELS, _MIN_VISIBLE_FRACTION * f)
           for a, f in zip(areas, full_areas)):
      break
  objects = {key: np.stack([a[key] for a in attrs]) for key in attrs[0]}
  for key in ("shape", "color_index", "size"):
    if key in objects:
      objects[key] = objects[key].astype(np.int64)
  objects["area"] = areas.astype(np.int32)
  return {
      "image": np.round(image * 255.0).astype(np.uint8),
      "segmentation": labels[..., None],
      "num_objects": np.int32(n),
      "objects": objects,
  }


def _config(name: str, description: str, **kwargs) -> ShapesConfig:
  return ShapesConfig(name=name, description=description, **kwargs)


class Builder(tfds.core.GeneratorBasedBuilder):
  """Procedural shapes for offline object discovery."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      _config("32x32", "32x32 images, 1-3 sprites, 5000/320/320 examples.", resolution=32,
              max_objects=3, min_scale=0.12, max_scale=0.22),
      _config("64x64", "64x64 images, 1-4 sprites, 5000/320/320 examples.", resolution=64,
              max_objects=4, min_scale=0.08, max_scale=0.16),
      _config("tiny", "32x32 images, 1-3 sprites, 64/16/16 examples (smoke tests).",
              resolution=32, max_objects=3, min_scale=0.12, max_scale=0.22,
              num_examples=(("train", 64), ("validation", 16), ("test", 16))),
      # Cardinality generalisation (Krimmel et al.; configs/cardinality_shapes.py): train on
      # 16x16 with 1-3 sprites, evaluate on the same sprites with 1-6 per image (1,280 test
      # scenes, as Krimmel's CLEVR10 evaluation).
      _config("16x16", "16x16 images, 1-3 sprites, 5000/320/320 examples.", resolution=16,
              max_objects=3, min_scale=0.12, max_scale=0.22),
      _config("16x16_6", "16x16 images, 1-6 sprites, 320/320/1280 examples.", resolution=16,
              max_objects=6, min_scale=0.12, max_scale=0.22,
              num_examples=(("train", 320), ("validation", 320), ("test", 1280))),
      _config("properties32", "32x32 images, 1-4 sprites with discrete colour (6) and size "
              "(2), for property prediction; 5000/320/320 examples.", resolution=32,
              max_objects=4, discrete=True, scales=(0.12, 0.2)),
      _config("properties_tiny", "As properties32 with 64/16/16 examples (smoke tests).",
              resolution=32, max_objects=4, discrete=True, scales=(0.12, 0.2),
              num_examples=(("train", 64), ("validation", 16), ("test", 16))),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "32x32"

  def _info(self) -> tfds.core.DatasetInfo:
    res = self.builder_config.resolution
    discrete = {}
    if self.builder_config.discrete:
      discrete = {"color_index": tfds.features.ClassLabel(names=PALETTE_NAMES),
                  "size": tfds.features.ClassLabel(names=SIZE_NAMES)}
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(res, res, 3)),
            "segmentation": tfds.features.Image(shape=(res, res, 1)),
            "num_objects": tfds.features.Scalar(np.int32),
            "objects": tfds.features.Sequence({
                "shape": tfds.features.ClassLabel(names=SHAPE_NAMES),
                "color": tfds.features.Tensor(shape=(3,), dtype=np.float32),
                "x": tfds.features.Scalar(np.float32),
                "y": tfds.features.Scalar(np.float32),
                "scale": tfds.features.Scalar(np.float32),
                "orientation": tfds.features.Scalar(np.float32),
                "area": tfds.features.Scalar(np.int32),
                **discrete,
            }),
        }),
        supervised_keys=None,
        homepage="https://github.com/deepmind/dsprites-dataset",
        disable_shuffling=True,  # Examples stay in index order.
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Nothing to download.
    sizes = dict(self.builder_config.num_examples)
    unknown = set(sizes) - set(_SPLITS)
    if unknown:
      raise ValueError(f"Unknown shapes splits {sorted(unknown)}; valid: {_SPLITS}.")
    return {name: self._generate_examples(_SPLITS.index(name), size)
            for name, size in sizes.items()}

  def _generate_examples(self, split_index: int, num_examples: int):
    config = self.builder_config
    for index in range(num_examples):
      rng = np.random.default_rng([config.seed, split_index, index])
      yield index, render_scene(rng, config)
