"""Tests of the ClevrTex builder on fake files in the release's layout."""
import json
import shutil
import sys
import tempfile

from absl.testing import absltest
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from slot_ot_jax.data import input_pipeline

Builder = input_pipeline.builder_class("clevrtex")
clevrtex = sys.modules[Builder.__module__]
fake = __import__("clevrtex.make_dummy_data", fromlist=["DUMMY_DIR"])
DUMMY = fake.DUMMY_DIR


class FullTest(tfds.testing.DatasetBuilderTestCase):
  """Official fractional splits of 10 fake images: test 0, validation 1, train 2-9."""
  DATASET_CLASS = Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ["full"]
  SPLITS = {"test": 1, "validation": 1, "train": 8}


class CamoTest(FullTest):
  BUILDER_CONFIG_NAMES_TO_TEST = ["camo"]


class OutdTest(tfds.testing.DatasetBuilderTestCase):
  DATASET_CLASS = Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ["outd"]
  SPLITS = {"test": 3}


class BackgroundVariantsTest(absltest.TestCase):
  """pbg, vbg and grassbg: official splits over fake files written in the release layout."""

  def test_variants_build_with_official_splits(self):
    self.assertLessEqual({"full", "camo", "outd", "pbg", "vbg", "grassbg"},
                         {c.name for c in Builder.BUILDER_CONFIGS})
    with tempfile.TemporaryDirectory() as manual, tempfile.TemporaryDirectory() as data_dir:
      for variant in ("pbg", "vbg", "grassbg"):
        config = Builder.builder_configs[variant]
        self.assertEqual(config.archives, (f"clevrtex_{variant}.tar.gz",))
        self.assertEqual(config.splits, clevrtex.OFFICIAL_SPLITS)
        self.assertIn(f"clevrtex_{variant}.tar.gz", Builder.MANUAL_DOWNLOAD_INSTRUCTIONS)
        for index in range(10):
          fake.write_example(fake.pathlib.Path(manual) / f"clevrtex_{variant}", variant, index)
        builder = Builder(config=variant, data_dir=data_dir)
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
            manual_dir=manual))
        sizes = {k: v.num_examples for k, v in builder.info.splits.items()}
        self.assertEqual(sizes, {"test": 1, "validation": 1, "train": 8})
        ex = next(iter(tfds.as_numpy(builder.as_dataset(split="validation"))))
        self.assertEqual(int(ex["source_index"]), 1)

  def test_mesh_configs_validate_on_images_5000_to_5319(self):
    from configs import clevrtex as clevrtex_config  # pylint: disable=g-import-not-at-top
    from configs import clevrtex_mesh  # pylint: disable=g-import-not-at-top
    for module in (clevrtex_config, clevrtex_mesh):
      config = module.get_config()
      self.assertEqual(config.data.eval_split, "validation[:320]")
      self.assertEqual(config.evaluation.test_split, "test")
      self.assertEqual(module.get_config("runlocal=1").data.eval_split, "")
    # validation starts at 5000 of the 50,000 full images: [:320] is 5000-5319.
    lo = int(dict((n, a) for n, a, _ in clevrtex.OFFICIAL_SPLITS)["validation"] * 50_000)
    self.assertEqual((lo, lo + 320), (5000, 5320))

  def test_missing_variant_names_its_archive(self):
    with tempfile.TemporaryDirectory() as manual:
      with self.assertRaisesRegex(FileNotFoundError, "clevrtex_grassbg.tar.gz"):
        clevrtex.locate_files(manual, Builder.builder_configs["grassbg"])


