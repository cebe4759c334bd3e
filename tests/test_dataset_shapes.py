"""Tests of the procedural shapes builder (datasets/shapes)."""
import sys

from absl.testing import absltest
import numpy as np
import tensorflow_datasets as tfds

from slot_ot_jax.data import input_pipeline

Builder = input_pipeline.builder_class("shapes")
shapes = sys.modules[Builder.__module__]


class ShapesBuilderTest(tfds.testing.DatasetBuilderTestCase):
  """The TFDS harness on the `tiny` config (the others differ only in sizes)."""
  DATASET_CLASS = Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ["tiny"]
  SPLITS = {"train": 64, "validation": 16, "test": 16}


class ShapesRenderTest(absltest.TestCase):

  def _scenes(self, config_name, split=0, count=40):
    config = Builder.builder_configs[config_name]
    return [shapes.render_scene(np.random.default_rng([config.seed, split, i]), config)
            for i in range(count)]

  def test_deterministic_from_seed(self):
    a, b = self._scenes("64x64", count=3), self._scenes("64x64", count=3)
    for x, y in zip(a, b):
      np.testing.assert_array_equal(x["image"], y["image"])
      np.testing.assert_array_equal(x["segmentation"], y["segmentation"])

  def test_splits_differ(self):
    train, val = self._scenes("32x32", 0, 10), self._scenes("32x32", 1, 10)
    for x, y in zip(train, val):
      self.assertFalse(np.array_equal(x["image"], y["image"]))

  def test_schema_and_every_object_visible(self):
    for name in ("32x32", "64x64"):
      config = Builder.builder_configs[name]
      counts = []
      for ex in self._scenes(name):
        n = int(ex["num_objects"])
        counts.append(n)
        self.assertEqual(ex["image"].shape, (config.resolution, config.resolution, 3))
        self.assertEqual(ex["image"].dtype, np.uint8)
        self.assertEqual(ex["segmentation"].shape, (config.resolution, config.resolution, 1))
        # Labels are exactly 0..n: the background and every counted object.
        self.assertEqual(set(np.unique(ex["segmentation"])) - {0}, set(range(1, n + 1)))
        for key, value in ex["objects"].items():
          self.assertLen(value, n, key)
        areas = np.bincount(ex["segmentation"].ravel(), minlength=n + 1)[1:]
        np.testing.assert_array_equal(areas, ex["objects"]["area"])
        # Each object's pixels carry its colour.
        for k in range(n):
          colour = np.round(ex["objects"]["color"][k] * 255).astype(np.uint8)
          pixels = ex["image"][ex["segmentation"][..., 0] == k + 1]
          np.testing.assert_array_equal(pixels, np.broadcast_to(colour, pixels.shape))
      self.assertEqual(min(counts), config.min_objects)
      self.assertEqual(max(counts), config.max_objects)

  def test_all_shapes_drawn(self):
    seen = set()
    for ex in self._scenes("32x32", count=30):
      seen.update(int(s) for s in ex["objects"]["shape"])
    self.assertEqual(seen, set(range(len(shapes.SHAPE_NAMES))))

  def test_sprite_masks(self):
    # A square of half extent 0.25 * 0.8 at the centre covers a 0.4 x 0.4 box.
    mask = shapes.sprite_mask(0, 0.5, 0.5, 0.25, 0.0, 40)
    self.assertEqual(int(mask.sum()), 16 * 16)
    # Rotating the ellipse by 90 degrees transposes it.
    ellipse = shapes.sprite_mask(1, 0.5, 0.5, 0.3, 0.0, 41)
    rotated = shapes.sprite_mask(1, 0.5, 0.5, 0.3, np.pi / 2, 41)
    np.testing.assert_array_equal(ellipse, rotated.T)
    # The heart is symmetric left-right and not up-down.
    heart = shapes.sprite_mask(2, 0.5, 0.5, 0.3, 0.0, 41)
    np.testing.assert_array_equal(heart, heart[:, ::-1])
    self.assertFalse(np.array_equal(heart, heart[::-1]))


if __name__ == "__main__":
  absltest.main()
