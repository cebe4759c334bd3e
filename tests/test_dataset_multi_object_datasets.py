"""Tests of the Multi-Object Datasets builder on fake files in the original format."""
import gzip
import shutil
import sys
import tempfile

from absl.testing import absltest
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from slot_ot_jax.data import input_pipeline

Builder = input_pipeline.builder_class("multi_object_datasets")
mod = sys.modules[Builder.__module__]
fake = __import__("multi_object_datasets.make_dummy_data", fromlist=["FAKE_CONFIGS"])
formats = mod.formats
DUMMY = fake.DUMMY_DIR


def _harness(config_name):
  return type(f"Harness_{config_name}", (tfds.testing.DatasetBuilderTestCase,), {
      "DATASET_CLASS": Builder,
      "BUILDER_CONFIG_NAMES_TO_TEST": [fake.FAKE_CONFIGS[config_name]],
      "SPLITS": fake.FAKE_SPLIT_SIZES[config_name],
      "__module__": __name__,
  })


# One TFDS harness per config: each reads its own fake files with the config's filter.
for _name in fake.FAKE_CONFIGS:
  globals()[f"Harness_{_name}"] = _harness(_name)
del _name


def _raw_records(key):
  """Records of a fake file decoded with plain protobuf and numpy (no TF parsing)."""
  fmt = formats.FORMATS[key]
  path = DUMMY / fmt.folder / fmt.filename
  out = []
  for record in tf.data.TFRecordDataset(str(path), compression_type="GZIP"):
    feats = tf.train.Example.FromString(record.numpy()).features.feature
    out.append({k: (np.frombuffer(b"".join(v.bytes_list.value), np.uint8)
                    if v.bytes_list.value else np.asarray(v.float_list.value, np.float32))
                for k, v in feats.items()})
  return fmt, out


def _build(config, data_dir, manual_dir=DUMMY):
  builder = Builder(config=config, data_dir=data_dir)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(manual_dir), compute_stats=tfds.download.ComputeStatsMode.SKIP))
  return builder