class ReaderTest(absltest.TestCase):

  def test_example_matches_files(self):
    path = DUMMY / "clevrtex_full" / "0" / "CLEVRTEX_full_000004.png"
    ex = clevrtex.read_example(clevrtex.epath.Path(path))
    rgba = np.asarray(Image.open(path))
    labels = np.asarray(Image.open(str(path).replace(".png", "_flat.png")))
    meta = json.loads(path.with_suffix(".json").read_text())
    np.testing.assert_array_equal(ex["image"], rgba[..., :3])
    np.testing.assert_array_equal(ex["segmentation"][..., 0], labels)
    self.assertEqual(ex["segmentation"].shape, (240, 320, 1))
    self.assertEqual(int(ex["num_objects"]), len(meta["objects"]))
    self.assertEqual(set(np.unique(labels)), set(range(len(meta["objects"]) + 1)))
    self.assertEqual(ex["objects"]["shape"], [o["shape"] for o in meta["objects"]])
    np.testing.assert_allclose(ex["objects"]["coords_3d"],
                               [o["3d_coords"] for o in meta["objects"]], rtol=1e-6)
    self.assertEqual(int(ex["source_index"]), 4)

  def test_official_split_arithmetic(self):
    # 50,000 images of the full set: test 0-4999, validation 5000-9999, train 10000-49999.
    n = 50_000
    bounds = {name: (int(lo * n), int(hi * n)) for name, lo, hi in clevrtex.OFFICIAL_SPLITS}
    self.assertEqual(bounds, {"test": (0, 5000), "validation": (5000, 10000),
                              "train": (10000, 50000)})

  def test_official_crop(self):
    # 0.8 of the short side, centred, as the official loader: rows 24:216, cols 64:256.
    size = int(0.8 * 240)
    box = ((240 - size) // 2, (240 + size) // 2, (320 - size) // 2, (320 + size) // 2)
    self.assertEqual(box, input_pipeline.PRESETS["clevrtex/full"].crop)

  def test_every_builder_config_has_a_pipeline_preset(self):
    # A builder variant without a preset could be prepared but not trained on.
    for name, config in Builder.builder_configs.items():
      preset = input_pipeline.PRESETS[f"clevrtex/{name}"]
      self.assertEqual(preset.crop, input_pipeline.PRESETS["clevrtex/full"].crop, name)
      split_names = [split for split, _, _ in config.splits]
      self.assertIn(preset.eval_split, split_names, name)

  def test_missing_folder_error_names_url_files_and_command(self):
    with tempfile.TemporaryDirectory() as empty:
      with self.assertRaises(FileNotFoundError) as cm:
        clevrtex.locate_files(empty, Builder.builder_configs["full"])
    message = str(cm.exception)
    self.assertIn("https://www.robots.ox.ac.uk/~vgg/data/clevrtex/", message)
    self.assertIn("clevrtex_full_part1.tar.gz", message)
    self.assertIn("clevrtex_full_part5.tar.gz", message)
    self.assertIn("CLEVRTEX_full_<index>.png", message)
    self.assertIn("python datasets/prepare.py clevrtex/full", message)

  def test_missing_mask_is_reported(self):
    with tempfile.TemporaryDirectory() as manual:
      shutil.copytree(DUMMY / "clevrtex_outd", f"{manual}/clevrtex_outd")
      (clevrtex.epath.Path(manual) / "clevrtex_outd/0/CLEVRTEX_outd_000001_flat.png").unlink()
      with self.assertRaisesRegex(FileNotFoundError, "CLEVRTEX_outd_000001.png"):
        clevrtex.locate_files(manual, Builder.builder_configs["outd"])

  def test_corrupt_file_is_named(self):
    with tempfile.TemporaryDirectory() as manual, tempfile.TemporaryDirectory() as data_dir:
      shutil.copytree(DUMMY / "clevrtex_outd", f"{manual}/clevrtex_outd")
      bad = clevrtex.epath.Path(manual) / "clevrtex_outd/0/CLEVRTEX_outd_000002_flat.png"
      bad.write_bytes(bad.read_bytes()[:40])
      builder = Builder(config="outd", data_dir=data_dir)
      with self.assertRaisesRegex(Exception, "CLEVRTEX_outd_000002_flat.png"):
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=manual))


if __name__ == "__main__":
  absltest.main()
