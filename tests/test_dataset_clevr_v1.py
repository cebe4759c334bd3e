"""Tests of the CLEVR v1.0 builder on fake files in the release's layout."""
import json
import sys
import tempfile

from absl.testing import absltest
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from slot_ot_jax.data import input_pipeline

Builder = input_pipeline.builder_class("clevr_v1")
clevr = sys.modules[Builder.__module__]
fake = __import__("clevr_v1.make_dummy_data", fromlist=["DUMMY_DIR"])
RELEASE = fake.DUMMY_DIR / "CLEVR_v1.0"


class FullTest(tfds.testing.DatasetBuilderTestCase):
  """Train and validation come from the scene files; the test images have no scenes."""
  DATASET_CLASS = Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ["full"]
  SPLITS = {"train": fake.NUM_IMAGES["train"], "validation": fake.NUM_IMAGES["val"]}


class TfdsFakeLayoutTest(absltest.TestCase):
  """The layout of TFDS's own fake CLEVR: only the validation scenes file, and scenes without
  `image_index` / `image_filename` (TFDS's builder pairs them with the sorted images)."""

  def test_builds_with_empty_train_annotations_and_pairing_by_file_name(self):
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as manual, tempfile.TemporaryDirectory() as data_dir:
      root = clevr.epath.Path(manual) / "CLEVR_v1.0"
      val_scenes = []
      for split, count in (("train", 3), ("val", 4), ("test", 2)):
        (root / "images" / split).mkdir(parents=True)
        for index in reversed(range(count)):  # Written out of order: sorting must pair.
          scene, rgba = fake.make_scene(split, index, rng)
          Image.fromarray(rgba, "RGBA").save(root / "images" / split / scene["image_filename"])
          if split == "val":
            del scene["image_index"], scene["image_filename"]
            val_scenes.append((index, scene))
      (root / "scenes").mkdir()
      scenes = [scene for _, scene in sorted(val_scenes, key=lambda item: item[0])]
      (root / "scenes" / "CLEVR_val_scenes.json").write_text(json.dumps({"scenes": scenes}))
      builder = Builder(data_dir=data_dir)
      with self.assertLogs(level="WARNING") as logs:
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=manual))
      self.assertTrue(any("CLEVR_train_scenes.json" in line for line in logs.output))
      self.assertEqual(builder.info.splits["train"].num_examples, 3)
      self.assertEqual(builder.info.splits["validation"].num_examples, 4)
      train = list(tfds.as_numpy(builder.as_dataset(split="train")))
      self.assertEqual([int(ex["num_objects"]) for ex in train], [0, 0, 0])
      self.assertEqual([int(ex["source_index"]) for ex in train], [0, 1, 2])
      val = list(tfds.as_numpy(builder.as_dataset(split="validation")))
      self.assertEqual([int(ex["source_index"]) for ex in val], [0, 1, 2, 3])
      for ex, scene in zip(val, scenes):  # The i-th scene belongs to the i-th file name.
        self.assertEqual(int(ex["num_objects"]), len(scene["objects"]))
        np.testing.assert_allclose(ex["objects"]["3d_coords"],
                                   [o["3d_coords"] for o in scene["objects"]], rtol=1e-6)
        self.assertEqual([clevr.COLORS[i] for i in ex["objects"]["color"]],
                         [o["color"] for o in scene["objects"]])

  def test_class_orders_are_the_generators_not_tfds(self):
    # CLEVR generator (data/properties.json) orders; TFDS `clevr` orders colour and size
    # differently, so the ids are not interchangeable.
    self.assertEqual(clevr.COLORS, ("gray", "red", "blue", "green", "brown", "purple",
                                    "cyan", "yellow"))
    self.assertEqual((clevr.SIZES, clevr.MATERIALS, clevr.SHAPES),
                     (("large", "small"), ("rubber", "metal"), ("cube", "sphere", "cylinder")))


class ReaderTest(absltest.TestCase):

  def test_example_matches_files(self):
    scenes = json.loads((RELEASE / "scenes" / "CLEVR_val_scenes.json").read_text())["scenes"]
    scene = scenes[2]
    ex = clevr.read_example(clevr.epath.Path(RELEASE), "val", scene)
    rgba = np.asarray(Image.open(RELEASE / "images" / "val" / "CLEVR_val_000002.png"))
    np.testing.assert_array_equal(ex["image"], rgba[..., :3])
    self.assertEqual(int(ex["num_objects"]), len(scene["objects"]))
    self.assertEqual(int(ex["source_index"]), 2)
    np.testing.assert_allclose(ex["objects"]["3d_coords"],
                               [o["3d_coords"] for o in scene["objects"]], rtol=1e-6)
    for key, names in (("size", clevr.SIZES), ("material", clevr.MATERIALS),
                       ("shape", clevr.SHAPES), ("color", clevr.COLORS)):
      self.assertEqual([names[i] for i in ex["objects"][key]],
                       [o[key] for o in scene["objects"]])

  def test_fake_release_has_the_official_files(self):
    for split in ("train", "val", "test"):
      self.assertTrue((RELEASE / "questions" / f"CLEVR_{split}_questions.json").exists())
    self.assertFalse((RELEASE / "scenes" / "CLEVR_test_scenes.json").exists())
    scene = json.loads((RELEASE / "scenes" / "CLEVR_train_scenes.json").read_text())["scenes"][0]
    self.assertLessEqual({"3d_coords", "pixel_coords", "size", "material", "shape", "color"},
                         set(scene["objects"][0]))

  def test_missing_data_names_url_files_and_command(self):
    config = input_pipeline.get_data_config()
    config.name = "clevr_v1/full"
    with tempfile.TemporaryDirectory() as tmp:
      config.data_dir = tmp
      with self.assertRaises(input_pipeline.DatasetNotFoundError) as ctx:
        input_pipeline.get_builder(config)
    message = str(ctx.exception)
    self.assertIn(clevr.DOWNLOAD_URL, message)
    self.assertIn("CLEVR_v1.0/scenes/CLEVR_train_scenes.json", message)
    self.assertIn("python datasets/prepare.py clevr_v1/full", message)


if __name__ == "__main__":
  tfds.testing.test_main()