class LayoutTest(absltest.TestCase):
  """The fake files have the layout of the DeepMind readers, and the builder decodes it."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    cls.clevr6 = _build(fake.FAKE_CONFIGS["clevr6"], cls.tmp)
    cls.dsprites = _build(fake.FAKE_CONFIGS["multi_dsprites_colored_on_grayscale"], cls.tmp)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  def test_files_are_gzip_with_one_byte_per_element(self):
    for key, fmt in formats.FORMATS.items():
      path = DUMMY / fmt.folder / fmt.filename
      with gzip.open(path, "rb") as f:
        f.read(16)  # Raises if the file is not GZIP.
      _, records = _raw_records(key)
      example = tf.train.Example.FromString(
          next(iter(tf.data.TFRecordDataset(str(path), compression_type="GZIP"))).numpy())
      image = example.features.feature["image"].bytes_list.value
      self.assertEqual(len(image), fmt.height * fmt.width * fmt.channels, key)
      self.assertTrue(all(len(b) == 1 for b in image[:100]), key)
      self.assertEqual(records[0]["mask"].size, fmt.entities * fmt.height * fmt.width, key)
      self.assertTrue(set(np.unique(records[0]["mask"])) <= {0, 255}, key)

  def test_clevr6_off_by_one(self):
    # Visible entities in the raw file count the background entity 0.
    _, records = _raw_records("clevr_with_masks")
    entities = [int(r["visibility"].sum()) for r in records]
    self.assertEqual(entities, [n + 1 for n in fake.CLEVR_OBJECTS])
    train = list(tfds.as_numpy(self.clevr6.as_dataset(split="train")))
    kept = [int(ex["source_index"]) for ex in train]
    # Records 0-5: keep those with <= 7 visible entities, i.e. <= 6 objects.
    self.assertEqual(kept, [i for i in range(6) if entities[i] <= 7])
    self.assertIn(2, kept)      # 6 objects, 7 entities: CLEVR6.
    self.assertNotIn(1, kept)   # 7 objects, 8 entities: not CLEVR6.
    self.assertEqual([int(ex["num_objects"]) for ex in train],
                     [fake.CLEVR_OBJECTS[i] for i in kept])
    test = [int(ex["source_index"]) for ex in tfds.as_numpy(self.clevr6.as_dataset(split="test"))]
    self.assertEqual(test, [6, 8])  # The first two qualifying records from 6 on (7 has 7).

  def _check_segmentation(self, builder, key):
    fmt, records = _raw_records(key)
    for ex in tfds.as_numpy(builder.as_dataset(split="train")):
      raw = records[int(ex["source_index"])]
      mask_shape = ((fmt.height, fmt.width, fmt.entities) if fmt.mask_entity_last
                    else (fmt.entities, fmt.height, fmt.width))
      masks = raw["mask"].reshape(mask_shape)
      if fmt.mask_entity_last:
        masks = np.moveaxis(masks, -1, 0)
      visible = np.flatnonzero(raw["visibility"][1:] > 0) + 1
      self.assertEqual(int(ex["num_objects"]), len(visible))
      for label, entity in enumerate(visible, start=1):
        np.testing.assert_array_equal(ex["segmentation"][..., 0] == label, masks[entity] == 255)
      np.testing.assert_array_equal(ex["segmentation"][..., 0] == 0, masks[0] == 255)
      image = raw["image"].reshape(fmt.height, fmt.width, fmt.channels)
      np.testing.assert_array_equal(ex["image"], np.broadcast_to(image, ex["image"].shape))
      x = raw["x"].reshape(fmt.entities)
      np.testing.assert_allclose(ex["objects"]["x"], x[visible])

  def test_segmentation_entity_first_layout(self):
    self._check_segmentation(self.clevr6, "clevr_with_masks")

  def test_segmentation_entity_last_layout(self):
    self._check_segmentation(self.dsprites, "multi_dsprites_colored_on_grayscale")

  def test_missing_file_error_names_url_files_and_command(self):
    with tempfile.TemporaryDirectory() as empty:
      with self.assertRaises(FileNotFoundError) as cm:
        mod.locate_files(empty, Builder.builder_configs["clevr6"])
    message = str(cm.exception)
    self.assertIn("https://storage.googleapis.com/multi-object-datasets/clevr_with_masks/"
                  "clevr_with_masks_train.tfrecords", message)
    self.assertIn("clevr_with_masks/clevr_with_masks_train.tfrecords", message)
    self.assertIn("python datasets/prepare.py multi_object_datasets/clevr6", message)

  def test_corrupt_record_names_the_file(self):
    fmt = formats.FORMATS["tetrominoes"]
    data = (DUMMY / fmt.folder / fmt.filename).read_bytes()
    with tempfile.TemporaryDirectory() as manual, tempfile.TemporaryDirectory() as data_dir:
      path = f"{manual}/{fmt.filename}"
      with open(path, "wb") as f:
        f.write(data[: len(data) // 2])  # Truncated gzip stream.
      with self.assertRaisesRegex(Exception, "tetrominoes_train.tfrecords"):
        _build(fake.FAKE_CONFIGS["tetrominoes"], data_dir, manual)

  def test_paper_split_ranges(self):
    ranges = {c.name: {s.name: (s.start, s.stop, s.limit) for s in c.splits}
              for c in Builder.BUILDER_CONFIGS}
    mesh = {"train": (0, 60_000, None), "validation": (60_000, 60_320, None),
            "test": (60_320, 63_200, None)}
    for variant in ("binarized", "colored_on_grayscale", "colored_on_colored"):
      self.assertEqual(ranges[f"multi_dsprites_{variant}"], mesh)
      self.assertEqual(Builder.builder_configs[f"multi_dsprites_{variant}"].max_objects, 5)
    self.assertEqual(ranges["tetrominoes"], {"train": (0, 60_000, None),
                                             "test": (60_000, 60_320, None)})
    for name in ("clevr6", "clevr10"):
      self.assertEqual(ranges[name], {"train": (0, 70_000, None), "test": (70_000, None, 320)})
    self.assertEqual(Builder.builder_configs["clevr6"].max_objects, 6)
    self.assertIsNone(Builder.builder_configs["clevr10"].max_objects)
    # The fake configs read the same sources with the same filters, on smaller ranges.
    for name, config in fake.FAKE_CONFIGS.items():
      real = Builder.builder_configs[name]
      self.assertEqual([s.source for s in config.splits], [s.source for s in real.splits])
      self.assertEqual([s.name for s in config.splits], [s.name for s in real.splits])
      self.assertEqual(config.max_objects, real.max_objects)

  def test_formats_match_reference_readers(self):
    # Image sizes and entity counts of the DeepMind reader modules.
    expected = {"multi_dsprites_binarized": (64, 64, 1, 4),
                "multi_dsprites_colored_on_grayscale": (64, 64, 3, 6),
                "multi_dsprites_colored_on_colored": (64, 64, 3, 5),
                "tetrominoes": (35, 35, 3, 4), "clevr_with_masks": (240, 320, 3, 11),
                "objects_room_train": (64, 64, 3, 7), "objects_room_six_objects": (64, 64, 3, 10),
                "objects_room_empty_room": (64, 64, 3, 4),
                "objects_room_identical_color": (64, 64, 3, 10)}
    for key, dims in expected.items():
      fmt = formats.FORMATS[key]
      self.assertEqual((fmt.height, fmt.width, fmt.channels, fmt.entities), dims, key)
      self.assertEqual(fmt.mask_entity_last, key.startswith("multi_dsprites"), key)


if __name__ == "__main__":
  absltest.main()
